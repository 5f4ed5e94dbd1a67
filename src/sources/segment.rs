//! Segment Webhooks destinations (Classic and Actions): `X-Signature` HMAC-SHA1 and the Segment spec's events.
//!
//! Signature (PROTOCOLS.md §1.3): lowercase hex HMAC-SHA1 of the raw body. For an Actions batch (a JSON array)
//! Segment signs only the raw bytes of the first element; a signature over the whole array is accepted too.
//! Only the first element of a batch is covered by the signature: that is Segment's scheme, not ours to fix.

use serde_json::{value::RawValue, Map, Value};

use super::{
    content_id, id_string,
    signature::{read_hex_header, sha1_matches, HeaderSignature},
    who, Event, Refusal, RejectReason, Source, Unusable,
};
use crate::config::Secret;

/// The header Segment puts its signature in.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// Whether a verified body carried a signature, or was let through unsigned by `dev` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticity {
    Signed,
    UnsignedDevMode,
}

/// A body whose signature has been checked: only [`verify`] makes one.
#[derive(Debug)]
pub struct Verified<'a> {
    elements: Vec<&'a RawValue>,
    /// A JSON array (an Actions batch, even of one event), not a single event.
    batch: bool,
    pub authenticity: Authenticity,
}

impl Verified<'_> {
    /// Events in the body: 1, or the length of a batch.
    pub fn event_count(&self) -> usize {
        self.elements.len()
    }
}

/// Checks the signature of a Segment request on its raw bytes, before anything is read from it.
///
/// `unsigned_ok` is `dev` mode with no secret set: the body is accepted without a signature.
pub fn verify<'a>(
    headers: &axum::http::HeaderMap,
    body: &'a [u8],
    secrets: &[Secret],
    unsigned_ok: bool,
) -> Result<Verified<'a>, RejectReason> {
    let header = read_hex_header(headers, SIGNATURE_HEADER, 20);
    let is_batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_batch {
        let authenticity = check(&header, secrets, unsigned_ok, |d| {
            sha1_matches(secrets, body, d)
        })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(RejectReason::BadRequest(
                "empty body: send a Segment event as JSON".into(),
            ));
        }
        let raw: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
        return Ok(Verified {
            elements: vec![raw],
            batch: false,
            authenticity,
        });
    }
    // A batch has to be split before its first element can be checked: this reads the array's structure only.
    // An array that cannot be split can still carry a signature over the whole body; without one it is 401.
    let elements: Vec<&RawValue> = match serde_json::from_slice(body) {
        Ok(elements) => elements,
        Err(e) => {
            let first = first_element(body);
            check(&header, secrets, unsigned_ok, |d| {
                first.is_some_and(|f| sha1_matches(secrets, f.get().as_bytes(), d))
                    || sha1_matches(secrets, body, d)
            })?;
            return Err(malformed(e));
        }
    };
    let authenticity = check(&header, secrets, unsigned_ok, |d| {
        elements
            .first()
            .is_some_and(|first| sha1_matches(secrets, first.get().as_bytes(), d))
            || sha1_matches(secrets, body, d)
    })?;
    if elements.is_empty() {
        return Err(RejectReason::BadRequest(
            "empty batch: the array holds no events".into(),
        ));
    }
    Ok(Verified {
        elements,
        batch: true,
        authenticity,
    })
}

/// The raw first element of a JSON array whose later part may be broken: what Segment signed.
fn first_element(body: &[u8]) -> Option<&RawValue> {
    struct First<'a, 'de>(&'a mut Option<&'de RawValue>);
    impl<'de> serde::de::Visitor<'de> for First<'_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            *self.0 = seq.next_element()?;
            Err(serde::de::Error::custom("only the first element is read"))
        }
    }
    let mut first = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = serde::Deserializer::deserialize_seq(&mut de, First(&mut first));
    first
}

fn check(
    header: &HeaderSignature,
    secrets: &[Secret],
    unsigned_ok: bool,
    matches: impl FnOnce(&[u8]) -> bool,
) -> Result<Authenticity, RejectReason> {
    if secrets.is_empty() {
        return if unsigned_ok {
            Ok(Authenticity::UnsignedDevMode)
        } else {
            Err(RejectReason::Unauthorized("no secret configured"))
        };
    }
    match header {
        HeaderSignature::Missing => Err(RejectReason::Unauthorized("missing X-Signature")),
        HeaderSignature::Malformed => Err(RejectReason::Unauthorized("malformed X-Signature")),
        HeaderSignature::Digest(d) if matches(d) => Ok(Authenticity::Signed),
        HeaderSignature::Digest(_) => Err(RejectReason::Unauthorized("X-Signature mismatch")),
    }
}

