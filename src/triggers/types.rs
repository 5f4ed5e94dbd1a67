//! The trigger table's runtime types: a compiled trigger, its action and digest, and the errors of loading
//! and rendering.

use serde_json::Value;

use super::config::{self, Enrichment};
use crate::sources::{Event, Source};

/// A problem with the trigger table. Each message names the file, and the trigger and key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the trigger table ({source}). Fix: point MAVERA_TRIGGERS_CONFIG at the file, or copy config/mavera-triggers.toml from the repository")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: trigger `{trigger}`, key `{key}`: {problem}. Fix: {fix}")]
    Invalid {
        path: String,
        trigger: String,
        key: String,
        problem: String,
        fix: String,
    },
}

/// What a trigger does once it fires.
#[derive(Debug)]
pub enum Action {
    CreatePersona {
        name: String,
        description: String,
        /// Extra request fields; string leaves are template names.
        fields: Value,
    },
    Research {
        message: String,
        title: Option<String>,
        summary: Option<String>,
    },
}

impl Action {
    /// The action's name in jobs, logs and the console.
    pub fn kind(&self) -> &'static str {
        ActionKind::from(self).as_str()
    }
}

/// Which action a trigger runs, without its templates: what a job records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    CreatePersona,
    Research,
}

impl ActionKind {
    pub const ALL: [ActionKind; 2] = [ActionKind::CreatePersona, ActionKind::Research];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::CreatePersona => "create_persona",
            ActionKind::Research => "research",
        }
    }
}

impl From<&Action> for ActionKind {
    fn from(action: &Action) -> Self {
        match action {
            Action::CreatePersona { .. } => ActionKind::CreatePersona,
            Action::Research { .. } => ActionKind::Research,
        }
    }
}

/// A trigger's `when`: the expression as written, and the template it was compiled into at load (an `if`
/// around the expression, kept in the table's environment like every other template).
#[derive(Debug)]
pub(super) struct Condition {
    pub(super) source: String,
    pub(super) template: String,
}

/// An action rendered for one event: what will be sent to Mavera.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    CreatePersona {
        body: Value,
    },
    Research {
        message: String,
        title: Option<String>,
        summary: Option<String>,
    },
}

/// One trigger, ready to run.
#[derive(Debug)]
pub struct Trigger {
    pub name: String,
    pub source: Source,
    pub events: Vec<String>,
    pub object_types: Vec<String>,
    pub enrich: Option<Enrichment>,
    /// (var name, template name), rendered in order.
    pub(super) vars: Vec<(String, String)>,
    /// `when`, compiled once at load.
    pub(super) when: Option<Condition>,
    pub action: Action,
    /// At most one call per user within this time.
    pub cooldown: Option<std::time::Duration>,
    pub budget: config::BudgetSpec,
    /// Where outcomes go; the log when the file names none.
    pub sinks: Vec<config::SinkSpec>,
    /// Per sink, its write-back templates: (group, key, template name).
    pub(super) sink_templates: Vec<Vec<(&'static str, String, String)>>,
    /// Gathers events and runs the action once per digest.
    pub digest: Option<Digest>,
}

/// A trigger's digest, compiled.
#[derive(Debug, Clone)]
pub struct Digest {
    pub window: std::time::Duration,
    pub max: u32,
    /// The template the key is rendered from (`None`: one digest for the trigger).
    pub(super) by: Option<String>,
    /// As written, for check-config and the console.
    pub by_source: Option<String>,
}

/// A digest closes early at this many events unless `max` says otherwise.
pub const DEFAULT_DIGEST_MAX: u32 = 50;

impl Trigger {
    pub fn matches(&self, event: &Event) -> bool {
        self.source == event.source
            && self.events.iter().any(|e| e == "*" || *e == event.name)
            && (self.object_types.is_empty() || self.object_types.contains(&event.kind))
    }

    /// With enrichment, `vars` and `when` need the looked-up attributes, so they are decided in the job.
    /// No `vars` to add and no `when` to hold: it acts on every event it matches.
    pub fn is_unconditional(&self) -> bool {
        self.vars.is_empty() && self.when.is_none() && self.enrich.is_none()
    }

    pub fn decides_in_job(&self) -> bool {
        self.enrich.is_some()
    }

    pub fn condition_source(&self) -> Option<&str> {
        self.when.as_ref().map(|w| w.source.as_str())
    }
}

/// `[alerts]`, checked and with its durations parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    pub sinks: Vec<config::SinkSpec>,
    pub repeat: std::time::Duration,
    pub backlog_age: std::time::Duration,
    pub upstream_down: std::time::Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            sinks: vec![config::SinkSpec::Log],
            repeat: std::time::Duration::from_secs(3600),
            backlog_age: std::time::Duration::from_secs(15 * 60),
            upstream_down: std::time::Duration::from_secs(5 * 60),
        }
    }
}

/// A rendering or evaluation failure at run time (a bad value in an event). Final for the job.
#[derive(Debug, thiserror::Error)]
#[error("trigger `{trigger}`: {what}: {message}")]
pub struct RenderError {
    pub trigger: String,
    pub what: String,
    pub message: String,
}
