//! The trigger table file as written by people: TOML, unknown keys rejected. See `config/mavera-triggers.toml`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::sources::Source;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerFile {
    /// Client-side limits for the remote APIs; environment variables override them.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// The triggers, tried in order; every trigger that matches an event runs.
    #[serde(default)]
    pub triggers: Vec<TriggerSpec>,
    /// Who is told when work stops (credits exhausted, a budget holding jobs, dead letters, a stale backlog,
    /// an upstream down, a store that cannot write). Without it, alerts go to the log only.
    #[serde(default)]
    pub alerts: AlertsSpec,
}

/// `[alerts]`: each condition is sent once when it starts, again at most once per `repeat` while it lasts,
/// and once more (`recovered`) when it clears.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSpec {
    /// Where alerts go: the same sink types as triggers (log, file, slack, webhook). Sent directly, not
    /// queued in the store, so a store that cannot write still raises its alert. Default: the log.
    pub sinks: Option<Vec<SinkSpec>>,
    /// How often a condition that lasts is sent again (default "1h").
    pub repeat: Option<String>,
    /// `backlog_stale` fires when the oldest pending job is older than this (default "15m").
    pub backlog_age: Option<String>,
    /// `upstream_down` fires when Mavera or Customer.io has failed without a success for this long
    /// (default "5m").
    pub upstream_down: Option<String>,
}

/// `[limits]` (its type lives with the settings it overrides).
pub use crate::config::LimitsSpec;

/// One `[[triggers]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// A unique name: it appears in logs, jobs and metrics.
    pub name: String,
    /// `segment` or `customerio`.
    pub source: Source,
    /// What to match: a Segment track event's name (or a type such as `identify`), a Customer.io metric.
    /// `"*"` matches everything from the source.
    pub events: Vec<String>,
    /// Customer.io only: restrict to these object types (`customer`, `email`, `sms`…). Empty = any.
    #[serde(default)]
    pub object_types: Vec<String>,
    /// A condition (a minijinja expression over the event) that must be true for the trigger to fire.
    pub when: Option<String>,
    /// `customerio_attributes`: look the person up in the Customer.io App API first; the answer is available
    /// to `vars`, `when` and the action as `attributes`.
    pub enrich: Option<Enrichment>,
    /// Named values computed (in order) before `when` and the action, e.g. a persona type.
    #[serde(default)]
    pub vars: toml::Table,
    /// At most one Mavera call per user for this trigger within this time (e.g. "24h", "30m"). Events held
    /// back are recorded as `held` jobs with the reason; an operator's replay is not held back.
    pub cooldown: Option<String>,
    /// At most this many Mavera calls for this trigger per clock hour / UTC day.
    pub budget: Option<BudgetSpec>,
    /// Where outcomes go (default: the log). Each delivery is a durable job with retries.
    pub sinks: Option<Vec<SinkSpec>>,
    /// Gather matching events and run the action once per group (`[triggers.digest]`), instead of once per
    /// event: one Mave call for twenty churns of one persona type.
    pub digest: Option<DigestSpec>,
    /// Set `false` to keep a trigger in the file without running it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Action: create a Mavera persona (`POST /personas`).
    pub create_persona: Option<PersonaSpec>,
    /// Action: ask Mave for a research brief (`POST /mave/chat`).
    pub research: Option<ResearchSpec>,
}

fn yes() -> bool {
    true
}

/// One destination for a trigger's outcomes. Strings may name environment variables as `${NAME}` (read when
/// a delivery is made, checked at start-up), so webhook URLs and secrets stay out of the file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkSpec {
    /// The server's log: the brief in full (the default).
    Log,
    /// JSON Lines, one object per outcome, appended to `path`.
    File { path: String },
    /// A Slack incoming webhook: the brief as Slack blocks, cut to Slack's limits.
    Slack { webhook_url: String },
    /// A JSON POST to any URL, signed with HMAC-SHA256 when `secret` is set.
    Webhook { url: String, secret: Option<String> },
    /// Write the outcome back to the person in Customer.io (Track API): `attributes` (templates) update the
    /// profile, `event` records an event carrying the brief. Needs `CIO_SITE_ID` and `CIO_TRACK_API_KEY`.
    Customerio {
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        attributes: BTreeMap<String, String>,
        event: Option<String>,
        /// Extra event data (templates), beside the brief's fields.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        data: BTreeMap<String, String>,
    },
    /// Write the outcome back to Segment (HTTP Tracking API): `traits` (templates) in an `identify`, and
    /// optionally a `track` of `event` with the outcome as properties. Needs `SEGMENT_WRITE_KEY`.
    Segment {
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        traits: BTreeMap<String, String>,
        event: Option<String>,
        /// Extra track properties (templates), beside the outcome's fields.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        data: BTreeMap<String, String>,
    },
}