pub(crate) fn malformed(e: serde_json::Error) -> RejectReason {
    RejectReason::BadRequest(format!("malformed JSON: {e}"))
}

/// What a verified body holds: its events, in order, and the elements of a batch that are not events.
#[derive(Debug)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub unusable: Vec<Unusable>,
}

/// Turns a verified body into events, in order. A single event that is not a Segment event is refused (400,
/// with the reason). In a batch, each element that is not a Segment event is set aside with its reason and
/// the others go on: Segment never re-sends a batch refused with a 4xx, so refusing it whole would lose
/// every good event in it. An array none of whose elements is a JSON object is not a batch at all (400).
pub fn parse(verified: &Verified<'_>) -> Result<Parsed, RejectReason> {
    if !verified.batch {
        let event = verified
            .elements
            .iter()
            .map(|raw| read_event(raw).map_err(RejectReason::BadRequest))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Parsed {
            events: event,
            unusable: Vec::new(),
        });
    }
    let mut parsed = Parsed {
        events: Vec::with_capacity(verified.elements.len()),
        unusable: Vec::new(),
    };
    for (i, raw) in verified.elements.iter().enumerate() {
        match read_event(raw) {
            Ok(event) => parsed.events.push(event),
            Err(why) => parsed
                .unusable
                .push(unusable(raw, format!("batch element {i}: {why}"))),
        }
    }
    let objects = verified
        .elements
        .iter()
        .filter(|raw| raw.get().starts_with('{'))
        .count();
    if objects == 0 {
        return Err(RejectReason::BadRequest(format!(
            "not a Segment batch: none of the array's {} elements is a JSON object (an event)",
            verified.elements.len()
        )));
    }
    Ok(parsed)
}

/// One event, or why it is not a Segment event. A lone surrogate escape (`"\ud83d"`, as Node's
/// `JSON.stringify` writes it) is read as U+FFFD: the event's `raw` is the text that was read.
fn read_event(raw: &RawValue) -> Result<Event, String> {
    let readable = super::replace_lone_surrogates(raw.get().as_bytes());
    let text = std::str::from_utf8(&readable).map_err(|e| format!("malformed JSON: {e}"))?;
    if let Some(event) = from_head(text) {
        return Ok(event);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| malformed(e).to_string())?;
    let Value::Object(obj) = value else {
        return Err("not a Segment event: expected a JSON object".into());
    };
    to_event(obj, text.as_bytes())
}

/// A batch element that is not an event, with what can be read of it for the console.
fn unusable(raw: &RawValue, why: String) -> Unusable {
    let obj = match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(obj)) => obj,
        _ => Map::new(),
    };
    let field = |key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    Unusable {
        source: Source::Segment,
        id: content_id(raw.get().as_bytes()),
        name: field("event").or(field("type")).unwrap_or("-").to_string(),
        user_id: field("userId").or(field("anonymousId")).map(str::to_string),
        who: who_of(field("userId"), field("anonymousId")),
        raw: raw.get().to_string(),
        refusal: Refusal::Refused(why),
    }
}

/// The string at `key`, `None` when absent or null, an error naming the field when it has another type.
fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn opt_obj<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(format!("`{key}` must be an object")),
    }
}

fn opt_id(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) | Some(Value::String(_)) | Some(Value::Number(_)) => {
            Ok(id_string(obj.get(key)))
        }
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

/// The Segment spec types. Anything else is still accepted (and matched by its `type`), never refused.
pub const SPEC_TYPES: [&str; 7] = [
    "track", "identify", "page", "screen", "group", "alias", "delete",
];

