//! Runs one job: enrich (once), decide, render, call Mavera, report. Returns what the worker should record.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use serde_json::{json, Map, Value};

use super::{Guard, Job, JobStore, KnownPersona, NewJob, StoreError};
use crate::{
    clients::{
        customerio::{CustomerIoClient, Lookup},
        mavera::MaveraClient,
        UpstreamError,
    },
    metrics::Metrics,
    sinks,
    triggers::{config::SinkSpec, Decision, Enrichment, Rendered, Stage, Trigger, TriggerTable},
};

/// What became of an attempt.
#[derive(Debug)]
pub enum Step {
    /// Finished, with the follow-up jobs (sink deliveries) to record with the outcome.
    Done(Value, Vec<NewJob>),
    Retry {
        error: String,
        after: Option<Duration>,
    },
    Dead(String),
    /// A cost guard holds the job back (recorded with the reason, replayable).
    Held(String),
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
    /// `MAVERA_DAILY_BUDGET`: calls per UTC day, all triggers together.
    pub daily_budget: Option<u64>,
    pub metrics: Arc<Metrics>,
    /// The shared HTTP client, for sink deliveries.
    pub http: reqwest::Client,
    /// Where the `customerio` and `segment` sinks write.
    pub write_back: Arc<sinks::writeback::WriteBack>,
}

