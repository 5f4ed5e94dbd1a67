//! Customer.io reporting webhooks: the `v0:<timestamp>:<body>` HMAC-SHA256 scheme and the event envelope.
//!
//! Signature (PROTOCOLS.md §2.1): `X-CIO-Signature` = hex HMAC-SHA256 of `"v0:" + X-CIO-Timestamp + ":" + raw body`.
//! A timestamp outside the tolerance is refused so that a captured request cannot be replayed later.
//!
//! Payload (§2.3–2.5): one event object per request; the current envelope (`metric`, `object_type`, `data`)
//! or the legacy `event_type` form. Customer.io holds back every later webhook for an hour after a 4xx, so a
//! genuine (signed, in-window) body is never refused for its content: fields of an unexpected type are read
//! leniently, and a body that is not an event we can use is acknowledged and kept as "unprocessable".

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::{
    content_id, id_string,
    segment::malformed,
    signature::{read_hex_header, sha256_matches, HeaderSignature},
    Event, Refusal, RejectReason, Source, Unusable,
};
use crate::config::Secret;

pub const SIGNATURE_HEADER: &str = "x-cio-signature";
pub const TIMESTAMP_HEADER: &str = "x-cio-timestamp";

/// The object types Customer.io sends, longest first so that `in_app_clicked` splits as (`in_app`, `clicked`).
pub const OBJECT_TYPES: [&str; 8] = [
    "whatsapp", "customer", "webhook", "in_app", "email", "slack", "push", "sms",
];

/// Whether a verified body carried a signature, or was let through unsigned by `dev` mode.
pub use super::segment::Authenticity;

/// A body whose signature and timestamp have been checked: only [`verify`] makes one.
#[derive(Debug)]
pub struct Verified<'a> {
    body: &'a [u8],
    pub authenticity: Authenticity,
}

/// Checks `X-CIO-Signature` over `v0:<X-CIO-Timestamp>:<raw body>` and the timestamp's freshness.
/// A `tolerance` of zero turns the freshness check off.
pub fn verify<'a>(
    headers: &axum::http::HeaderMap,
    body: &'a [u8],
    secrets: &[Secret],
    unsigned_ok: bool,
    tolerance: Duration,
    now: SystemTime,
) -> Result<Verified<'a>, RejectReason> {
    if secrets.is_empty() {
        return if unsigned_ok {
            Ok(Verified {
                body,
                authenticity: Authenticity::UnsignedDevMode,
            })
        } else {
            Err(RejectReason::Unauthorized("no secret configured"))
        };
    }
    let digest = match read_hex_header(headers, SIGNATURE_HEADER, 32) {
        HeaderSignature::Missing => {
            return Err(RejectReason::Unauthorized("missing X-CIO-Signature"))
        }
        HeaderSignature::Malformed => {
            return Err(RejectReason::Unauthorized("malformed X-CIO-Signature"))
        }
        HeaderSignature::Digest(d) => d,
    };
    let mut stamps = headers.get_all(TIMESTAMP_HEADER).iter();
    let (Some(stamp), None) = (stamps.next(), stamps.next()) else {
        return Err(RejectReason::Unauthorized(
            "missing or repeated X-CIO-Timestamp",
        ));
    };
    let stamp = stamp.to_str().unwrap_or("").trim();
    let Some(seconds) = stamp
        .parse::<u64>()
        .ok()
        .filter(|_| stamp.bytes().all(|b| b.is_ascii_digit()))
    else {
        return Err(RejectReason::Unauthorized("malformed X-CIO-Timestamp"));
    };
    if !sha256_matches(secrets, &[b"v0:", stamp.as_bytes(), b":", body], &digest) {
        return Err(RejectReason::Unauthorized("X-CIO-Signature mismatch"));
    }
    if !tolerance.is_zero() {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now.abs_diff(seconds) > tolerance.as_secs() {
            return Err(RejectReason::Unauthorized(
                "X-CIO-Timestamp outside the tolerance",
            ));
        }
    }
    Ok(Verified {
        body,
        authenticity: Authenticity::Signed,
    })
}