fn to_event(obj: Map<String, Value>, raw: &[u8]) -> Result<Event, String> {
    let event_name = opt_str(&obj, "event")?;
    let kind = match (opt_str(&obj, "type")?, event_name) {
        (Some(t), _) => t.to_string(),
        // An Actions mapping may drop `type`; an `event` name still makes it a track call.
        (None, Some(_)) => "track".to_string(),
        (None, None) => return Err("not a Segment event: it has neither `type` nor `event`".into()),
    };
    let name = match (kind.as_str(), event_name) {
        (_, Some(e)) => e.to_string(),
        ("track", None) => return Err("a track event needs an `event` name".into()),
        (other, None) => other.to_string(),
    };
    let message_id = opt_str(&obj, "messageId")?.filter(|s| !s.is_empty());
    let properties = opt_obj(&obj, "properties")?.cloned().unwrap_or_default();
    let traits = opt_obj(&obj, "traits")?.cloned().unwrap_or_default();
    let context = opt_obj(&obj, "context")?.cloned().unwrap_or_default();
    let context_traits = match context.get("traits") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("`context.traits` must be an object".into()),
    };
    // The classic Alias doc example spells these "User ID" / "Previous ID" (a doc bug); read both.
    let user_id = match opt_id(&obj, "userId")? {
        Some(id) => Some(id),
        None => opt_id(&obj, "User ID")?,
    };
    let anonymous_id = opt_id(&obj, "anonymousId")?;
    let anonymous_id_shown = anonymous_id.clone();
    for key in ["timestamp", "receivedAt", "sentAt", "originalTimestamp"] {
        opt_str(&obj, key)?;
    }

    // Like the seed: event properties, then traits (context.traits, then top-level traits) on top, so a
    // template can say `{{ plan }}`; the named keys below always win over a property of the same name.
    let mut traits_merged = context_traits;
    traits_merged.extend(traits);
    let mut ctx = properties.clone();
    ctx.extend(traits_merged.clone());
    let who = user_id.clone().or_else(|| anonymous_id.clone());
    let reserved: [(&str, Value); 13] = [
        ("provider", Value::from("segment")),
        ("type", Value::from(kind.clone())),
        ("event", Value::from(name.clone())),
        (
            "user_id",
            Value::from(who.clone().unwrap_or_else(|| "unknown".into())),
        ),
        (
            "anonymous_id",
            anonymous_id.map(Value::from).unwrap_or(Value::Null),
        ),
        (
            "message_id",
            message_id.map(Value::from).unwrap_or(Value::Null),
        ),
        (
            "timestamp",
            obj.get("timestamp").cloned().unwrap_or(Value::Null),
        ),
        (
            "received_at",
            obj.get("receivedAt").cloned().unwrap_or(Value::Null),
        ),
        ("sent_at", obj.get("sentAt").cloned().unwrap_or(Value::Null)),
        ("properties", Value::Object(properties)),
        ("traits", Value::Object(traits_merged)),
        ("context", Value::Object(context)),
        ("payload", Value::Null),
    ];
    for (k, v) in reserved {
        ctx.insert(k.to_string(), v);
    }
    let id = message_id
        .map(str::to_string)
        .unwrap_or_else(|| content_id(raw));
    ctx.insert("payload".into(), Value::Object(obj));
    Ok(Event {
        source: Source::Segment,
        who: who_of(user_id.as_deref(), anonymous_id_shown.as_deref()),
        id,
        name,
        kind,
        user_id: who,
        context: ctx.into(),
        raw: String::from_utf8_lossy(raw).into_owned(),
    })
}

/// Whom a Segment event is about, for its log lines.
fn who_of(user_id: Option<&str>, anonymous_id: Option<&str>) -> String {
    who(&[("userId", user_id), ("anonymousId", anonymous_id)])
}

/// The template context of an event that [`parse`] accepted from its head: the whole event read now.
pub(crate) fn full_context(raw: &str) -> Map<String, Value> {
    match serde_json::from_str(raw) {
        Ok(Value::Object(obj)) => to_event(obj, raw.as_bytes())
            .ok()
            .and_then(|e| e.context.into_inner())
            .unwrap_or_default(),
        _ => Map::new(),
    }
}

/// The fields of a Segment event that dedupe and trigger matching need, and those whose type [`to_event`]
/// checks, each left unread ([`RawValue`]): most of an event (its `context`, `properties`, `traits`) is
/// skipped over, not built.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<&'a RawValue>,
    #[serde(rename = "userId", borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "User ID", borrow, default)]
    user_id_doc: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", borrow, default)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "receivedAt", borrow, default)]
    received_at: Option<&'a RawValue>,
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "originalTimestamp", borrow, default)]
    original_timestamp: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct ContextHead<'a> {
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
}

