//! Keeping the store fit for months: retention (old events and finished jobs deleted in small batches, the
//! space given back), erasure of one person's data, and the store's size and age for `/metrics` and the
//! console.

use std::{sync::Arc, time::Duration};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use crate::metrics::Metrics;

/// Rows deleted per transaction: each batch holds SQLite's one writer for a few milliseconds, and webhook
/// acknowledgements queue ahead of the next one.
pub const BATCH: usize = 500;

/// A pause between batches, so the writer is never held for a whole pruning run.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// What one pruning run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub events: u64,
    pub jobs: u64,
    /// Lines of the audit trail (kept as long as events).
    pub audit: u64,
}

/// The store's size and its oldest rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Bytes on disk (SQLite: the database file and its write-ahead log; Postgres: the database).
    pub bytes: u64,
    pub oldest_event_ms: Option<u64>,
    pub oldest_job_ms: Option<u64>,
}

/// What an erasure removed, per kind of row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// Events with their raw payloads and headers.
    pub events: u64,
    /// Jobs with their context, outcomes and briefs; sink deliveries included.
    pub jobs: u64,
    /// Rows of the persona map (trigger, user) → persona id.
    pub personas: u64,
    pub cooldowns: u64,
    /// Their events gathered into a digest that has not run yet.
    pub digest_events: u64,
}

impl Forgotten {
    /// From the rows each statement of [`sql::FORGET`] touched, in its order.
    pub fn from_counts(
        [jobs, _unlinked, events, personas, cooldowns, digest_events]: [u64; 6],
    ) -> Self {
        Self {
            events,
            jobs,
            personas,
            cooldowns,
            digest_events,
        }
    }
}

/// The store's side of retention and erasure.
#[async_trait::async_trait]
pub trait Upkeep: super::audit::AuditLog + Send + Sync + 'static {
    /// Deletes at most `limit` events received before `before_ms`, with their payloads and headers, leaving
    /// those whose jobs are still pending or running; jobs kept longer lose only their link to the event.
    async fn prune_events(&self, before_ms: u64, limit: usize) -> Result<u64, StoreError>;
    /// Deletes at most `limit` done, dead or held jobs last changed before `before_ms` (outcomes, briefs and
    /// sink deliveries are jobs too), and cost-guard rows that old.
    async fn prune_jobs(&self, before_ms: u64, limit: usize) -> Result<u64, StoreError>;
    /// Gives freed space back to the file system, a little at a time (SQLite: incremental vacuum and a
    /// checkpoint; Postgres: autovacuum does it).
    async fn reclaim(&self) -> Result<(), StoreError>;
    async fn stats(&self) -> Result<StoreStats, StoreError>;
    /// Deletes everything the store holds about `user` (events, jobs, persona map, cooldowns), and leaves no
    /// copy in the files (SQLite: `secure_delete`, a checkpoint that empties the write-ahead log).
    async fn forget(&self, user: &str) -> Result<Forgotten, StoreError>;
}

/// How long rows are kept; `None` keeps them.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub events: Option<Duration>,
    pub jobs: Option<Duration>,
}

impl Retention {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            events: settings.store.retention_events,
            jobs: settings.store.retention_jobs,
        }
    }
}

/// One pruning run as of `now_ms`: batches until nothing old is left, then space back and the figures on
/// `/metrics`.
pub async fn prune(
    store: &dyn Upkeep,
    retention: Retention,
    now_ms: u64,
    metrics: &Metrics,
) -> Result<Pruned, StoreError> {
    let mut pruned = Pruned::default();
    if let Some(keep) = retention.events {
        let before = now_ms.saturating_sub(keep.as_millis() as u64);
        pruned.events = in_batches(|| store.prune_events(before, BATCH)).await?;
        // The audit trail names clients' addresses: it is kept as long as the events.
        pruned.audit = in_batches(|| store.prune_audit(before, BATCH)).await?;
    }
    if let Some(keep) = retention.jobs {
        let before = now_ms.saturating_sub(keep.as_millis() as u64);
        pruned.jobs = in_batches(|| store.prune_jobs(before, BATCH)).await?;
    }
    for (table, n) in [
        ("events", pruned.events),
        ("jobs", pruned.jobs),
        ("audit", pruned.audit),
    ] {
        metrics
            .store_rows_pruned
            .get_or_create(&Metrics::table(table))
            .inc_by(n);
    }
    if pruned.events + pruned.jobs + pruned.audit > 0 {
        store.reclaim().await?;
        tracing::info!(
            events = pruned.events,
            jobs = pruned.jobs,
            audit = pruned.audit,
            "retention: old rows deleted"
        );
    }
    record_stats(metrics, &store.stats().await?);
    Ok(pruned)
}

