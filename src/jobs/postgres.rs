//! The shared store: Postgres, for several replicas behind one load balancer. Same behaviour as the SQLite
//! store; in addition jobs are claimed with `FOR UPDATE SKIP LOCKED` under a lease, and the Mavera limits
//! (requests per window, chats in flight) are kept in the database so that all replicas together stay under
//! them. Times for leases and limits come from the database's clock, so replicas' clocks need not agree.

use std::{str::FromStr, time::Duration};

use serde_json::Value;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

use super::{
    audit::{self, AuditEntry, AuditLog, AuditRecord},
    batch,
    digest::{self, DigestStore, Gather, Gathered},
    events,
    row::{self, json_text, JobRow},
    upkeep::{sql, Forgotten, StoreStats, Upkeep},
    Delivery, Guard, Hold, Job, JobCounts, JobId, JobState, JobStore, KnownPersona, NewJob,
    SharedLimits, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The columns of a job, `jsonb` as text, in the names [`JobRow`] reads.
const JOB: &str = "id, trigger_name, action, source, event_id, user_id, context::text AS context, state, attempts,
                   created_ms, run_at_ms, progress::text AS progress, last_error, outcome::text AS outcome,
                   history::text AS history";

/// The database's clock in milliseconds.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects (pool of `max_connections`, each statement cut off after `statement_timeout`) and migrates.
    pub async fn open(
        url: &str,
        max_connections: u32,
        statement_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.options([(
            "statement_timeout",
            format!("{}", statement_timeout.as_millis()),
        )]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // Fail fast when Postgres is away: a webhook answered 503 in time is retried; one that times out
            // at the sender (Segment waits 5 s, Customer.io 4 s) may be held back.
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(options)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl JobStore for PgStore {
    async fn record(
        &self,
        deliveries: Vec<Delivery>,
        now_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut fresh = Vec::with_capacity(deliveries.len());
        let mut tally = events::Tally::default();
        for chunk in deliveries.chunks(batch::CHUNK) {
            let inserted: Vec<(i64, String, String)> =
                batch::insert_events::<sqlx::Postgres>(chunk, now_ms as i64)
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await?;
            let rows = batch::fresh_rows(chunk, inserted);
            if let Some(mut jobs) =
                batch::insert_jobs::<sqlx::Postgres>(chunk, &rows, now_ms as i64, "::jsonb")
            {
                jobs.build().execute(&mut *tx).await?;
            }
            tally.merge(batch::tally(chunk, &rows, now_ms));
            fresh.extend(rows.iter().map(Option::is_some));
        }
        for (minute, source, status, count) in tally.rows() {
            sqlx::query(events::COUNT_MINUTE)
                .bind(minute)
                .bind(source)
                .bind(status)
                .bind(count)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    async fn log_events(&self, deliveries: Vec<Delivery>, now_ms: u64) -> Result<(), StoreError> {
        self.record(deliveries, now_ms).await.map(|_| ())
    }

    async fn events(
        &self,
        filter: &events::EventFilter,
        limit: usize,
    ) -> Result<events::EventPage, StoreError> {
        let (sql, binds) = events::list_query(filter, limit);
        let rows = events::bind_all(sqlx::query_as(&sql), binds)
            .fetch_all(&self.pool)
            .await?;
        Ok(events::dedupe_page(rows, limit))
    }

    async fn event_jobs(&self, rows: &[i64]) -> Result<Vec<events::JobBrief>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let sql = events::jobs_query(rows.len());
        let mut query = sqlx::query_as(&sql);
        for row in rows {
            query = query.bind(*row);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn event(&self, row: i64) -> Result<Option<(events::EventDetail, Vec<Job>)>, StoreError> {
        let detail: Option<events::EventDetail> = sqlx::query_as(events::DETAIL_QUERY)
            .bind(row)
            .fetch_optional(&self.pool)
            .await?;
        let Some(detail) = detail else {
            return Ok(None);
        };
        let jobs: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB} FROM jobs WHERE event_row = $1 ORDER BY id"
        ))
        .bind(row)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some((detail, row::jobs(jobs)?)))
    }

    async fn event_minutes(&self, minute: i64) -> Result<Vec<events::MinuteCount>, StoreError> {
        Ok(sqlx::query_as(events::MINUTES_SINCE)
            .bind(minute)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn claim(&self, now_ms: u64, lease_ms: u64) -> Result<Option<Job>, StoreError> {
        // Pending and expired jobs are looked for apart, each along `jobs_due` in run order: one search
        // over both states (an OR) can make the planner collect and sort the whole due backlog per claim.
        let busy = format!(
            "c.action = 'create_persona' AND EXISTS (
                 SELECT 1 FROM jobs r
                 WHERE r.trigger_name = c.trigger_name AND r.user_id = c.user_id AND r.id <> c.id
                   AND r.state = 'running' AND r.action = 'create_persona'
                   AND r.lease_until_ms >= {DB_NOW})"
        );
        let row: Option<JobRow> = sqlx::query_as(&format!(
            "WITH pending AS (
                 SELECT c.id, c.run_at_ms FROM jobs c
                 WHERE c.state = 'pending' AND c.run_at_ms <= $1 AND NOT ({busy})
                 ORDER BY c.run_at_ms, c.id LIMIT 1 FOR UPDATE OF c SKIP LOCKED),
             expired AS (
                 SELECT c.id, c.run_at_ms FROM jobs c
                 WHERE c.state = 'running' AND c.lease_until_ms < {DB_NOW} AND NOT ({busy})
                 ORDER BY c.run_at_ms, c.id LIMIT 1 FOR UPDATE OF c SKIP LOCKED)
             UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until_ms = {DB_NOW} + $2, updated_ms = $1
             WHERE id = (SELECT id FROM (SELECT * FROM pending UNION ALL SELECT * FROM expired) due
                         ORDER BY run_at_ms, id LIMIT 1)
             RETURNING {JOB}"
        ))
        .bind(now_ms as i64)
        .bind(lease_ms as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Job::try_from).transpose()
    }

    /// Other replicas may hold running jobs: nothing is released at start; their leases expire instead.
    async fn release_running(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn renew_lease(&self, id: JobId, lease_ms: u64) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "UPDATE jobs SET lease_until_ms = {DB_NOW} + $2 WHERE id = $1 AND state = 'running'"
        ))
        .bind(id as i64)
        .bind(lease_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn merge_progress(&self, id: JobId, patch: Value) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET progress = jsonb_strip_nulls(progress || $2::jsonb) WHERE id = $1",
        )
        .bind(id as i64)
        .bind(json_text(&patch))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn finish(
        &self,
        id: JobId,
        outcome: Value,
        followups: Vec<NewJob>,
    ) -> Result<(), StoreError> {
        let now = super::now_ms() as i64;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = 'done', outcome = $2::jsonb, lease_until_ms = NULL, updated_ms = $3,
                             history = history || jsonb_build_array(jsonb_build_object('attempt', attempts, 'at_ms', $3::bigint, 'result', 'done', 'error', NULL::text)) WHERE id = $1",
        )
        .bind(id as i64)
        .bind(json_text(&outcome))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for job in &followups {
            sqlx::query(
                "INSERT INTO jobs (event_row, trigger_name, action, source, event_id, user_id, context,
                                   created_ms, run_at_ms, updated_ms)
                 SELECT event_row, $2, $3, $4, $5, $6, $7::jsonb, $8, $8, $8 FROM jobs WHERE id = $1",
            )
            .bind(id as i64)
            .bind(&job.trigger)
            .bind(job.action.as_str())
            .bind(job.source.as_str())
            .bind(&job.event_id)
            .bind(&job.user_id)
            .bind(json_text(&job.context))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn retry_at(&self, id: JobId, run_at_ms: u64, error: String) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET state = 'pending', run_at_ms = $2, last_error = $3, lease_until_ms = NULL, updated_ms = $4,
                             history = history || jsonb_build_array(jsonb_build_object('attempt', attempts, 'at_ms', $4::bigint, 'result', 'retry', 'error', $3::text))
             WHERE id = $1",
        )
        .bind(id as i64)
        .bind(run_at_ms as i64)
        .bind(error)
        .bind(super::now_ms() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn bury(&self, id: JobId, reason: String) -> Result<(), StoreError> {
        self.set_final(id, "dead", reason).await
    }

    async fn hold(&self, id: JobId, reason: String) -> Result<(), StoreError> {
        self.set_final(id, "held", reason).await
    }

    async fn take_guards(
        &self,
        job: JobId,
        guards: &[Guard],
        now_ms: u64,
    ) -> Result<Option<Hold>, StoreError> {
        let mut tx = self.pool.begin().await?;
        for guard in guards {
            let refused = match guard {
                Guard::Cooldown {
                    trigger,
                    user,
                    window_ms,
                } => {
                    let taken: Option<(i64,)> = sqlx::query_as(
                        "INSERT INTO cooldowns (trigger_name, user_id, last_ms) VALUES ($1, $2, $3)
                         ON CONFLICT (trigger_name, user_id) DO UPDATE SET last_ms = excluded.last_ms
                         WHERE cooldowns.last_ms <= $3 - $4
                         RETURNING last_ms",
                    )
                    .bind(trigger)
                    .bind(user)
                    .bind(now_ms as i64)
                    .bind(*window_ms as i64)
                    .fetch_optional(&mut *tx)
                    .await?;
                    taken.is_none().then(|| guard.refusal())
                }
                Guard::Budget {
                    scope,
                    window_start_ms,
                    limit,
                    ..
                } => {
                    let taken: Option<(i64,)> = sqlx::query_as(
                        "INSERT INTO budget_usage (scope, window_start_ms, used) SELECT $1, $2, 1 WHERE $3 > 0
                         ON CONFLICT (scope, window_start_ms) DO UPDATE SET used = budget_usage.used + 1
                         WHERE budget_usage.used < $3
                         RETURNING used",
                    )
                    .bind(scope)
                    .bind(*window_start_ms as i64)
                    .bind(*limit as i64)
                    .fetch_optional(&mut *tx)
                    .await?;
                    taken.is_none().then(|| guard.refusal())
                }
            };
            if refused.is_some() {
                tx.rollback().await?;
                return Ok(refused);
            }
        }
        sqlx::query("UPDATE jobs SET progress = progress || '{\"guards_taken\": true}'::jsonb WHERE id = $1")
            .bind(job as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn requeue(&self, id: JobId, now_ms: u64) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'pending', run_at_ms = $2, attempts = 0, outcome = NULL, updated_ms = $2,
                             progress = (progress - 'guards_taken') || '{\"replay\": true}'::jsonb,
                             history = history || jsonb_build_array(jsonb_build_object('attempt', attempts, 'at_ms', $2::bigint, 'result', 'replayed', 'error', NULL::text))
             WHERE id = $1 AND state IN ('done', 'dead', 'held')",
        )
        .bind(id as i64)
        .bind(now_ms as i64)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 && self.get(id).await?.is_none() {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let row: Option<JobRow> = sqlx::query_as(&format!("SELECT {JOB} FROM jobs WHERE id = $1"))
            .bind(id as i64)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Job::try_from).transpose()
    }

    async fn finished(
        &self,
        action: &str,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB} FROM jobs WHERE action = $1 AND state = 'done' AND id < $2 ORDER BY id DESC LIMIT $3"
        ))
        .bind(action)
        .bind(before.map_or(i64::MAX, |b| b as i64))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        row::jobs(rows)
    }

    async fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, StoreError> {
        let rows: Vec<JobRow> = match state {
            Some(s) => {
                sqlx::query_as(&format!(
                    "SELECT {JOB} FROM jobs WHERE state = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(s.as_str())
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(&format!("SELECT {JOB} FROM jobs ORDER BY id DESC LIMIT $1"))
                    .bind(limit as i64)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        row::jobs(rows)
    }

    async fn counts(&self) -> Result<JobCounts, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        let mut c = JobCounts::from_rows(rows);
        let oldest: (Option<i64>,) =
            sqlx::query_as("SELECT MIN(created_ms) FROM jobs WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        c.oldest_pending_ms = oldest.0.map(|m| m as u64);
        Ok(c)
    }

    async fn next_due_ms(&self) -> Result<Option<u64>, StoreError> {
        let row: (Option<i64>,) =
            sqlx::query_as("SELECT MIN(run_at_ms) FROM jobs WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(row.0.map(|m| m as u64))
    }

    async fn ping(&self, now_ms: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO heartbeat (id, at_ms) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms")
            .bind(now_ms as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn persona_for(
        &self,
        trigger: &str,
        user: &str,
    ) -> Result<Option<KnownPersona>, StoreError> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT persona_id, name FROM personas WHERE trigger_name = $1 AND user_id = $2",
        )
        .bind(trigger)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(persona_id, name)| KnownPersona { persona_id, name }))
    }

    async fn remember_persona(
        &self,
        trigger: &str,
        user: &str,
        persona: &KnownPersona,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO personas (trigger_name, user_id, persona_id, name, updated_ms) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (trigger_name, user_id) DO UPDATE SET persona_id = excluded.persona_id, name = excluded.name,
             updated_ms = excluded.updated_ms",
        )
        .bind(trigger)
        .bind(user)
        .bind(&persona.persona_id)
        .bind(&persona.name)
        .bind(now_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn upkeep(&self) -> std::sync::Arc<dyn Upkeep> {
        std::sync::Arc::new(self.clone())
    }

    fn shared_limits(&self) -> Option<std::sync::Arc<dyn SharedLimits>> {
        Some(std::sync::Arc::new(self.clone()))
    }
}

#[async_trait::async_trait]
impl DigestStore for PgStore {
    async fn gather(&self, g: &Gather) -> Result<Gathered, StoreError> {
        let mut tx = self.pool.begin().await?;
        digest::gather_in!(tx, true, g)
    }

    async fn close_due_digests(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        digest::close_due_in!(tx, true, now_ms)
    }

    async fn digest_events(&self, digest_id: i64) -> Result<Vec<Value>, StoreError> {
        digest::events_in!(&self.pool, true, digest_id)
    }

    async fn open_digests(&self) -> Result<Vec<digest::OpenDigest>, StoreError> {
        digest::open_in!(&self.pool, true)
    }
}

#[async_trait::async_trait]
impl AuditLog for PgStore {
    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        audit::query::insert::<sqlx::Postgres>(entry)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = audit::query::page::<sqlx::Postgres>(before, limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }

    async fn prune_audit(&self, before_ms: u64, batch: usize) -> Result<u64, StoreError> {
        let done = audit::query::prune::<sqlx::Postgres>(before_ms, batch)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

impl PgStore {
    async fn set_final(&self, id: JobId, state: &str, reason: String) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET state = $2, last_error = $3, lease_until_ms = NULL, updated_ms = $4,
                             history = history || jsonb_build_array(jsonb_build_object('attempt', attempts, 'at_ms', $4::bigint, 'result', $2::text, 'error', $3::text)) WHERE id = $1")
            .bind(id as i64)
            .bind(state)
            .bind(reason)
            .bind(super::now_ms() as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Plain deletes: autovacuum makes the space reusable (Postgres gives it back to the file system only on
/// `VACUUM FULL`, which would lock the tables).
#[async_trait::async_trait]
impl Upkeep for PgStore {
    async fn prune_events(&self, before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
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

    async fn prune_jobs(&self, before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        let deleted = sqlx::query(sql::DELETE_OLD_JOBS)
            .bind(before_ms as i64)
            .bind(limit as i64)
            .execute(&self.pool)
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
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(deleted)
    }

    async fn reclaim(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
            .fetch_one(&self.pool)
            .await?;
        let (oldest_event,): (Option<i64>,) = sqlx::query_as(sql::OLDEST_EVENT)
            .fetch_one(&self.pool)
            .await?;
        let oldest_job: Option<(i64,)> = sqlx::query_as(sql::OLDEST_JOB)
            .fetch_optional(&self.pool)
            .await?;
        Ok(StoreStats {
            bytes: bytes as u64,
            oldest_event_ms: oldest_event.map(|m| m as u64),
            oldest_job_ms: oldest_job.map(|(m,)| m as u64),
        })
    }

    async fn forget(&self, user: &str) -> Result<Forgotten, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut removed = [0u64; 6];
        for (n, statement) in removed.iter_mut().zip(sql::FORGET) {
            *n = sqlx::query(statement)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(Forgotten::from_counts(removed))
    }
}

#[async_trait::async_trait]
impl SharedLimits for PgStore {
    async fn try_rate(
        &self,
        bucket: &str,
        limit: u32,
        window_ms: u64,
    ) -> Result<Result<(), Duration>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One replica at a time decides for this bucket.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(bucket)
            .execute(&mut *tx)
            .await?;
        let (now,): (i64,) = sqlx::query_as(&format!("SELECT {DB_NOW}"))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rate_log WHERE bucket = $1 AND at_ms <= $2")
            .bind(bucket)
            .bind(now - window_ms as i64)
            .execute(&mut *tx)
            .await?;
        let (count, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(at_ms) FROM rate_log WHERE bucket = $1")
                .bind(bucket)
                .fetch_one(&mut *tx)
                .await?;
        let answer = if count < limit as i64 {
            sqlx::query("INSERT INTO rate_log (bucket, at_ms) VALUES ($1, $2)")
                .bind(bucket)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            Ok(())
        } else {
            let free_at = oldest.unwrap_or(now) + window_ms as i64;
            Err(Duration::from_millis((free_at - now).max(1) as u64))
        };
        tx.commit().await?;
        Ok(answer)
    }

    async fn try_slot(
        &self,
        bucket: &str,
        slots: u32,
        holder: &str,
        lease_ms: u64,
    ) -> Result<Option<i32>, StoreError> {
        sqlx::query("INSERT INTO slots (bucket, slot) SELECT $1, g FROM generate_series(1, $2) g ON CONFLICT DO NOTHING")
            .bind(bucket)
            .bind(slots as i32)
            .execute(&self.pool)
            .await?;
        let taken: Option<(i32,)> = sqlx::query_as(&format!(
            "UPDATE slots SET holder = $3, until_ms = {DB_NOW} + $4
             WHERE (bucket, slot) = (SELECT bucket, slot FROM slots
                                     WHERE bucket = $1 AND slot <= $2 AND (holder IS NULL OR until_ms < {DB_NOW})
                                     ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING slot"
        ))
        .bind(bucket)
        .bind(slots as i32)
        .bind(holder)
        .bind(lease_ms as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.map(|(s,)| s))
    }

    async fn renew_slot(
        &self,
        bucket: &str,
        slot: i32,
        holder: &str,
        lease_ms: u64,
    ) -> Result<bool, StoreError> {
        let renewed = sqlx::query(&format!(
            "UPDATE slots SET until_ms = {DB_NOW} + $4 WHERE bucket = $1 AND slot = $2 AND holder = $3"
        ))
        .bind(bucket)
        .bind(slot)
        .bind(holder)
        .bind(lease_ms as i64)
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn release_slot(&self, bucket: &str, slot: i32, holder: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE slots SET holder = NULL, until_ms = 0 WHERE bucket = $1 AND slot = $2 AND holder = $3")
            .bind(bucket)
            .bind(slot)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
