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