/// What a verified body holds: an event, or a genuine body we cannot use (acknowledged 2xx and kept with why).
#[derive(Debug)]
pub enum Parsed {
    Event(Box<Event>),
    Unprocessable(Box<Unusable>),
}

/// Reads the envelope. Nothing genuine is refused for its content: a body that is not JSON, not an object,
/// or not an event we know is [`Parsed::Unprocessable`], with the reason.
pub fn parse(verified: &Verified<'_>) -> Parsed {
    let body = verified.body;
    let obj = if body.iter().all(u8::is_ascii_whitespace) {
        Err("empty body: expected a Customer.io reporting webhook event as JSON".to_string())
    } else {
        // A lone surrogate escape is read as U+FFFD, as for Segment (the signature covered the bytes received).
        match serde_json::from_slice::<Value>(&super::replace_lone_surrogates(body)) {
            Ok(Value::Object(obj)) => Ok(obj),
            Ok(_) => Err("not a Customer.io event: expected one JSON object".into()),
            Err(e) => Err(malformed(e).to_string()),
        }
    };
    match obj.and_then(|obj| to_event(obj, body)) {
        Ok(event) => Parsed::Event(Box::new(event)),
        Err(why) => unprocessable(body, why),
    }
}

/// A genuine body that is not an event we can use, kept as received with why.
pub fn unprocessable(body: &[u8], why: String) -> Parsed {
    Parsed::Unprocessable(Box::new(Unusable {
        source: Source::CustomerIo,
        id: content_id(body),
        name: "-".into(),
        user_id: None,
        who: "unknown".into(),
        raw: String::from_utf8_lossy(body).into_owned(),
        refusal: Refusal::Unprocessable(why),
    }))
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// (object type, metric) of the current envelope, or of a legacy `event_type` such as `email_bounced`.
fn kind_and_metric(obj: &Map<String, Value>) -> Option<(String, String)> {
    if let Some(metric) = text(obj.get("metric")) {
        // The spec's cio_subscription_preferences_changed schema misspells the field `object_type_type`.
        let object_type = text(obj.get("object_type"))
            .or_else(|| text(obj.get("object_type_type")))
            .unwrap_or_else(|| "unknown".into());
        return Some((object_type, metric));
    }
    let legacy = text(obj.get("event_type"))?;
    for prefix in OBJECT_TYPES {
        if let Some(metric) = legacy
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
        {
            return Some((prefix.to_string(), metric.to_string()));
        }
    }
    Some(("unknown".into(), legacy))
}

/// Whom to look up in the App API: the person's `id`, else the deprecated `customer_id`, else the email
/// (`id_type=email`), else `cio_id` (`id_type=cio_id`).
fn customer_lookup(data: &Map<String, Value>) -> Option<(String, &'static str)> {
    let identifiers = data.get("identifiers").and_then(Value::as_object);
    let ident = |k: &str| identifiers.and_then(|i| id_string(i.get(k)));
    ident("id")
        .or_else(|| id_string(data.get("customer_id")))
        .map(|id| (id, "id"))
        .or_else(|| {
            ident("email")
                .or_else(|| text(data.get("email_address")))
                .map(|e| (e, "email"))
        })
        .or_else(|| ident("cio_id").map(|c| (c, "cio_id")))
}

fn to_event(obj: Map<String, Value>, raw: &[u8]) -> Result<Event, String> {
    let Some((object_type, metric)) = kind_and_metric(&obj) else {
        return Err("not a Customer.io event: it has no `metric` or `event_type`".into());
    };
    let data = match obj.get("data") {
        Some(Value::Object(d)) => d.clone(),
        _ => Map::new(),
    };
    let identifiers = data
        .get("identifiers")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // `recipient` is an email address only for email messages: for SMS and WhatsApp it is a phone number,
    // for Slack a channel, for a webhook a URL (PROTOCOLS.md §2.4). Templates get it as `recipient`.
    let recipient = text(data.get("recipient"));
    let email = id_string(identifiers.get("email"))
        .or_else(|| text(data.get("email_address")))
        .or_else(|| recipient.clone().filter(|_| object_type == "email"));
    let who = super::who(&[
        (
            "id",
            id_string(identifiers.get("id"))
                .or_else(|| id_string(data.get("customer_id")))
                .as_deref(),
        ),
        ("cio_id", id_string(identifiers.get("cio_id")).as_deref()),
        ("email", email.as_deref()),
        ("object_type", Some(object_type.as_str())),
    ]);
    let lookup = customer_lookup(&data);
    let event_id = id_string(obj.get("event_id"));
    let id = event_id.clone().unwrap_or_else(|| content_id(raw));
    let user_id = lookup.as_ref().map(|(id, _)| id.clone());

    let mut ctx = Map::new();
    let fields: [(&str, Value); 15] = [
        ("provider", Value::from("customerio")),
        ("event", Value::from(metric.clone())),
        ("metric", Value::from(metric.clone())),
        ("object_type", Value::from(object_type.clone())),
        ("event_id", event_id.map(Value::from).unwrap_or(Value::Null)),
        (
            "timestamp",
            obj.get("timestamp").cloned().unwrap_or(Value::Null),
        ),
        (
            "user_id",
            Value::from(user_id.clone().unwrap_or_else(|| "unknown".into())),
        ),
        (
            "customer_id",
            id_string(identifiers.get("id"))
                .or_else(|| id_string(data.get("customer_id")))
                .map(Value::from)
                .unwrap_or(Value::Null),
        ),
        ("email", email.map(Value::from).unwrap_or(Value::Null)),
        (
            "recipient",
            recipient.map(Value::from).unwrap_or(Value::Null),
        ),
        (
            "cio_id",
            id_string(identifiers.get("cio_id"))
                .map(Value::from)
                .unwrap_or(Value::Null),
        ),
        (
            "delivery_id",
            text(data.get("delivery_id"))
                .map(Value::from)
                .unwrap_or(Value::Null),
        ),
        (
            "lookup",
            lookup
                .map(|(id, id_type)| serde_json::json!({"id": id, "id_type": id_type}))
                .unwrap_or(Value::Null),
        ),
        ("identifiers", Value::Object(identifiers)),
        ("data", Value::Object(data)),
    ];
    for (k, v) in fields {
        ctx.insert(k.to_string(), v);
    }
    ctx.insert("payload".into(), Value::Object(obj));
    Ok(Event {
        source: Source::CustomerIo,
        id,
        name: metric,
        kind: object_type,
        user_id,
        who,
        context: ctx.into(),
        raw: String::from_utf8_lossy(raw).into_owned(),
    })
}

/// Signs a body the way Customer.io does, for `mavera-triggers send` and tests.
pub fn sign(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    super::signature::sign_sha256(
        secret,
        &[b"v0:", timestamp.to_string().as_bytes(), b":", body],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    const VECTOR_TS: u64 = 1613063089;

    fn vector(name: &str) -> Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/signature-test-vectors.json"
        ))
        .unwrap();
        let all: Value = serde_json::from_str(&text).unwrap();
        all["vectors"][name].clone()
    }

    fn headers(sig: &str, ts: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h.insert(TIMESTAMP_HEADER, HeaderValue::from_str(ts).unwrap());
        h
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_v0_vector_verifies_and_the_body_only_scheme_does_not() {
        let v = vector("customerio_reporting_webhook");
        let secret = Secret::new(v["secret"].as_str().unwrap());
        let body = v["raw_body"].as_str().unwrap().as_bytes();
        let expected = v["expected"].as_str().unwrap();
        assert_eq!(sign(&secret, VECTOR_TS, body), expected);
        let tol = Duration::from_secs(300);
        let ok = verify(
            &headers(expected, "1613063089"),
            body,
            std::slice::from_ref(&secret),
            false,
            tol,
            at(VECTOR_TS + 10),
        );
        assert_eq!(ok.unwrap().authenticity, Authenticity::Signed);
        // Uppercase hex carries the same bits.
        assert!(verify(
            &headers(&expected.to_uppercase(), "1613063089"),
            body,
            std::slice::from_ref(&secret),
            false,
            tol,
            at(VECTOR_TS)
        )
        .is_ok());

        let wrong = vector("customerio_wrong_scheme_body_only");
        let err = verify(
            &headers(wrong["value"].as_str().unwrap(), "1613063089"),
            body,
            &[secret],
            false,
            tol,
            at(VECTOR_TS),
        )
        .unwrap_err();
        assert_eq!(err, RejectReason::Unauthorized("X-CIO-Signature mismatch"));
    }

    #[test]
    fn stale_future_and_missing_timestamps_are_refused() {
        let secret = Secret::new("k");
        let body = br#"{"metric":"sent"}"#;
        let tol = Duration::from_secs(300);
        let sig = sign(&secret, 1000, body);
        for now in [1000 + 301, 1000 - 301] {
            let err = verify(
                &headers(&sig, "1000"),
                body,
                std::slice::from_ref(&secret),
                false,
                tol,
                at(now),
            )
            .unwrap_err();
            assert!(matches!(err, RejectReason::Unauthorized(_)));
        }
        // Tolerance 0 turns the check off.
        assert!(verify(
            &headers(&sig, "1000"),
            body,
            std::slice::from_ref(&secret),
            false,
            Duration::ZERO,
            at(99_999)
        )
        .is_ok());
        let mut no_ts = HeaderMap::new();
        no_ts.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).unwrap());
        assert!(verify(
            &no_ts,
            body,
            std::slice::from_ref(&secret),
            false,
            tol,
            at(1000)
        )
        .is_err());
        assert!(verify(
            &headers(&sig, "+1000"),
            body,
            &[secret],
            false,
            tol,
            at(1000)
        )
        .is_err());
    }

    fn parse_file(name: &str) -> Parsed {
        let body = std::fs::read(format!(
            "{}/tests/fixtures/customerio/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let v = verify(
            &HeaderMap::new(),
            &body,
            &[],
            true,
            Duration::ZERO,
            SystemTime::now(),
        )
        .unwrap();
        parse(&v)
    }

    #[test]
    fn every_customerio_sample_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/customerio");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let Parsed::Event(e) = parse_file(&name) else {
                panic!("{name} did not parse into an event")
            };
            assert!(!e.name.is_empty() && e.kind != "unknown", "{name}: {e:?}");
            assert!(e.user_id.is_some(), "{name} has a person to look up");
        }
    }

    #[test]
    fn the_current_envelope_prefers_identifiers_id() {
        let Parsed::Event(e) = parse_file("customerio-customer-unsubscribed.json") else {
            panic!()
        };
        assert_eq!(
            (e.kind.as_str(), e.name.as_str()),
            ("customer", "unsubscribed")
        );
        assert_eq!(e.dedupe_key(), "customerio:01E4C4CT6YDC7Y5M7FE1GWWPQJ");
        assert_eq!(
            e.context()["lookup"],
            serde_json::json!({"id": "42", "id_type": "id"})
        );
        assert_eq!(e.context()["email"], "test@example.com");
    }

    #[test]
    fn the_legacy_event_type_maps_to_object_and_metric() {
        let Parsed::Event(e) = parse_file("customerio-legacy-email-delivered.json") else {
            panic!()
        };
        assert_eq!((e.kind.as_str(), e.name.as_str()), ("email", "delivered"));
        assert_eq!(e.context()["lookup"]["id"], "568");
        let body = br#"{"event_type":"in_app_clicked","event_id":"x","data":{}}"#;
        let v = verify(
            &HeaderMap::new(),
            body,
            &[],
            true,
            Duration::ZERO,
            SystemTime::now(),
        )
        .unwrap();
        let Parsed::Event(e) = parse(&v) else {
            panic!()
        };
        assert_eq!((e.kind.as_str(), e.name.as_str()), ("in_app", "clicked"));
    }

    #[test]
    fn the_lookup_falls_back_from_id_to_email_to_cio_id() {
        let cases = [
            (
                r#"{"identifiers":{"id":null,"email":"a@b.co","cio_id":"c1"},"customer_id":""}"#,
                ("a@b.co", "email"),
            ),
            (
                r#"{"identifiers":{"id":null,"email":null,"cio_id":"c1"}}"#,
                ("c1", "cio_id"),
            ),
            (r#"{"identifiers":{"id":7},"customer_id":"9"}"#, ("7", "id")),
            (
                r#"{"customer_id":"9","email_address":"a@b.co"}"#,
                ("9", "id"),
            ),
        ];
        for (data, (id, id_type)) in cases {
            let body = format!(
                r#"{{"metric":"unsubscribed","object_type":"customer","event_id":"e","data":{data}}}"#
            );
            let v = verify(
                &HeaderMap::new(),
                body.as_bytes(),
                &[],
                true,
                Duration::ZERO,
                SystemTime::now(),
            )
            .unwrap();
            let Parsed::Event(e) = parse(&v) else {
                panic!()
            };
            assert_eq!(
                e.context()["lookup"],
                serde_json::json!({"id": id, "id_type": id_type}),
                "{data}"
            );
        }
    }

    #[test]
    fn a_genuine_body_we_cannot_use_is_unprocessable_not_refused() {
        for (body, why) in [
            (&br#"{"hello":1}"#[..], "no `metric` or `event_type`"),
            (br#"{"metric":5,"data":"x"}"#, "no `metric` or `event_type`"),
            (b"[1]", "expected one JSON object"),
            (b"not json", "malformed JSON"),
            (b"  ", "empty body"),
        ] {
            let v = verify(
                &HeaderMap::new(),
                body,
                &[],
                true,
                Duration::ZERO,
                SystemTime::now(),
            )
            .unwrap();
            let Parsed::Unprocessable(u) = parse(&v) else {
                panic!("{body:?} should be unprocessable")
            };
            assert!(u.refusal.reason().contains(why), "{:?}", u.refusal);
            assert_eq!(u.raw.as_bytes(), body);
        }
    }

    fn event(object_type: &str, data: &str) -> Event {
        let body = format!(
            r#"{{"metric":"sent","object_type":"{object_type}","event_id":"e-{object_type}","data":{data}}}"#
        );
        let v = verify(
            &HeaderMap::new(),
            body.as_bytes(),
            &[],
            true,
            Duration::ZERO,
            SystemTime::now(),
        )
        .unwrap();
        let Parsed::Event(e) = parse(&v) else {
            panic!("{body}")
        };
        *e
    }

    #[test]
    fn a_recipient_is_an_email_only_for_an_email_message() {
        let email = event(
            "email",
            r#"{"identifiers":{"id":"7"},"recipient":"jane@acme.example"}"#,
        );
        assert_eq!(email.context()["email"], "jane@acme.example");
        assert_eq!(email.context()["recipient"], "jane@acme.example");
        for (object_type, recipient) in [
            ("sms", "+15551234567"),
            ("whatsapp", "+447700900123"),
            ("slack", "#general"),
            ("webhook", "https://hooks.example/x"),
            ("in_app", "7"),
        ] {
            let e = event(
                object_type,
                &format!(r#"{{"identifiers":{{"id":"7"}},"recipient":"{recipient}"}}"#),
            );
            assert_eq!(e.context()["email"], Value::Null, "{object_type}");
            assert_eq!(e.context()["recipient"], recipient, "{object_type}");
        }
        // The person's own address still counts, whatever the channel.
        let sms = event(
            "sms",
            r#"{"identifiers":{"id":"7","email":"jane@acme.example"},"recipient":"+15551234567"}"#,
        );
        assert_eq!(sms.context()["email"], "jane@acme.example");
    }

    #[test]
    fn an_event_says_whom_it_is_about_with_the_email_masked() {
        let e = event(
            "email",
            r#"{"identifiers":{"id":"42","email":"jane@acme.example","cio_id":"d9c1"}}"#,
        );
        assert_eq!(
            e.who,
            "id=42 cio_id=d9c1 email=j***@acme.example object_type=email"
        );
        assert_eq!(event("push", "{}").who, "object_type=push");
    }
}
