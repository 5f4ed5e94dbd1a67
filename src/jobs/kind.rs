//! What a job is, typed: its kind (a trigger's action or a sink delivery), the progress it keeps between
//! attempts, and why a cost guard holds it back. `row.rs` converts the kind to and from its stored text.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Guard;
use crate::triggers::{config::SinkKind, ActionKind};

/// What a job does: a trigger's action, or the delivery of one outcome to one sink. Stored in the `action`
/// column as the action's name or `sink:<type>` (the conversion is in `row.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Action(ActionKind),
    Delivery(SinkKind),
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for JobKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Steps a job has done, kept between attempts so that a retry does not repeat them (the `progress`
/// column's JSON object; the stores' SQL sets `guards_taken` and `replay` by these names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// The Customer.io profile the enrichment looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
    /// The job holds its cost guards: taken in the same transaction as this mark, never charged again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guards_taken: bool,
    /// An operator's replay, which no cooldown holds back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// When a persona create was sent and not yet answered: the persona may exist in Mavera.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_sent_ms: Option<i64>,
}

impl Progress {
    /// The patch ([`JobStore::merge_progress`]) that records the enrichment's result.
    pub fn enriched(attributes: &Value) -> Value {
        serde_json::json!({ "attributes": attributes })
    }

    /// The patch that marks a persona create as sent at `at_ms`, or (`None`) answered.
    pub fn create_sent(at_ms: Option<u64>) -> Value {
        serde_json::json!({ "create_sent_ms": at_ms })
    }
}

/// Why a cost guard holds a job back: which guard, and the reason recorded with the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    Cooldown(String),
    Budget(String),
}

impl Hold {
    pub fn reason(&self) -> &str {
        match self {
            Hold::Cooldown(reason) | Hold::Budget(reason) => reason,
        }
    }

    pub fn into_reason(self) -> String {
        match self {
            Hold::Cooldown(reason) | Hold::Budget(reason) => reason,
        }
    }
}

impl Guard {
    /// How a refusal by this guard reads, and which kind of guard it was.
    pub fn refusal(&self) -> Hold {
        match self {
            Guard::Cooldown {
                trigger,
                user,
                window_ms,
            } => Hold::Cooldown(format!(
                "cooldown: trigger `{trigger}` already called Mavera for user `{user}` within the last {}",
                humantime::format_duration(std::time::Duration::from_millis(*window_ms))
            )),
            Guard::Budget { label, .. } => Hold::Budget(format!("budget spent: {label}")),
        }
    }
}