impl Runner {
    pub async fn run(&self, job: &Job, store: &dyn JobStore) -> Step {
        if job.new.action.starts_with("sink:") {
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

    /// Enriches (once), computes `vars` and, where the intake could not, evaluates `when`: the event's
    /// context, or the step that ends the job (a skip, a retry, a dead letter).
    async fn decide(
        &self,
        job: &Job,
        store: &dyn JobStore,
        table: &TriggerTable,
        trigger: &Trigger,
    ) -> Result<Map<String, Value>, Step> {
        let mut ctx = job.new.context.clone();
        if trigger.enrich == Some(Enrichment::CustomerioAttributes) {
            let attributes = match job.progress.get("attributes") {
                Some(done) => done.clone(),
                None => {
                    let attributes = match self.enrich(job).await {
                        Ok(a) => a,
                        Err(step) => return Err(step),
                    };
                    let patch = json!({ "attributes": attributes });
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
    async fn gather(
        &self,
        job: &Job,
        store: &dyn JobStore,
        table: &TriggerTable,
        trigger: &Trigger,
        digest: &crate::triggers::Digest,
        ctx: Map<String, Value>,
    ) -> Step {
        let key = match table.digest_key(trigger, &ctx) {
            Ok(key) => key,
            Err(e) => return Step::Dead(e.to_string()),
        };
        let gather = super::digest::Gather {
            trigger: trigger.name.clone(),
            key: key.clone(),
            source: job.new.source,
            action: trigger.action.kind().to_string(),
            window_ms: digest.window.as_millis() as u64,
            max: digest.max,
            job_id: job.id,
            user_id: job.new.user_id.clone(),
            context: Value::Object(ctx),
            now_ms: super::now_ms(),
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

    /// Takes the job's cost guards once (a retry of the same job is not charged again). An operator's replay
    /// skips the cooldown, not the budgets.
    async fn pass_guards(
        &self,
        job: &Job,
        store: &dyn JobStore,
        trigger: &Trigger,
    ) -> Result<(), Step> {
        if job.progress.get("guards_taken") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        let now = super::now_ms();
        let (hour, day) = (3_600_000, 86_400_000);
        let mut guards = Vec::new();
        let replay = job.progress.get("replay") == Some(&Value::Bool(true));
        if let (Some(window), Some(user), false) = (
            trigger.cooldown,
            job.new.user_id.as_deref().filter(|u| *u != "unknown"),
            replay,
        ) {
            guards.push(Guard::Cooldown {
                trigger: trigger.name.clone(),
                user: user.to_string(),
                window_ms: window.as_millis() as u64,
            });
        }
        let mut budget = |scope: String, window: u64, limit: Option<u64>, label: String| {
            if let Some(limit) = limit {
                guards.push(Guard::Budget {
                    scope,
                    window_start_ms: now - now % window,
                    limit,
                    label,
                });
            }
        };
        budget(
            format!("trigger:{}:hour", trigger.name),
            hour,
            trigger.budget.per_hour,
            format!(
                "trigger `{}` allows {} calls per hour",
                trigger.name,
                trigger.budget.per_hour.unwrap_or(0)
            ),
        );
        budget(
            format!("trigger:{}:day", trigger.name),
            day,
            trigger.budget.per_day,
            format!(
                "trigger `{}` allows {} calls per day",
                trigger.name,
                trigger.budget.per_day.unwrap_or(0)
            ),
        );
        budget(
            "global:day".into(),
            day,
            self.daily_budget,
            format!(
                "MAVERA_DAILY_BUDGET allows {} calls per UTC day",
                self.daily_budget.unwrap_or(0)
            ),
        );
        // The mark that the job holds its guards commits with them: one transaction, even with no guard.
        if let Some(reason) = store
            .take_guards(job.id, &guards, now)
            .await
            .map_err(retry_store)?
        {
            tracing::info!(job = job.id, trigger = %trigger.name, user = job.new.user_id.as_deref().unwrap_or("unknown"), "held back: {reason}");
            return Err(Step::Held(reason));
        }
        Ok(())
    }

    /// Creates the persona, or updates the one this trigger created for the same user before. A create that
    /// was in flight when the process died is looked up by name before it is sent again.
    async fn persona(&self, job: &Job, store: &dyn JobStore, body: Value) -> Result<Value, Step> {
        let trigger = &job.new.trigger;
        let user = job.new.user_id.as_deref().filter(|u| *u != "unknown");
        let name = body["name"].as_str().unwrap_or_default().to_string();
        let dry_run = self.mavera.is_dry_run();
        let known = match user {
            Some(user) => store
                .persona_for(trigger, user)
                .await
                .map_err(retry_store)?,
            None => None,
        };
        if let Some(known) = known {
            match self.mavera.update_persona(&known.persona_id, &body).await {
                Ok(persona) => {
                    tracing::info!(job = job.id, trigger = %trigger, persona = %persona.id, "persona updated (PATCH), not created again");
                    return Ok(json!({
                        "action": "update_persona",
                        "persona_id": persona.id,
                        "name": persona.name.unwrap_or(name),
                        "dry_run": dry_run,
                    }));
                }
                // Deleted in Mavera since: create a new one below.
                Err(UpstreamError::Status { status: 404, .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(sent_ms) = job.progress.get("create_sent_ms").and_then(Value::as_i64) {
            // The last attempt may have reached Mavera before the process died: look before sending again.
            let since = sent_ms / 1000 - 300;
            if let Some(persona) = self
                .mavera
                .find_persona(&name, since)
                .await
                .map_err(Step::from)?
            {
                tracing::warn!(job = job.id, trigger = %trigger, persona = %persona.id, "a persona created by an interrupted attempt was found by name: adopted, not created twice");
                self.remember(job, store, user, &persona.id, &name).await?;
                return Ok(json!({
                    "action": "create_persona",
                    "persona_id": persona.id,
                    "name": name,
                    "adopted": true,
                    "dry_run": dry_run,
                }));
            }
        }
        // Marked before sending; cleared when Mavera answers. Left set only when an attempt ends without an
        // answer (a timeout, a reset connection, a crash): the one case where the persona may exist.
        store
            .merge_progress(job.id, json!({ "create_sent_ms": super::now_ms() }))
            .await
            .map_err(retry_store)?;
        let persona = match self.mavera.create_persona(&body).await {
            Ok(persona) => persona,
            Err(e @ UpstreamError::Status { .. }) => {
                store
                    .merge_progress(job.id, json!({ "create_sent_ms": null }))
                    .await
                    .map_err(retry_store)?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        self.remember(job, store, user, &persona.id, &name).await?;
        Ok(json!({
            "action": "create_persona",
            "persona_id": persona.id,
            "name": persona.name.unwrap_or(name),
                                "credits_charged": persona.credits_charged,
            "dry_run": dry_run,
        }))
    }

    async fn remember(
        &self,
        job: &Job,
        store: &dyn JobStore,
        user: Option<&str>,
        id: &str,
        name: &str,
    ) -> Result<(), Step> {
        let (Some(user), false) = (user, self.mavera.is_dry_run()) else {
            return Ok(());
        };
        let persona = KnownPersona {
            persona_id: id.to_string(),
            name: Some(name.to_string()),
        };
        store
            .remember_persona(&job.new.trigger, user, &persona, super::now_ms())
            .await
            .map_err(retry_store)
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

fn retry_store(e: StoreError) -> Step {
    Step::Retry {
        error: e.to_string(),
        after: None,
    }
}
