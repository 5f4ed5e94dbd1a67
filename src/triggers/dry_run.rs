//! A dry run of the trigger table: what each trigger would do with one event, without recording it or
//! calling anyone. The console's "send test event" form shows this.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{config::Enrichment, Decision, Rendered, Stage, TriggerTable};
use crate::sources::Event;

/// What one trigger would do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    pub trigger: String,
    pub action: &'static str,
    pub outcome: Plan,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Plan {
    /// The Mavera request it would send.
    Send {
        method: &'static str,
        path: &'static str,
        body: Value,
    },
    /// A digest trigger: the event would be gathered under `key`, and the action run once per digest.
    Gather {
        key: String,
        window: String,
        max: u32,
    },
    /// Its `when` condition does not hold for this event.
    Skipped { reason: String },
    /// The event cannot be rendered (the job would be a dead letter).
    Failed { error: String },
}

impl TriggerTable {
    /// Runs one event through every matching trigger. Triggers that enrich with Customer.io use `attributes`
    /// as the customer's profile.
    pub fn dry_run(&self, event: &Event, attributes: &Map<String, Value>) -> Vec<Planned> {
        self.matching(event)
            .map(|trigger| {
                let mut ctx = event.context().clone();
                if trigger.enrich == Some(Enrichment::CustomerioAttributes) {
                    ctx.insert("attributes".into(), Value::Object(attributes.clone()));
                }
                let outcome = self
                    .decide(trigger, ctx, Stage::DryRun)
                    .and_then(|decision| {
                        let ctx = match decision {
                            Decision::Run(ctx) => ctx,
                            Decision::Skip(reason) => return Ok(Plan::Skipped { reason }),
                            Decision::Deferred => unreachable!("a dry run decides every trigger"),
                        };
                        if let Some(digest) = &trigger.digest {
                            return Ok(Plan::Gather {
                                key: self.digest_key(trigger, &ctx)?,
                                window: humantime::format_duration(digest.window).to_string(),
                                max: digest.max,
                            });
                        }
                        Ok(match self.render(trigger, &ctx)? {
                            Rendered::CreatePersona { body } => Plan::Send {
                                method: "POST",
                                path: "/personas",
                                body,
                            },
                            Rendered::Research { message, .. } => Plan::Send {
                                method: "POST",
                                path: "/mave/chat",
                                body: json!({ "message": message }),
                            },
                        })
                    })
                    .unwrap_or_else(|e| Plan::Failed {
                        error: e.to_string(),
                    });
                Planned {
                    trigger: trigger.name.clone(),
                    action: trigger.action.kind(),
                    outcome,
                }
            })
            .collect()
    }
}
