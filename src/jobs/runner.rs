//! Runs one job: enrich (once), decide, render, call Mavera, report. Returns what the worker should record.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use serde_json::{json, Map, Value};

use super::{Job, JobStore};
use crate::{
    clients::{
        customerio::{CustomerIoClient, Lookup},
        mavera::MaveraClient,
        UpstreamError,
    },
    sinks,
    triggers::{Enrichment, Rendered, TriggerTable},
};

/// What became of an attempt.
#[derive(Debug)]
pub enum Step {
    Done(Value),
    Retry {
        error: String,
        after: Option<Duration>,
    },
    Dead(String),
}

impl From<UpstreamError> for Step {
    fn from(e: UpstreamError) -> Self {
        if e.is_transient() {
            Step::Retry {
                after: e.retry_after(),
                error: e.to_string(),
            }
        } else {
            Step::Dead(e.to_string())
        }
    }
}

#[derive(Clone)]
pub struct Runner {
    pub table: Arc<ArcSwap<TriggerTable>>,
    pub mavera: MaveraClient,
    pub cio: CustomerIoClient,
}

impl Runner {
    pub async fn run(&self, job: &Job, store: &dyn JobStore) -> Step {
        let table = self.table.load_full();
        let Some(trigger) = table.get(&job.new.trigger) else {
            return Step::Dead(format!(
                "trigger `{}` is no longer in the trigger table",
                job.new.trigger
            ));
        };
        let mut ctx = job.new.context.clone();
        if trigger.enrich == Some(Enrichment::CustomerioAttributes) {
            let attributes = match job.progress.get("attributes") {
                Some(done) => done.clone(),
                None => {
                    let attributes = match self.enrich(job).await {
                        Ok(a) => a,
                        Err(step) => return step,
                    };
                    let mut progress = job.progress.clone();
                    progress.insert("attributes".into(), attributes.clone());
                    if let Err(e) = store.save_progress(job.id, progress).await {
                        return Step::Retry {
                            error: e.to_string(),
                            after: None,
                        };
                    }
                    attributes
                }
            };
            ctx.insert("attributes".into(), attributes);
        }
        let ctx = match table.prepare(trigger, ctx) {
            Ok(ctx) => ctx,
            Err(e) => return Step::Dead(e.to_string()),
        };
        if trigger.decides_in_job() {
            match table.condition_holds(trigger, &ctx) {
                Ok(true) => {}
                Ok(false) => {
                    let reason = format!(
                        "condition not met: `{}`",
                        trigger.condition_source().unwrap_or_default()
                    );
                    tracing::info!(job = job.id, trigger = %trigger.name, user = job.new.user_id.as_deref().unwrap_or("unknown"), "skipped: {reason}");
                    return Step::Done(json!({ "skipped": reason }));
                }
                Err(e) => return Step::Dead(e.to_string()),
            }
        }
        let rendered = match table.render(trigger, &ctx) {
            Ok(r) => r,
            Err(e) => return Step::Dead(e.to_string()),
        };
        let outcome = match rendered {
            Rendered::CreatePersona { body } => match self.mavera.create_persona(&body).await {
                Ok(persona) => json!({
                    "action": "create_persona",
                    "persona_id": persona.id,
                    "name": persona.name.or_else(|| body["name"].as_str().map(str::to_string)),
                    "credits_charged": persona.credits_charged,
                    "dry_run": self.mavera.is_dry_run(),
                }),
                Err(e) => return e.into(),
            },
            Rendered::Research {
                message,
                title,
                summary,
            } => match self.mavera.chat(&message).await {
                Ok(brief) => json!({
                    "action": "research",
                    "title": title,
                    "summary": summary,
                    "customer_id": ctx.get("customer_id").cloned().unwrap_or(Value::Null),
                    "user_id": job.new.user_id,
                    "event": ctx.get("event").cloned().unwrap_or(Value::Null),
                    "persona_type": ctx.get("persona_type").cloned().unwrap_or(Value::Null),
                    "brief": brief.content,
                    "sources": brief.sources,
                    "thread_id": brief.thread_id,
                    "credits_used": brief.usage.and_then(|u| u.credits_used),
                    "dry_run": self.mavera.is_dry_run(),
                }),
                Err(e) => return e.into(),
            },
        };
        sinks::log::report(job, &outcome);
        Step::Done(outcome)
    }

    /// Looks the person up. A missing person (404) is not an error: the trigger's condition decides.
    async fn enrich(&self, job: &Job) -> Result<Value, Step> {
        let lookup = job.new.context.get("lookup");
        let id = lookup.and_then(|l| l["id"].as_str());
        let id_type = lookup.and_then(|l| l["id_type"].as_str()).unwrap_or("id");
        let Some(id) = id else {
            tracing::info!(job = job.id, trigger = %job.new.trigger, "the event names no person (no id, email or cio_id): continuing with empty attributes");
            return Ok(Value::Object(Map::new()));
        };
        match self.cio.attributes(id, id_type).await {
            Ok(Lookup::Found(attributes)) => Ok(Value::Object(attributes)),
            Ok(Lookup::NotFound) => {
                tracing::info!(job = job.id, trigger = %job.new.trigger, customer = %id, id_type, "customer not found in Customer.io (404, deleted or never identified): continuing with empty attributes, the trigger's condition decides");
                Ok(Value::Object(Map::new()))
            }
            Ok(Lookup::Unaddressable) => {
                tracing::warn!(job = job.id, trigger = %job.new.trigger, customer = %id, "this customer id cannot be sent as a URL path segment: continuing with empty attributes");
                Ok(Value::Object(Map::new()))
            }
            Err(e) => {
                tracing::warn!(job = job.id, trigger = %job.new.trigger, customer = %id, error = %e, "attribute look-up failed");
                Err(e.into())
            }
        }
    }
}
