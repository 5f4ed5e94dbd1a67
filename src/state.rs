//! The state every handler shares: one cloneable handle over `Arc<Inner>`.

use std::{ops::Deref, sync::Arc, time::Instant};

use arc_swap::ArcSwap;

use crate::{
    access::Door,
    config::Settings,
    intake::Intake,
    jobs::{
        audit::{AuditAction, AuditEntry, Via},
        Jobs,
    },
    metrics::Metrics,
    ratelimit::LiveLimits,
    triggers::TriggerTable,
};

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub intake: Intake,
    pub jobs: Jobs,
    pub table: Arc<ArcSwap<TriggerTable>>,
    pub started: Instant,
    pub metrics: Arc<Metrics>,
    /// The console's and the admin API's door: client addresses and the throttle on wrong tokens.
    pub door: Door,
    /// The client-side limits in force: a reload that changes the file's `[limits]` changes them.
    pub limits: Arc<LiveLimits>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    /// Reads the trigger table again from `MAVERA_TRIGGERS_CONFIG` and switches to it; a file that does not
    /// load, or that `serve` could not run (a new source without its secret), keeps the running table.
    pub fn reload_triggers(&self) -> Result<usize, String> {
        let path = &self.settings.config_path;
        let table = TriggerTable::load(path).map_err(|e| e.to_string())?;
        if self.settings.mode == crate::config::Mode::Serve {
            if let Some(missing) = crate::preflight::preflight(&self.settings, &table).first() {
                return Err(format!("{}: {missing}", path.display()));
            }
        }
        let count = table.triggers().len();
        if table.limits != self.table.load().limits {
            // Environment variables still win over the file, as at start.
            let mut settings = self.settings.clone();
            settings.apply_file_limits(&table.limits, |k| std::env::var(k).ok());
            let (requests, chats, cio) = settings.live_limits();
            self.limits.set(requests, chats, cio);
            tracing::info!(
                mavera_requests_per_minute = settings.mavera.requests_per_minute,
                mavera_max_concurrent_chats = settings.mavera.max_concurrent_chats,
                cio_requests_per_second = settings.customerio.requests_per_second,
                "[limits] reloaded"
            );
        }
        self.table.store(Arc::new(table));
        Ok(count)
    }

    /// Adds a line to the audit trail, and to the log. A store that cannot take it does not undo what was
    /// done: the log line stays, with the error.
    pub async fn audit(&self, action: AuditAction, via: Via, client: &str, detail: String) {
        let entry = AuditEntry {
            at_ms: crate::jobs::now_ms(),
            action,
            via,
            client: client.to_string(),
            detail,
        };
        tracing::info!(action = action.as_str(), via = via.as_str(), client, detail = %entry.detail, "audit");
        if let Err(e) = self.jobs.store.audit(&entry).await {
            tracing::error!(error = %e, action = action.as_str(), "cannot write the audit trail");
        }
    }

    /// [`Inner::reload_triggers`], logged: the outcome of SIGHUP and `POST /admin/reload`.
    pub fn reload_and_log(&self) -> Result<usize, String> {
        let result = self.reload_triggers();
        match &result {
            Ok(count) => {
                tracing::info!(triggers = count, path = %self.settings.config_path.display(), "trigger table reloaded")
            }
            Err(why) => tracing::error!("reload refused, the running trigger table stays: {why}"),
        }
        result
    }
}
