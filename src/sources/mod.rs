//! Per-provider payloads and signature schemes, normalised into one [`Event`].
//!
//! A provider file owns three things: how its signature is checked (on raw bytes, before any parsing), what its
//! payload looks like, and how that payload becomes an [`Event`] with a dedupe key and a template context.
//! Adding a provider means one new file here and one route line.

pub mod customerio;
pub mod segment;
pub mod signature;

use serde_json::{Map, Value};

/// Which sender an event came from. Also the name of its route and of its dedupe key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Segment,
    #[serde(rename = "customerio")]
    CustomerIo,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Segment => "segment",
            Source::CustomerIo => "customerio",
        }
    }

    pub fn all() -> [Source; 2] {
        [Source::Segment, Source::CustomerIo]
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "segment" => Ok(Source::Segment),
            "customerio" | "customer.io" | "cio" => Ok(Source::CustomerIo),
            other => Err(format!(
                "unknown source `{other}`: use `segment` or `customerio`"
            )),
        }
    }
}

/// The `context.library.name` this server puts on what it sends to Segment.
pub const OWN_LIBRARY: &str = "mavera-triggers";

/// One verified, parsed event, ready for dedupe and trigger matching.
#[derive(Debug, Clone)]
pub struct Event {
    pub source: Source,
    /// The sender's id for this event (`messageId`, `event_id`), or `content:<sha256>` when it has none.
    pub id: String,
    /// What triggers match on: a Segment track event's name (else its type), a Customer.io metric.
    pub name: String,
    /// A Segment type (`track`, `identify`…) or a Customer.io object type (`email`, `customer`…).
    pub kind: String,
    /// The person the event is about, when known.
    pub user_id: Option<String>,
    /// Whom the event is about, as its log lines say it (`userId=… anonymousId=…`; emails masked).
    pub who: String,
    /// Everything templates and conditions may read: see [`Event::context`].
    pub(crate) context: std::sync::OnceLock<Map<String, Value>>,
    /// The event's JSON exactly as received (for a batch, its element), kept for replay.
    pub raw: String,
}

impl Event {
    /// Everything templates and conditions may read. A Segment event is read in full only here, when a
    /// trigger wants it: a re-delivery or an event no trigger matches is answered from its head alone.
    pub fn context(&self) -> &Map<String, Value> {
        self.context.get_or_init(|| match self.source {
            Source::Segment => segment::full_context(&self.raw),
            Source::CustomerIo => Map::new(),
        })
    }

    /// True for a Segment event this server sent itself (a write-back that Segment forwarded here again):
    /// its `context.library.name` is ours. Such an event is acknowledged and counted, never triggered on.
    pub fn is_own_write_back(&self) -> bool {
        self.source == Source::Segment
            && self.raw.contains(OWN_LIBRARY)
            && self.context()["context"]["library"]["name"].as_str() == Some(OWN_LIBRARY)
    }

    /// The key that is remembered to drop re-deliveries: one mechanism, one key space per source.
    pub fn dedupe_key(&self) -> String {
        format!("{}:{}", self.source, self.id)
    }
}

/// Why a part of a genuine (signed) request is not a usable event. It is answered 2xx and kept with this
/// reason for the console, never run: Segment never re-sends a batch refused with a 4xx, and Customer.io
/// holds back its whole queue for an hour after one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An element of a Segment batch that is not a Segment event.
    Refused(String),
    /// A Customer.io body that is not an event we can read.
    Unprocessable(String),
}

impl Refusal {
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Refused(why) | Refusal::Unprocessable(why) => why,
        }
    }
}

/// A part of a genuine request that is not a usable event, as received, with why.
#[derive(Debug, Clone)]
pub struct Unusable {
    pub source: Source,
    /// `content:<sha256>` of its bytes: a re-delivery lands on the same row.
    pub id: String,
    /// Its name, type or metric when one can be read, else `-`.
    pub name: String,
    /// Whom it is about, when that can be read.
    pub user_id: Option<String>,
    /// Whom it is about, as its log line says it (as [`Event::who`]).
    pub who: String,
    /// Its bytes as received (lossy UTF-8).
    pub raw: String,
    pub refusal: Refusal,
}

/// Why a request was refused. Each maps to one HTTP answer in `error.rs`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RejectReason {
    /// Missing, malformed or wrong signature, or a stale timestamp. The detail is for our logs only.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// The body is not JSON, or not an event of this source.
    #[error("{0}")]
    BadRequest(String),
}