/// Whether valid JSON text (a [`RawValue`]) also reads as a [`Value`]: skipping over a value, as
/// `RawValue` does, lets through two things a `Value` refuses, numbers out of `f64`'s range (`1e400`) and
/// unpaired UTF-16 surrogates in `\u` escapes (and it has no nesting limit). Those go the slow way, which refuses them with a reason.
fn reads_as_value(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    // serde_json's `Value` stops at 128 levels of nesting; anything near that goes the slow way.
    let mut depth = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > 100 {
                    return false;
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => {
                i += 1;
                // A high surrogate waiting for its low half.
                let mut pending_high = false;
                while bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        if bytes[i + 1] == b'u' {
                            let hex = std::str::from_utf8(&bytes[i + 2..i + 6]).unwrap_or("");
                            let unit = u16::from_str_radix(hex, 16).unwrap_or(0);
                            match unit {
                                0xD800..=0xDBFF if !pending_high => pending_high = true,
                                0xDC00..=0xDFFF if pending_high => pending_high = false,
                                0xD800..=0xDFFF => return false,
                                _ if pending_high => return false,
                                _ => {}
                            }
                            i += 6;
                            continue;
                        }
                        if pending_high {
                            return false;
                        }
                        i += 2;
                        continue;
                    }
                    if pending_high {
                        return false;
                    }
                    i += 1;
                }
                if pending_high {
                    return false;
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let number = std::str::from_utf8(&bytes[start..i]).unwrap_or("");
                if !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

/// What a JSON value is, from its first byte (`RawValue` holds valid JSON, trimmed).
fn first(raw: Option<&RawValue>) -> u8 {
    raw.and_then(|r| r.get().bytes().next()).unwrap_or(b'n')
}

fn text(raw: Option<&RawValue>) -> Option<String> {
    raw.filter(|r| first(Some(r)) == b'"')
        .and_then(|r| serde_json::from_str(r.get()).ok())
}

/// An id: a non-empty string, or a number as written (what [`id_string`] makes of it).
fn id_of(raw: Option<&RawValue>) -> Option<String> {
    match first(raw) {
        b'"' => text(raw).filter(|s| !s.is_empty()),
        b'-' | b'0'..=b'9' => raw.and_then(|r| {
            serde_json::from_str::<serde_json::Number>(r.get())
                .ok()
                .map(|n| n.to_string())
        }),
        _ => None,
    }
}

/// The event from its head alone, when every field it has is of the type [`to_event`] wants; `None` sends
/// the event through [`to_event`], which reads all of it and names what is wrong.
fn from_head(raw: &str) -> Option<Event> {
    if !reads_as_value(raw) {
        return None;
    }
    let head: Head = serde_json::from_str(raw).ok()?;
    let is = |v: Option<&RawValue>, allowed: &[u8]| allowed.contains(&first(v));
    let string = [b'n', b'"'];
    let object = [b'n', b'{'];
    let id = [
        b'n', b'"', b'-', b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', b'9',
    ];
    let typed = is(head.kind, &string)
        && is(head.event, &string)
        && is(head.message_id, &string)
        && is(head.user_id, &id)
        && is(head.user_id_doc, &id)
        && is(head.anonymous_id, &id)
        && is(head.properties, &object)
        && is(head.traits, &object)
        && is(head.context, &object)
        && [
            head.timestamp,
            head.received_at,
            head.sent_at,
            head.original_timestamp,
        ]
        .into_iter()
        .all(|t| is(t, &string));
    if !typed {
        return None;
    }
    if let Some(context) = head.context.filter(|c| first(Some(c)) == b'{') {
        let inner: ContextHead = serde_json::from_str(context.get()).ok()?;
        if !is(inner.traits, &object) {
            return None;
        }
    }
    let event_name = text(head.event);
    let kind = match (text(head.kind), &event_name) {
        (Some(t), _) => t,
        (None, Some(_)) => "track".to_string(),
        (None, None) => return None,
    };
    let name = match (kind.as_str(), event_name) {
        (_, Some(e)) => e,
        ("track", None) => return None,
        (other, None) => other.to_string(),
    };
    let named = id_of(head.user_id).or_else(|| id_of(head.user_id_doc));
    let anonymous = id_of(head.anonymous_id);
    let who = who_of(named.as_deref(), anonymous.as_deref());
    let user_id = named.or(anonymous);
    let id = text(head.message_id)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| content_id(raw.as_bytes()));
    Some(Event {
        source: Source::Segment,
        who,
        id,
        name,
        kind,
        user_id,
        context: std::sync::OnceLock::new(),
        raw: raw.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::signature::sign_sha1;
    use axum::http::{HeaderMap, HeaderValue};

    fn vectors() -> Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/signature-test-vectors.json"
        ))
        .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn the_shared_signature_vectors_verify() {
        let v = vectors();
        for name in [
            "segment_actions_single",
            "segment_actions_batch",
            "segment_classic_track",
        ] {
            let vec = &v["vectors"][name];
            let secret = Secret::new(vec["secret"].as_str().unwrap());
            let body = vec["raw_body"].as_str().unwrap().as_bytes();
            let expected = vec["expected"].as_str().unwrap();
            assert_eq!(
                sign_sha1(&secret, vec["signed_bytes"].as_str().unwrap().as_bytes()),
                expected,
                "{name}"
            );
            let verified = verify(&headers(expected), body, &[secret], false)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(verified.authenticity, Authenticity::Signed);
        }
    }

    #[test]
    fn a_wrong_missing_or_prefixed_signature_is_refused() {
        let secret = Secret::new("abc123");
        let body = br#"{"cool":true}"#;
        let good = "5099cab379b3be52908387457007040cc934ef86";
        for bad in [
            "5099cab379b3be52908387457007040cc934ef87".to_string(),
            format!("sha1={good}"),
            good[..39].to_string(),
            "not hex at all, not hex at all, not hex!".to_string(),
        ] {
            let err =
                verify(&headers(&bad), body, std::slice::from_ref(&secret), false).unwrap_err();
            assert!(matches!(err, RejectReason::Unauthorized(_)), "{bad}: {err}");
        }
        let err = verify(
            &HeaderMap::new(),
            body,
            std::slice::from_ref(&secret),
            false,
        )
        .unwrap_err();
        assert_eq!(err, RejectReason::Unauthorized("missing X-Signature"));
        // A batch signed over any element but the first does not verify.
        let batch = br#"[{"cool":false},{"cool":true}]"#;
        assert!(verify(&headers(good), batch, &[secret], false).is_err());
    }

    #[test]
    fn a_rotated_secret_still_verifies() {
        let body = br#"{"cool":true}"#;
        let secrets = [Secret::new("new-secret"), Secret::new("abc123")];
        assert!(verify(
            &headers("5099cab379b3be52908387457007040cc934ef86"),
            body,
            &secrets,
            false
        )
        .is_ok());
    }

    #[test]
    fn every_segment_sample_parses_into_an_event() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/segment");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let body = std::fs::read(&path).unwrap();
            let verified = verify(&HeaderMap::new(), &body, &[], true).unwrap();
            let events = parse(&verified)
                .unwrap_or_else(|e| panic!("{path:?}: {e}"))
                .events;
            assert_eq!(events.len(), 1, "{path:?}");
            let kind = &events[0].kind;
            assert!(SPEC_TYPES.contains(&kind.as_str()), "{path:?}: {kind}");
            seen += 1;
        }
        assert!(seen >= 14, "expected every Segment sample, saw {seen}");
    }

    #[test]
    fn track_events_carry_their_name_traits_and_user() {
        let body = br#"{"type":"track","event":"trial_started","messageId":"m1","anonymousId":"anon",
            "properties":{"plan":"pro"},"context":{"traits":{"plan":"team","company":"Acme"}},"traits":{"seat":3}}"#;
        let verified = verify(&HeaderMap::new(), body, &[], true).unwrap();
        let e = parse(&verified).unwrap().events.remove(0);
        assert_eq!(e.name, "trial_started");
        assert_eq!(e.id, "m1");
        assert_eq!(e.dedupe_key(), "segment:m1");
        assert_eq!(e.user_id.as_deref(), Some("anon"));
        assert_eq!(e.context()["traits"]["company"], "Acme");
        assert_eq!(e.context()["traits"]["seat"], 3);
        // Traits win over properties at the top level, as in the seed.
        assert_eq!(e.context()["plan"], "team");
        assert_eq!(e.context()["properties"]["plan"], "pro");
    }

    #[test]
    fn an_event_without_message_id_gets_a_stable_content_key() {
        let body = br#"{"type":"identify","userId":"u1"}"#;
        let a = parse(&verify(&HeaderMap::new(), body, &[], true).unwrap())
            .unwrap()
            .events;
        let b = parse(&verify(&HeaderMap::new(), body, &[], true).unwrap())
            .unwrap()
            .events;
        assert!(a[0].id.starts_with("content:"));
        assert_eq!(a[0].id, b[0].id);
    }

    #[test]
    fn bodies_that_are_not_segment_events_get_a_reason() {
        for (body, why) in [
            (&b"{\"type\":\"track\""[..], "malformed JSON"),
            (b"[]", "empty batch"),
            (b"   ", "empty body"),
            (b"42", "expected a JSON object"),
            (br#"{"hello":"world"}"#, "neither `type` nor `event`"),
            (br#"{"type":"track"}"#, "needs an `event` name"),
            (
                br#"{"type":"track","event":"x","properties":[1]}"#,
                "`properties` must be an object",
            ),
            (br#"{"type":"track","event":5}"#, "`event` must be a string"),
            (b"[7, [1]]", "not a Segment batch"),
        ] {
            let err = verify(&HeaderMap::new(), body, &[], true)
                .and_then(|v| parse(&v))
                .unwrap_err();
            let RejectReason::BadRequest(reason) = err else {
                panic!("{body:?}: expected 400, got {err:?}")
            };
            assert!(reason.contains(why), "{reason} should mention {why}");
        }
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn a_batch_keeps_its_good_events_and_sets_the_bad_ones_aside_with_why() {
        let body = br#"[{"type":"page","userId":"u1"},7,{"type":"track","userId":"u2"},{"type":"track","event":"x","anonymousId":"a3"}]"#;
        let parsed = parse(&verify(&HeaderMap::new(), body, &[], true).unwrap()).unwrap();
        let names: Vec<&str> = parsed.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["page", "x"]);
        let why: Vec<(&str, &str, Option<&str>)> = parsed
            .unusable
            .iter()
            .map(|u| (u.refusal.reason(), u.name.as_str(), u.user_id.as_deref()))
            .collect();
        assert_eq!(
            why,
            [
                (
                    "batch element 1: not a Segment event: expected a JSON object",
                    "-",
                    None
                ),
                (
                    "batch element 2: a track event needs an `event` name",
                    "track",
                    Some("u2")
                ),
            ]
        );
        assert_eq!(parsed.unusable[0].raw, "7");
        assert!(matches!(parsed.unusable[1].refusal, Refusal::Refused(_)));
    }

    #[test]
    fn a_lone_surrogate_is_read_as_the_replacement_character_under_the_signature() {
        use crate::sources::signature::sign_sha1;
        let secret = Secret::new("abc123");
        let first = r#"{"type":"track","event":"Emoji \ud83d","userId":"u1","properties":{"note":"half \udE00 of a pair"}}"#;
        let body = format!(
            r#"[{first},{{"type":"identify","userId":"u2","traits":{{"name":"\ud83d\ude00"}}}}]"#
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            sign_sha1(&secret, first.as_bytes()).parse().unwrap(),
        );
        let verified = verify(&headers, body.as_bytes(), &[secret], false).unwrap();
        let parsed = parse(&verified).unwrap();
        assert!(parsed.unusable.is_empty());
        let e = &parsed.events[0];
        assert_eq!(e.name, "Emoji \u{FFFD}");
        assert_eq!(e.context()["properties"]["note"], "half \u{FFFD} of a pair");
        assert_eq!(parsed.events[1].context()["traits"]["name"], "😀");
    }
}

#[cfg(test)]
mod head_tests {
    use super::*;

    #[test]
    fn what_a_value_refuses_goes_the_slow_way() {
        for bad in [
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00x"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":1e400}"#,
            r#"{"a":-1e999}"#,
        ] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
            assert!(!reads_as_value(bad), "{bad}");
        }
        for good in [
            r#"{"a":"\ud83d\ude00 \"q\" \\","b":[1,-2.5e10,0],"c":{"d":null}}"#,
            r#"{"a":123456789012345678901234567890,"b":"é\u00e9"}"#,
        ] {
            assert!(serde_json::from_str::<Value>(good).is_ok(), "{good}");
            assert!(reads_as_value(good), "{good}");
        }
    }

    #[test]
    fn the_head_gives_the_same_event_as_reading_it_all() {
        let raw = r#"{"type":"track","event":"Signed Up","messageId":"m-1","userId":42,"anonymousId":"a",
            "properties":{"plan":"pro"},"context":{"traits":{"company":"Acme"},"ip":"1.2.3.4"},"timestamp":"2026-11-25T00:00:00Z"}"#;
        let raw: &RawValue = serde_json::from_str(raw).unwrap();
        let fast = from_head(raw.get()).expect("the fast path takes it");
        let Value::Object(obj) = serde_json::from_str(raw.get()).unwrap() else {
            panic!()
        };
        let slow = to_event(obj, raw.get().as_bytes()).unwrap();
        assert_eq!(
            (&fast.id, &fast.name, &fast.kind, &fast.user_id),
            (&slow.id, &slow.name, &slow.kind, &slow.user_id)
        );
        assert_eq!(fast.context(), slow.context());
        assert_eq!(fast.raw, slow.raw);
    }
}
