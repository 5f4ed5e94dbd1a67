//! The persona action: create a persona, or update the one this trigger made for the same user before.

use serde_json::{json, Value};

use super::{retry_store, Runner};
use crate::{
    clients::UpstreamError,
    jobs::{now_ms, worker::Step, Job, JobStore, KnownPersona, Progress},
};

impl Runner {
    /// Creates the persona, or updates the one this trigger created for the same user before. A create that
    /// was in flight when the process died is looked up by name before it is sent again.
    pub(super) async fn persona(
        &self,
        job: &Job,
        store: &dyn JobStore,
        body: Value,
    ) -> Result<Value, Step> {
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
        if let Some(sent_ms) = job.progress.create_sent_ms {
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
            .merge_progress(job.id, Progress::create_sent(Some(now_ms())))
            .await
            .map_err(retry_store)?;
        let persona = match self.mavera.create_persona(&body).await {
            Ok(persona) => persona,
            Err(e @ UpstreamError::Status { .. }) => {
                store
                    .merge_progress(job.id, Progress::create_sent(None))
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
            .remember_persona(&job.new.trigger, user, &persona, now_ms())
            .await
            .map_err(retry_store)
    }
}
