//! The cost guards a trigger's job takes before it calls Mavera: its cooldown per user and its budgets.

use super::{retry_store, Runner};
use crate::{
    jobs::{now_ms, worker::Step, Guard, Job, JobStore},
    triggers::Trigger,
};

impl Runner {
    /// Takes the job's cost guards once (a retry of the same job is not charged again). An operator's replay
    /// skips the cooldown, not the budgets.
    pub(super) async fn pass_guards(
        &self,
        job: &Job,
        store: &dyn JobStore,
        trigger: &Trigger,
    ) -> Result<(), Step> {
        if job.progress.guards_taken {
            return Ok(());
        }
        let now = now_ms();
        let (hour, day) = (3_600_000, 86_400_000);
        let mut guards = Vec::new();
        let replay = job.progress.replay;
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
        if let Some(hold) = store
            .take_guards(job.id, &guards, now)
            .await
            .map_err(retry_store)?
        {
            tracing::info!(job = job.id, trigger = %trigger.name, user = job.new.user_id.as_deref().unwrap_or("unknown"), "held back: {}", hold.reason());
            return Err(Step::Held(hold));
        }
        Ok(())
    }
}
