//! The fast path: a Segment event read from its head (the fields dedupe and trigger matching need), its
//! `context`, `properties` and `traits` skipped over, not built. Anything unusual goes the full way
//! (`parse.rs`), which names what is wrong.

use serde_json::value::RawValue;

use super::parse::who_of;
use crate::sources::{content_id, json::reads_as_value, Event, Source};

/// The fields of a Segment event that dedupe and trigger matching need, and those whose type [`to_event`](super::parse)
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
    context: Option<ContextHead<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "receivedAt", borrow, default)]
    received_at: Option<&'a RawValue>,
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "originalTimestamp", borrow, default)]
    original_timestamp: Option<&'a RawValue>,
}

/// `context`, read in the same pass as the head for its `traits` alone (the rest skipped over). Only an
/// object reads: anything else, a duplicate `traits` included, fails the head and goes the full way.
struct ContextHead<'a> {
    traits: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for ContextHead<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Traits,
            #[serde(other)]
            Other,
        }
        struct Object<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Object<'a> {
            type Value = ContextHead<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            // No `visit_seq`: serde would read a struct from an array too.
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut traits: Option<Option<&'a RawValue>> = None;
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Traits if traits.is_some() => {
                            return Err(serde::de::Error::duplicate_field("traits"))
                        }
                        Field::Traits => traits = Some(map.next_value()?),
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(ContextHead {
                    traits: traits.flatten(),
                })
            }
        }
        deserializer.deserialize_map(Object(std::marker::PhantomData))
    }
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

/// The event from its head alone, when every field it has is of the type [`to_event`](super::parse) wants; `None` sends
/// the event through [`to_event`](super::parse), which reads all of it and names what is wrong.
pub(super) fn from_head(raw: &str) -> Option<Event> {
    // Serde reads a struct from a JSON array too (its fields in order): only an object is an event.
    if !raw.trim_start().starts_with('{') || !reads_as_value(raw) {
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
        && head.context.as_ref().is_none_or(|c| is(c.traits, &object))
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
