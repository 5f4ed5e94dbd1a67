//! The actions: what a claimed job does. A trigger's job enriches (once), decides, renders, passes its cost
//! guards and calls Mavera (`persona`: create or update; `mave/chat`: research), then hands its outcome to
//! the sinks; a delivery job sends one outcome to one sink. The worker knows none of this: it runs a
//! [`JobHandler`], and `startup` gives it this [`Runner`].

mod guards;
mod persona;
mod prepare;

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{json, Value};

use crate::{
    clients::{customerio::CustomerIoClient, mavera::MaveraClient, UpstreamError},
    jobs::{
        worker::{JobHandler, Step},
        Job, JobKind, JobStore, StoreError,
    },
    metrics::Metrics,
    sinks,
    triggers::{config::SinkSpec, Rendered, TriggerTable},
};

/// An upstream failure ends the attempt: retried when it is transient, final otherwise.
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
    /// `MAVERA_DAILY_BUDGET`: calls per UTC day, all triggers together.
    pub daily_budget: Option<u64>,
    pub metrics: Arc<Metrics>,
    /// The shared HTTP client, for sink deliveries.
    pub http: reqwest::Client,
    /// Where the `customerio` and `segment` sinks write.
    pub write_back: Arc<sinks::writeback::WriteBack>,
}

#[async_trait::async_trait]
impl JobHandler for Runner {
    async fn run(&self, job: &Job, store: &dyn JobStore) -> Step {
        if let JobKind::Delivery(_) = job.new.action {
            return match sinks::deliver(&self.http, &self.write_back, job).await {
                Ok(outcome) => Step::Done(outcome, Vec::new()),
                Err(sinks::SinkError::Upstream(e)) => e.into(),
                Err(sinks::SinkError::Transient(e)) => Step::Retry {
                    error: e,
                    after: None,
                },
                Err(sinks::SinkError::Final(e)) => Step::Dead(e),
            };
        }
        let table = self.table.load_full();
        let Some(trigger) = table.get(&job.new.trigger) else {
            return Step::Dead(format!(
                "trigger `{}` is no longer in the trigger table",
                job.new.trigger
            ));
        };
        let ctx = match job.new.context.get("digest_id").and_then(Value::as_i64) {
            // A closed digest: the action runs once, over every event it gathered.
            Some(digest_id) => match store.digest_events(digest_id).await {
                Ok(events) => {
                    let mut ctx = job.new.context.clone();
                    ctx.insert("trigger".into(), json!(trigger.name));
                    ctx.insert("events".into(), Value::Array(events));
                    ctx
                }
                Err(e) => return retry_store(e),
            },
            None => {
                let ctx = match self.decide(job, store, &table, trigger).await {
                    Ok(ctx) => ctx,
                    Err(step) => return step,
                };
                if let Some(digest) = &trigger.digest {
                    return self.gather(job, store, &table, trigger, digest, ctx).await;
                }
                ctx
            }
        };
        let rendered = match table.render(trigger, &ctx) {
            Ok(r) => r,
            Err(e) => return Step::Dead(e.to_string()),
        };
        if let Err(step) = self.pass_guards(job, store, trigger).await {
            return step;
        }
        let outcome = match rendered {
            Rendered::CreatePersona { body } => match self.persona(job, store, body).await {
                Ok(outcome) => outcome,
                Err(step) => return step,
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
        let mut outcome = outcome;
        if let Some(digest_id) = ctx.get("digest_id") {
            outcome["digest"] = json!({
                "id": digest_id,
                "key": ctx.get("key"),
                "events": ctx.get("count"),
            });
        }
        let credits = outcome["credits_used"]
            .as_f64()
            .or(outcome["credits_charged"].as_f64());
        if let Some(credits) = credits {
            self.metrics.mavera_credits_used.inc_by(credits);
        }
        if trigger.sinks.contains(&SinkSpec::Log) {
            sinks::log::report(job, &outcome);
        }
        let mut view = outcome.clone();
        view["job_id"] = json!(job.id);
        view["trigger"] = json!(trigger.name);
        let rendered = table.render_sinks(trigger, &ctx, &view);
        let deliveries = sinks::deliveries(job, &trigger.sinks, &outcome, &rendered);
        Step::Done(outcome, deliveries)
    }
}

fn retry_store(e: StoreError) -> Step {
    Step::Retry {
        error: e.to_string(),
        after: None,
    }
}