/// Erases one person, and logs it without their id (a fingerprint tells two erasures apart).
pub async fn forget(store: &dyn Upkeep, user: &str) -> Result<Forgotten, StoreError> {
    let removed = store.forget(user).await?;
    tracing::info!(
        user = %crate::config::Secret::new(user).fingerprint(),
        events = removed.events,
        jobs = removed.jobs,
        personas = removed.personas,
        cooldowns = removed.cooldowns,
        digest_events = removed.digest_events,
        "erasure: a person's data deleted from the store"
    );
    Ok(removed)
}

async fn in_batches<F, Fut>(mut batch: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let n = batch().await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
}

/// Prunes every `interval` until `shutdown`; the first run comes one interval after the start, so a
/// restart loop does not prune on every start.
pub async fn run(
    store: Arc<dyn Upkeep>,
    retention: Retention,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    match store.stats().await {
        Ok(stats) => record_stats(&metrics, &stats),
        Err(e) => tracing::warn!(error = %e, "cannot read the store's size"),
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = prune(store.as_ref(), retention, super::now_ms(), &metrics).await {
            tracing::warn!(error = %e, "retention: pruning failed; trying again at the next interval");
        }
    }
}

/// The store's size and oldest rows, on `/metrics`.
pub fn record_stats(metrics: &Metrics, stats: &StoreStats) {
    metrics.store_size_bytes.set(stats.bytes as i64);
    for (table, oldest) in [
        ("events", stats.oldest_event_ms),
        ("jobs", stats.oldest_job_ms),
    ] {
        metrics
            .store_oldest_row_timestamp_seconds
            .get_or_create(&Metrics::table(table))
            .set(oldest.map_or(0, |ms| (ms / 1000) as i64));
    }
}

/// The statements, in the `$n` form both backends read.
pub mod sql {
    /// Events old enough to go whose jobs are all finished (a job still to run keeps its event).
    const PRUNABLE_EVENTS: &str = "SELECT e.id FROM events e WHERE e.received_ms < $1
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_row = e.id AND j.state IN ('pending', 'running'))
         ORDER BY e.received_ms LIMIT $2";

    /// The jobs that keep no context of their own (`row::EVENTS_CONTEXT`) and whose event is about to go, with
    /// that event's raw JSON: each is given its context before the event is deleted.
    pub fn contexts_to_keep() -> String {
        format!(
            "SELECT j.id, j.source, e.raw FROM jobs j JOIN events e ON e.id = j.event_row
             WHERE j.context{{T}} = 'null' AND j.event_row IN ({PRUNABLE_EVENTS})"
        )
    }

    /// Gives job `$1` the context `$2` (JSON text).
    pub const KEEP_CONTEXT: &str = "UPDATE jobs SET context = $2{J} WHERE id = $1";

    pub fn unlink_old_events() -> String {
        format!("UPDATE jobs SET event_row = NULL WHERE event_row IN ({PRUNABLE_EVENTS})")
    }

    pub fn delete_old_events() -> String {
        format!("DELETE FROM events WHERE id IN ({PRUNABLE_EVENTS})")
    }

    pub const DELETE_OLD_MINUTES: &str = "DELETE FROM event_minutes WHERE minute < $1 / 60000";
    pub const DELETE_OLD_JOBS: &str = "DELETE FROM jobs WHERE id IN (
         SELECT id FROM jobs WHERE state IN ('done', 'dead', 'held') AND updated_ms < $1 LIMIT $2)";
    pub const DELETE_OLD_COOLDOWNS: &str = "DELETE FROM cooldowns WHERE last_ms < $1";
    pub const DELETE_OLD_BUDGETS: &str = "DELETE FROM budget_usage WHERE window_start_ms < $1";
    /// Closed digests whose job is gone (pruned); their gathered events go with them (`ON DELETE CASCADE`).
    pub const DELETE_OLD_DIGESTS: &str =
        "DELETE FROM digests WHERE job_id IS NOT NULL AND closes_ms < $1
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = digests.job_id)";
    pub const OLDEST_EVENT: &str = "SELECT MIN(received_ms) FROM events";
    pub const OLDEST_JOB: &str = "SELECT created_ms FROM jobs ORDER BY id LIMIT 1";

    /// Erasure, in order: a person's jobs, any other job's link to their events, their events, the persona
    /// map, cooldowns, and their events gathered into digests that have not run yet.
    pub const FORGET: [&str; 6] = [
        "DELETE FROM jobs WHERE user_id = $1",
        "UPDATE jobs SET event_row = NULL WHERE event_row IN (SELECT id FROM events WHERE user_id = $1)",
        "DELETE FROM events WHERE user_id = $1",
        "DELETE FROM personas WHERE user_id = $1",
        "DELETE FROM cooldowns WHERE user_id = $1",
        "DELETE FROM digest_events WHERE user_id = $1",
    ];
}

