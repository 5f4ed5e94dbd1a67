//! Per-provider payloads and signature schemes, normalised into one [`Event`].
//!
//! A provider owns three things: how its signature is checked (on raw bytes, before any parsing), what its
//! payload looks like, and how that payload becomes an [`Event`] with a dedupe key and a template context. It
//! implements [`Provider`] in its own folder here and takes one line in the registry below; the routes, the
//! console's dry run and `send` ask it, never which source it is. Shared pieces: [`verify`] (the verdict on a
//! signature), [`signature`] (HMAC on raw bytes), [`json`] (where senders' JSON and `serde_json` disagree).

pub mod customerio;
pub mod json;
pub mod provider;
pub mod segment;
pub mod signature;
pub mod verify;

use serde_json::{Map, Value};

pub use provider::{Parsed, Provider, SourceSettings};
pub use verify::{Authenticity, Verified};

/// Makes [`Source`] and [`Source::provider`] from one line per provider: `Variant = "name" (| "alias")* =>
/// provider`. The name is the route (`/name`), the dedupe key space and what the trigger table says.
macro_rules! providers {
    ($($variant:ident = $name:literal $(| $alias:literal)* => $provider:expr,)+) => {
        /// Which sender an event came from. Also the name of its route and of its dedupe key space.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum Source {
            $(#[serde(rename = $name)] $variant,)+
        }

        impl Source {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Source::$variant => $name,)+
                }
            }

            /// Every source, in the registry's order.
            pub fn all() -> &'static [Source] {
                &[$(Source::$variant,)+]
            }

            /// The provider that verifies, parses and describes this source's requests.
            pub fn provider(self) -> &'static dyn Provider {
                match self {
                    $(Source::$variant => &$provider,)+
                }
            }

            fn named(name: &str) -> Option<Source> {
                match name {
                    $($name $(| $alias)* => Some(Source::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

providers! {
    Segment = "segment" => segment::Segment,
    CustomerIo = "customerio" | "customer.io" | "cio" => customerio::CustomerIo,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::named(s).ok_or_else(|| {
            let names: Vec<String> = Source::all().iter().map(|s| format!("`{s}`")).collect();
            let (last, others) = names.split_last().expect("a provider is registered");
            let choice = if others.is_empty() {
                last.clone()
            } else {
                format!("{} or {last}", others.join(", "))
            };
            format!("unknown source `{s}`: use {choice}")
        })
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
        self.context
            .get_or_init(|| self.source.provider().full_context(&self.raw))
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