/// Which kind of sink, without its settings: what a delivery job records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    Log,
    File,
    Slack,
    Webhook,
    Customerio,
    Segment,
}

impl SinkKind {
    pub const ALL: [SinkKind; 6] = [
        SinkKind::Log,
        SinkKind::File,
        SinkKind::Slack,
        SinkKind::Webhook,
        SinkKind::Customerio,
        SinkKind::Segment,
    ];

    /// The sink's `type` in the file, logs and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Log => "log",
            SinkKind::File => "file",
            SinkKind::Slack => "slack",
            SinkKind::Webhook => "webhook",
            SinkKind::Customerio => "customerio",
            SinkKind::Segment => "segment",
        }
    }
}

impl From<&SinkSpec> for SinkKind {
    fn from(spec: &SinkSpec) -> Self {
        match spec {
            SinkSpec::Log => SinkKind::Log,
            SinkSpec::File { .. } => SinkKind::File,
            SinkSpec::Slack { .. } => SinkKind::Slack,
            SinkSpec::Webhook { .. } => SinkKind::Webhook,
            SinkSpec::Customerio { .. } => SinkKind::Customerio,
            SinkSpec::Segment { .. } => SinkKind::Segment,
        }
    }
}

impl SinkSpec {
    /// The sink's name in job actions, logs and the console.
    pub fn kind(&self) -> &'static str {
        SinkKind::from(self).as_str()
    }

    /// The templates a write-back renders from the outcome: (group, key, template source).
    pub fn templates(&self) -> Vec<(&'static str, &str, &str)> {
        fn group<'a>(
            name: &'static str,
            map: &'a BTreeMap<String, String>,
        ) -> Vec<(&'static str, &'a str, &'a str)> {
            map.iter()
                .map(|(k, v)| (name, k.as_str(), v.as_str()))
                .collect()
        }
        match self {
            SinkSpec::Customerio {
                attributes, data, ..
            } => [group("attributes", attributes), group("data", data)].concat(),
            SinkSpec::Segment { traits, data, .. } => {
                [group("traits", traits), group("data", data)].concat()
            }
            _ => Vec::new(),
        }
    }
}

/// `[triggers.digest]`: `window = "1h"`, `max = 20`, `by = "{{ persona_type }}"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestSpec {
    /// How long a digest gathers, from its first event (a duration: `30m`, `1h`, `1d`).
    pub window: String,
    /// A digest closes early when it holds this many events (default 50).
    pub max: Option<u32>,
    /// What events are grouped by: a template over the event (after `vars` and enrichment), e.g.
    /// `{{ persona_type }}`. Default: one digest for the whole trigger.
    pub by: Option<String>,
}

/// `budget = { per_hour = 100, per_day = 1000 }`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub per_hour: Option<u64>,
    pub per_day: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enrichment {
    CustomerioAttributes,
}

/// `[triggers.create_persona]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaSpec {
    /// The persona's name (Mavera allows 2–100 characters).
    pub name: String,
    pub description: String,
    /// Further request fields sent as they are (strings are templates), e.g. `type`, `pipeline_type`.
    #[serde(default)]
    pub fields: toml::Table,
}

/// `[triggers.research]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResearchSpec {
    /// The question for Mave.
    pub message: String,
    /// A headline for the brief when it is reported (e.g. `CHURN ALERT: …`).
    pub title: Option<String>,
    /// A line of key facts under the headline.
    pub summary: Option<String>,
}

/// `${NAME}` in a sink setting, replaced by the environment variable's value.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{text}` opens `${{` without closing it"))?;
        let name = &after[..end];
        let value = env(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every string setting of a sink, for start-up checks.
pub fn settings_of(spec: &SinkSpec) -> Vec<&str> {
    match spec {
        SinkSpec::Log => vec![],
        SinkSpec::File { path } => vec![path],
        SinkSpec::Slack { webhook_url } => vec![webhook_url],
        SinkSpec::Webhook { url, secret } => {
            let mut v = vec![url.as_str()];
            v.extend(secret.as_deref());
            v
        }
        SinkSpec::Customerio { .. } | SinkSpec::Segment { .. } => vec![],
    }
}