/// Retention and erasure on a backend's writer. The backend gives what differs: `reclaim_space`,
/// `bytes_on_disk`, and `after_erasure` (SQLite empties its write-ahead log).
macro_rules! impl_upkeep {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::jobs::upkeep::Upkeep for $store {
            async fn prune_events(
                &self,
                before_ms: u64,
                limit: usize,
            ) -> Result<u64, $crate::jobs::StoreError> {
                use sqlx::Acquire;
                use $crate::jobs::upkeep::sql;
                let dialect = <Self as $crate::jobs::store::SqlBackend>::DIALECT;
                let mut conn = self.writer().await?;
                let mut tx = conn.begin().await?;
                // A job outlives its event (`RETENTION_JOBS` is longer): the ones that read their context
                // from it keep a copy.
                let keep: Vec<(i64, String, String)> =
                    sqlx::query_as(&dialect.fill(&sql::contexts_to_keep()))
                        .bind(before_ms as i64)
                        .bind(limit as i64)
                        .fetch_all(&mut *tx)
                        .await?;
                let keep_context = dialect.fill(sql::KEEP_CONTEXT);
                for (id, source, raw) in keep {
                    let source: $crate::sources::Source = source
                        .parse()
                        .map_err($crate::jobs::StoreError::Unavailable)?;
                    let context = source.provider().full_context(&raw);
                    sqlx::query(&keep_context)
                        .bind(id)
                        .bind($crate::jobs::row::json_text(&context))
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(&sql::unlink_old_events())
                    .bind(before_ms as i64)
                    .bind(limit as i64)
                    .execute(&mut *tx)
                    .await?;
                let deleted = sqlx::query(&sql::delete_old_events())
                    .bind(before_ms as i64)
                    .bind(limit as i64)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query(sql::DELETE_OLD_MINUTES)
                    .bind(before_ms as i64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(deleted)
            }

            async fn prune_jobs(
                &self,
                before_ms: u64,
                limit: usize,
            ) -> Result<u64, $crate::jobs::StoreError> {
                use $crate::jobs::upkeep::sql;
                let mut conn = self.writer().await?;
                let deleted = sqlx::query(sql::DELETE_OLD_JOBS)
                    .bind(before_ms as i64)
                    .bind(limit as i64)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if deleted < limit as u64 {
                    for statement in [
                        sql::DELETE_OLD_COOLDOWNS,
                        sql::DELETE_OLD_BUDGETS,
                        sql::DELETE_OLD_DIGESTS,
                    ] {
                        sqlx::query(statement)
                            .bind(before_ms as i64)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                Ok(deleted)
            }

            async fn reclaim(&self) -> Result<(), $crate::jobs::StoreError> {
                self.reclaim_space().await
            }

            async fn stats(
                &self,
            ) -> Result<$crate::jobs::upkeep::StoreStats, $crate::jobs::StoreError> {
                use $crate::jobs::upkeep::sql;
                let bytes = self.bytes_on_disk().await?;
                let (oldest_event,): (Option<i64>,) = sqlx::query_as(sql::OLDEST_EVENT)
                    .fetch_one(self.reader())
                    .await?;
                let oldest_job: Option<(i64,)> = sqlx::query_as(sql::OLDEST_JOB)
                    .fetch_optional(self.reader())
                    .await?;
                Ok($crate::jobs::upkeep::StoreStats {
                    bytes,
                    oldest_event_ms: oldest_event.map(|m| m as u64),
                    oldest_job_ms: oldest_job.map(|(m,)| m as u64),
                })
            }

            async fn forget(
                &self,
                user: &str,
            ) -> Result<$crate::jobs::upkeep::Forgotten, $crate::jobs::StoreError> {
                use sqlx::Acquire;
                use $crate::jobs::upkeep::sql;
                let mut conn = self.writer().await?;
                let mut tx = conn.begin().await?;
                let mut removed = [0u64; 6];
                for (n, statement) in removed.iter_mut().zip(sql::FORGET) {
                    *n = sqlx::query(statement)
                        .bind(user)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                drop(conn);
                self.after_erasure().await?;
                Ok($crate::jobs::upkeep::Forgotten::from_counts(removed))
            }
        }
    };
}

pub(crate) use impl_upkeep;
