//! Whether a trigger acts on an event: its `vars`, then its `when`. The intake (on the request path), the
//! job and the console's dry run all decide here, so the three cannot drift apart.

use serde_json::{Map, Value};

use super::{RenderError, Trigger, TriggerTable};

/// Who is deciding, which says whether `when` is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The intake, before the sender is answered: every trigger but one that enriches (its `when` needs the
    /// looked-up attributes, so its job decides).
    Intake,
    /// The job: `when` only for a trigger that enriches (the intake decided the others).
    Job,
    /// The console's dry run: always, with the attributes it was given.
    DryRun,
}

/// What a trigger decides for one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// It acts: the event's context with the trigger's `vars` added.
    Run(Map<String, Value>),
    /// Its `when` does not hold: why, as the job's outcome and the dry run show it.
    Skip(String),
    /// The job decides (an enriching trigger, at the intake).
    Deferred,
}

impl TriggerTable {
    /// Adds the trigger's `vars` to `ctx` and evaluates its `when` where `stage` is the one to decide it.
    pub fn decide(
        &self,
        trigger: &Trigger,
        ctx: Map<String, Value>,
        stage: Stage,
    ) -> Result<Decision, RenderError> {
        let decides_in_job = trigger.decides_in_job();
        if stage == Stage::Intake && decides_in_job {
            return Ok(Decision::Deferred);
        }
        let ctx = self.prepare(trigger, ctx)?;
        let evaluate = stage != Stage::Job || decides_in_job;
        if evaluate && !self.condition_holds(trigger, &ctx)? {
            return Ok(Decision::Skip(format!(
                "condition not met: `{}`",
                trigger.condition_source().unwrap_or_default()
            )));
        }
        Ok(Decision::Run(ctx))
    }
}
