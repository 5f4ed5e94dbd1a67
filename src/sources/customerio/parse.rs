//! The Customer.io reporting webhook envelope (PROTOCOLS.md §2.3–2.5): the current form (`metric`,
//! `object_type`, `data`) or the legacy `event_type`, read leniently into an [`Event`] and its template context.

use serde_json::{Map, Value};

use super::OBJECT_TYPES;
use crate::sources::{
    content_id, id_string, json::replace_lone_surrogates, verify::malformed, who, Event, Refusal,
    Source, Unusable, Verified,
};

/// What a verified body holds: an event, or a genuine body we cannot use (acknowledged 2xx and kept with why).
#[derive(Debug)]
pub enum Parsed {
    Event(Box<Event>),
    Unprocessable(Box<Unusable>),
}

/// Reads the envelope. Nothing genuine is refused for its content: a body that is not JSON, not an object,
/// or not an event we know is [`Parsed::Unprocessable`], with the reason. The template context is built
/// only when something asks for it ([`context_of`], through [`Event::context`]): most reporting events
/// (`opened`, `delivered`, `clicked`…) match no trigger, and copying their `data` into a context for each
/// was most of this parse.
pub fn parse(verified: &Verified<'_>) -> Parsed {
    let body = verified.body;
    match read(body).and_then(|obj| to_event(&obj, body)) {
        Ok(event) => Parsed::Event(Box::new(event)),
        Err(why) => unprocessable(body, why),
    }
}

/// The body as a JSON object, or why it is not one.
fn read(body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(
            "empty body: expected a Customer.io reporting webhook event as JSON".to_string(),
        );
    }
    // A lone surrogate escape is read as U+FFFD, as for Segment (the signature covered the bytes received).
    match serde_json::from_slice::<Value>(&replace_lone_surrogates(body)) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err("not a Customer.io event: expected one JSON object".into()),
        Err(e) => Err(malformed(e).to_string()),
    }
}

/// The template context of an event's raw body (read again: see [`parse`]).
pub fn full_context(raw: &str) -> Map<String, Value> {
    read(raw.as_bytes()).map(context_of).unwrap_or_default()
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

/// What an event's templates and log lines are told of the person, read from its `data`.
struct Person {
    object_type: String,
    metric: String,
    customer_id: Option<String>,
    cio_id: Option<String>,
    email: Option<String>,
    recipient: Option<String>,
    lookup: Option<(String, &'static str)>,
}

fn person(obj: &Map<String, Value>) -> Result<Person, String> {
    let Some((object_type, metric)) = kind_and_metric(obj) else {
        return Err("not a Customer.io event: it has no `metric` or `event_type`".into());
    };
    let empty = Map::new();
    let data = match obj.get("data") {
        Some(Value::Object(d)) => d,
        _ => &empty,
    };
    let identifiers = data
        .get("identifiers")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    // `recipient` is an email address only for email messages: for SMS and WhatsApp it is a phone number,
    // for Slack a channel, for a webhook a URL (PROTOCOLS.md §2.4). Templates get it as `recipient`.
    let recipient = text(data.get("recipient"));
    let email = id_string(identifiers.get("email"))
        .or_else(|| text(data.get("email_address")))
        .or_else(|| recipient.clone().filter(|_| object_type == "email"));
    Ok(Person {
        customer_id: id_string(identifiers.get("id"))
            .or_else(|| id_string(data.get("customer_id"))),
        cio_id: id_string(identifiers.get("cio_id")),
        lookup: customer_lookup(data),
        email,
        recipient,
        object_type,
        metric,
    })
}

fn to_event(obj: &Map<String, Value>, raw: &[u8]) -> Result<Event, String> {
    let p = person(obj)?;
    let who = who(&[
        ("id", p.customer_id.as_deref()),
        ("cio_id", p.cio_id.as_deref()),
        ("email", p.email.as_deref()),
        ("object_type", Some(p.object_type.as_str())),
    ]);
    Ok(Event {
        source: Source::CustomerIo,
        id: id_string(obj.get("event_id")).unwrap_or_else(|| content_id(raw)),
        name: p.metric,
        kind: p.object_type,
        user_id: p.lookup.map(|(id, _)| id),
        who,
        context: std::sync::OnceLock::new(),
        raw: String::from_utf8_lossy(raw).into_owned(),
    })
}

/// The template context of an event `obj` (one [`to_event`] read): the person's fields, `identifiers`,
/// `data` and the whole `payload`. An object [`person`] cannot read gives an empty context.
fn context_of(obj: Map<String, Value>) -> Map<String, Value> {
    let Ok(p) = person(&obj) else {
        return Map::new();
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
    let event_id = id_string(obj.get("event_id"));
    let user_id = p.lookup.as_ref().map(|(id, _)| id.clone());
    let mut ctx = Map::new();
    let fields: [(&str, Value); 15] = [
        ("provider", Value::from("customerio")),
        ("event", Value::from(p.metric.clone())),
        ("metric", Value::from(p.metric)),
        ("object_type", Value::from(p.object_type)),
        ("event_id", Value::from(event_id)),
        (
            "timestamp",
            obj.get("timestamp").cloned().unwrap_or(Value::Null),
        ),
        (
            "user_id",
            Value::from(user_id.unwrap_or_else(|| "unknown".into())),
        ),
        ("customer_id", Value::from(p.customer_id)),
        ("email", Value::from(p.email)),
        ("recipient", Value::from(p.recipient)),
        ("cio_id", Value::from(p.cio_id)),
        ("delivery_id", Value::from(text(data.get("delivery_id")))),
        (
            "lookup",
            p.lookup
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
    ctx
}
