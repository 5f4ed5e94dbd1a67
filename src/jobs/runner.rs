//! Runs one job: enrich (once), decide, render, call Mavera, report. Returns what the worker should record.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use serde_json::{json, Map, Value};

use super::{Job, JobStore, KnownPersona, StoreError};
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
        sinks::log::report(job, &outcome);
        Step::Done(outcome)
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
        let mut progress = job.progress.clone();
        if let Some(sent_ms) = progress.get("create_sent_ms").and_then(Value::as_i64) {
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
        progress.insert("create_sent_ms".into(), json!(super::now_ms()));
        store
            .save_progress(job.id, progress.clone())
            .await
            .map_err(retry_store)?;
        let persona = match self.mavera.create_persona(&body).await {
            Ok(persona) => persona,
            Err(e @ UpstreamError::Status { .. }) => {
                progress.remove("create_sent_ms");
                store
                    .save_progress(job.id, progress)
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
