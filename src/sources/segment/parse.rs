//! A Segment event, or why it is not one: the Segment spec's fields read into an [`Event`] and its template
//! context. Most events are read from their head alone (`head.rs`); this is the full read.

use serde_json::{value::RawValue, Map, Value};

use super::head::from_head;
use crate::sources::{
    content_id, id_string, json::replace_lone_surrogates, verify::malformed, who, Event, Parsed,
    Refusal, RejectReason, Source, Unusable, Verified,
};

/// Turns a verified body into events, in order. A single event that is not a Segment event is refused (400,
/// with the reason). In a batch, each element that is not a Segment event is set aside with its reason and
/// the others go on: Segment never re-sends a batch refused with a 4xx, so refusing it whole would lose
/// every good event in it. An array none of whose elements is a JSON object is not a batch at all (400).
pub fn parse(verified: &Verified<'_>) -> Result<Parsed, RejectReason> {
    if !verified.batch {
        let event = verified
            .parts
            .iter()
            .map(|raw| read_event(raw).map_err(RejectReason::BadRequest))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Parsed {
            events: event,
            unusable: Vec::new(),
        });
    }
    let mut parsed = Parsed {
        events: Vec::with_capacity(verified.parts.len()),
        unusable: Vec::new(),
    };
    for (i, raw) in verified.parts.iter().enumerate() {
        match read_event(raw) {
            Ok(event) => parsed.events.push(event),
            Err(why) => parsed
                .unusable
                .push(unusable(raw, format!("batch element {i}: {why}"))),
        }
    }
    let objects = verified
        .parts
        .iter()
        .filter(|raw| raw.get().starts_with('{'))
        .count();
    if objects == 0 {
        return Err(RejectReason::BadRequest(format!(
            "not a Segment batch: none of the array's {} elements is a JSON object (an event)",
            verified.parts.len()
        )));
    }
    Ok(parsed)
}

/// One event, or why it is not a Segment event. A lone surrogate escape (`"\ud83d"`, as Node's
/// `JSON.stringify` writes it) is read as U+FFFD: the event's `raw` is the text that was read.
fn read_event(raw: &RawValue) -> Result<Event, String> {
    let readable = replace_lone_surrogates(raw.get().as_bytes());
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

pub(super) fn to_event(obj: Map<String, Value>, raw: &[u8]) -> Result<Event, String> {
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
pub(super) fn who_of(user_id: Option<&str>, anonymous_id: Option<&str>) -> String {
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
