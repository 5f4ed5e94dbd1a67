//! The trigger table: the config file turned, once at start-up, into matchers and compiled templates.
//!
//! Templates use minijinja over the event's context (see `sources/`): `properties`, `traits`, `user_id`,
//! `event`, timestamps, and for Customer.io `metric`, `object_type`, `data`, `attributes`. A missing value
//! renders as `unknown`, like the seed. Every template and condition is compiled (and rendered once against
//! an empty event) when the table is loaded, so a typo is reported at start-up, naming the trigger and key.
//!
//! Files: `types` (a compiled trigger), `template` (how values print), `compile` (loading and checks),
//! `render` (templates at run time), `decide` (vars → when, the one path of intake, job and dry run).

pub mod config;

mod compile;
mod decide;
mod dry_run;
mod render;
mod template;
mod types;

pub use decide::{Decision, Stage};
pub use dry_run::{Plan, Planned};
pub use template::{clean_value, FENCE_NOTE, MAX_VALUE_CHARS, PERSONA_NAME_CHARS};
pub use types::{
    Action, ActionKind, AlertSettings, ConfigError, Digest, RenderError, Rendered, Trigger,
    DEFAULT_DIGEST_MAX,
};

use std::sync::Arc;

use minijinja::Environment;

pub use config::{Enrichment, TriggerFile};
use types::Condition;

use crate::sources::{Event, Source};

/// The compiled table.
pub struct TriggerTable {
    env: Environment<'static>,
    /// Per template, the context's top-level names it reads ([`render::reads_of`]); a template missing
    /// here is given the whole context.
    reads: std::collections::HashMap<String, Box<[String]>>,
    triggers: Vec<Arc<Trigger>>,
    pub limits: config::LimitsSpec,
    pub alerts: AlertSettings,
    pub path: String,
}

impl std::fmt::Debug for TriggerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerTable")
            .field("path", &self.path)
            .field("triggers", &self.triggers)
            .finish()
    }
}

impl TriggerTable {
    pub fn triggers(&self) -> &[Arc<Trigger>] {
        &self.triggers
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Trigger>> {
        self.triggers.iter().find(|t| t.name == name)
    }

    /// The triggers an event matches, in file order.
    pub fn matching<'a>(&'a self, event: &'a Event) -> impl Iterator<Item = &'a Arc<Trigger>> + 'a {
        self.triggers.iter().filter(move |t| t.matches(event))
    }

    /// True when any enabled trigger listens to `source`.
    pub fn uses_source(&self, source: Source) -> bool {
        self.triggers.iter().any(|t| t.source == source)
    }

    /// True when any enabled trigger sends outcomes to a sink of this kind (`customerio`, `segment`…).
    pub fn uses_sink(&self, kind: &str) -> bool {
        self.triggers
            .iter()
            .any(|t| t.sinks.iter().any(|s| s.kind() == kind))
    }

    pub fn uses_enrichment(&self) -> bool {
        self.triggers.iter().any(|t| t.enrich.is_some())
    }
}

#[cfg(test)]
mod tests;