/// The body with every `\uD800`–`\uDFFF` escape that is not half of a valid surrogate pair rewritten to
/// `\uFFFD` (the replacement character), so that a strict parser reads it. Node's `JSON.stringify`, which
/// Segment uses to sign and send, writes a lone surrogate that way: valid JSON text that `serde_json` refuses.
/// The rewrite keeps every byte's position (an escape stays six bytes), so a part of the result is found at
/// the same offsets in the body as received, which is what a signature covers. A body with no such escape is
/// returned as it is, without a copy.
pub fn replace_lone_surrogates(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let hex4 = |at: usize| -> Option<u16> {
        let digits = std::str::from_utf8(body.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    let escape_at = |at: usize| body.get(at) == Some(&b'\\') && body.get(at + 1) == Some(&b'u');
    // The fast path: no `\uD8`–`\uDF` anywhere (or only inside a `\\`), nothing to copy.
    let maybe = body.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && (w[2] | 0x20) == b'd'
            && matches!(w[3] | 0x20, b'8'..=b'9' | b'a'..=b'f')
    });
    if !maybe {
        return body.into();
    }
    let mut out: Option<Vec<u8>> = None;
    let mut in_string = false;
    let mut i = 0;
    while i < body.len() {
        match (in_string, body[i]) {
            (false, b'"') => in_string = true,
            (false, _) => {}
            (true, b'"') => in_string = false,
            (true, b'\\') if escape_at(i) => {
                let unit = hex4(i + 2);
                let high = unit.is_some_and(|u| (0xD800..=0xDBFF).contains(&u));
                let low = unit.is_some_and(|u| (0xDC00..=0xDFFF).contains(&u));
                let paired = high
                    && escape_at(i + 6)
                    && hex4(i + 8).is_some_and(|u| (0xDC00..=0xDFFF).contains(&u));
                if paired {
                    i += 12;
                    continue;
                }
                if high || low {
                    out.get_or_insert_with(|| body.to_vec())[i + 2..i + 6].copy_from_slice(b"fffd");
                }
                i += 6;
                continue;
            }
            // Any other escape: skip the escaped character (a `\"` does not end the string).
            (true, b'\\') => {
                i += 2;
                continue;
            }
            (true, _) => {}
        }
        i += 1;
    }
    match out {
        Some(repaired) => repaired.into(),
        None => body.into(),
    }
}

/// `key=value` pairs of the ids that are present, emails masked: whom an event is about, for its log lines.
pub(crate) fn who(ids: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = ids
        .iter()
        .filter_map(|(key, value)| {
            value.map(|v| format!("{key}={}", crate::telemetry::mask_email(v)))
        })
        .collect();
    if parts.is_empty() {
        "unknown".into()
    } else {
        parts.join(" ")
    }
}

/// The string form of a JSON id that may be a string or a number; `null` and `""` are absent.
pub(crate) fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `content:` and the first 128 bits of the body's SHA-256, for events that carry no id of their own.
/// Senders re-deliver the same bytes, so a retry of an id-less event still lands on the same key.
pub(crate) fn content_id(raw: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(raw);
    format!("content:{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::replace_lone_surrogates;
    use std::borrow::Cow;

    fn repaired(json: &str) -> String {
        String::from_utf8(replace_lone_surrogates(json.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn lone_surrogate_escapes_become_the_replacement_character_and_pairs_stay() {
        for (body, want) in [
            (r#"{"a":"\ud83d"}"#, r#"{"a":"\ufffd"}"#),
            (r#"{"a":"x\uDC00y"}"#, r#"{"a":"x\ufffdy"}"#),
            (r#"{"a":"\ud83d\u0041"}"#, r#"{"a":"\ufffd\u0041"}"#),
            (
                r#"{"a":"\ud83d\ud83d\ude00"}"#,
                r#"{"a":"\ufffd\ud83d\ude00"}"#,
            ),
            (r#"["\udc00\ud800"]"#, r#"["\ufffd\ufffd"]"#),
        ] {
            let got = repaired(body);
            assert_eq!(got, want, "{body}");
            assert_eq!(got.len(), body.len(), "positions are kept");
            let value: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert!(value.to_string().contains('\u{FFFD}'), "{value}");
        }
    }

    #[test]
    fn bodies_without_a_lone_surrogate_are_not_copied() {
        for body in [
            r#"{"a":"\ud83d\ude00 ok"}"#,
            r#"{"a":"\\ud800 is text, not an escape"}"#,
            r#"{"a":"plain","b":"\"\ud8"}"#,
            "",
        ] {
            assert!(
                matches!(replace_lone_surrogates(body.as_bytes()), Cow::Borrowed(_)),
                "{body}"
            );
        }
    }
}
