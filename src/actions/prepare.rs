//! Before the action: the enrichment (looked up once, kept in the job's progress), the trigger's decision,
//! and, for a digest trigger, gathering the event into its digest.

use serde_json::{json, Map, Value};

use super::{retry_store, Runner};
use crate::{
    clients::customerio::Lookup,
    jobs::{digest, now_ms, worker::Step, Job, JobStore, Progress},
    triggers::{Decision, Digest, Enrichment, Stage, Trigger, TriggerTable},
};

impl Runner {
    /// Enriches (once), computes `vars` and, where the intake could not, evaluates `when`: the event's
    /// context, or the step that ends the job (a skip, a retry, a dead letter).
    pub(super) async fn decide(
        &self,
        job: &Job,
        store: &dyn JobStore,
        table: &TriggerTable,
        trigger: &Trigger,
    ) -> Result<Map<String, Value>, Step> {
        let mut ctx = job.new.context.clone();
        if trigger.enrich == Some(Enrichment::CustomerioAttributes) {
            let attributes = match &job.progress.attributes {
                Some(done) => done.clone(),
                None => {
                    let attributes = match self.enrich(job).await {
                        Ok(a) => a,
                        Err(step) => return Err(step),
                    };
                    let patch = Progress::enriched(&attributes);
                    if let Err(e) = store.merge_progress(job.id, patch).await {
                        return Err(Step::Retry {
                            error: e.to_string(),
                            after: None,
                        });
                    }
                    attributes
                }
            };
            ctx.insert("attributes".into(), attributes);
        }
        match table.decide(trigger, ctx, Stage::Job) {
            Ok(Decision::Run(ctx)) => Ok(ctx),
            Ok(Decision::Skip(reason)) => {
                tracing::info!(job = job.id, trigger = %trigger.name, user = job.new.user_id.as_deref().unwrap_or("unknown"), "skipped: {reason}");
                Err(Step::Done(json!({ "skipped": reason }), Vec::new()))
            }
            Ok(Decision::Deferred) => unreachable!("a job decides its own trigger"),
            Err(e) => Err(Step::Dead(e.to_string())),
        }
    }

    /// Adds a decided event to its digest. The job ends there; the digest's own job calls Mavera once.
    pub(super) async fn gather(
        &self,
        job: &Job,
        store: &dyn JobStore,
        table: &TriggerTable,
        trigger: &Trigger,
        digest: &Digest,
        ctx: Map<String, Value>,
    ) -> Step {
        let key = match table.digest_key(trigger, &ctx) {
            Ok(key) => key,
            Err(e) => return Step::Dead(e.to_string()),
        };
        let gather = digest::Gather {
            trigger: trigger.name.clone(),
            key: key.clone(),
            source: job.new.source,
            action: trigger.action.kind().to_string(),
            window_ms: digest.window.as_millis() as u64,
            max: digest.max,
            job_id: job.id,
            user_id: job.new.user_id.clone(),
            context: Value::Object(ctx),
            now_ms: now_ms(),
        };
        match store.gather(&gather).await {
            Ok(g) => {
                tracing::info!(job = job.id, trigger = %trigger.name, key = %key, digest = g.digest_id, events = g.count, closed = g.closed, "gathered into a digest");
                Step::Done(
                    json!({ "action": "digest", "digest_id": g.digest_id, "key": key, "events": g.count, "closed": g.closed }),
                    Vec::new(),
                )
            }
            Err(e) => retry_store(e),
        }
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
