//! The shared store: Postgres, for several replicas behind one load balancer. Same behaviour as the SQLite
//! store; in addition jobs are claimed with `FOR UPDATE SKIP LOCKED` under a lease, and the Mavera limits
//! (requests per window, chats in flight) are kept in the database so that all replicas together stay under
//! them. Times for leases and limits come from the database's clock, so replicas' clocks need not agree.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::{
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
    Acquire, PgConnection, PgPool, Postgres,
};

use super::{
    audit::impl_audit_log,
    batch,
    event_log::impl_event_log,
    events,
    guards::impl_guards,
    personas::impl_personas,
    queue::{impl_queue, Bookkeeping, Lane, OLDER_PENDING_PERSONA},
    reads::impl_job_reads,
    row::{context_text, json_text, JobRow},
    store::{impl_heartbeat, Dialect, Intake, SqlBackend},
    upkeep::{impl_upkeep, Upkeep},
    Delivery, JobStore, SharedLimits, SharedLimitsDown, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The database's clock in milliseconds.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// The connection pool, for tests that look at the database directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

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
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait::async_trait]
impl SqlBackend for PgStore {
    type Db = Postgres;
    type Writer = PoolConnection<Postgres>;
    const DIALECT: Dialect = Dialect::Postgres;

    /// Any connection of the pool: Postgres takes writers side by side.
    async fn writer(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Intake for PgStore {
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
                batch::insert_events::<Postgres>(chunk, now_ms as i64)
                    .build_query_as()
                    .fetch_all(&mut *tx)
                    .await?;
            let rows = batch::fresh_rows(chunk, inserted);
            if let Some(mut jobs) =
                batch::insert_jobs::<Postgres>(chunk, &rows, now_ms as i64, "::jsonb")
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
}

impl JobStore for PgStore {
    fn upkeep(&self) -> Arc<dyn Upkeep> {
        Arc::new(self.clone())
    }

    fn shared_limits(&self) -> Option<Arc<dyn SharedLimits>> {
        Some(Arc::new(self.clone()))
    }
}

impl_queue!(PgStore);
impl_job_reads!(PgStore);
impl_event_log!(PgStore);
impl_guards!(PgStore);
impl_personas!(PgStore);
impl_heartbeat!(PgStore);
impl_audit_log!(PgStore);
impl_digest_store!(PgStore);
impl_upkeep!(PgStore);

/// What Postgres does its own way: claiming with `FOR UPDATE SKIP LOCKED` on the database's clock, each
/// worker's bookkeeping on a connection of its own, leaving other replicas' jobs alone, and leaving space to
/// autovacuum.
impl PgStore {
    /// Runs one piece of a worker's bookkeeping: Postgres takes writers side by side, so there is no batch.
    async fn bookkeep(&self, op: Bookkeeping) -> Result<Option<JobRow>, StoreError> {
        let sql = Self::sql();
        let mut conn = self.writer().await?;
        let query = match op {
            Bookkeeping::Claim {
                now_ms,
                lease_ms,
                lane,
            } => return Self::claim_due(&mut conn, now_ms, lease_ms, lane).await,
            Bookkeeping::Renew { id, lease_ms } => sqlx::query(&sql.renew_lease)
                .bind(id as i64)
                .bind(lease_ms as i64),
            Bookkeeping::Progress { id, patch } => sqlx::query(&sql.merge_progress)
                .bind(id as i64)
                .bind(json_text(&patch)),
            Bookkeeping::Finish {
                id,
                outcome,
                followups,
                now_ms,
            } => {
                let now = now_ms as i64;
                let done = sqlx::query(&sql.done)
                    .bind(id as i64)
                    .bind(json_text(&outcome))
                    .bind(now);
                if followups.is_empty() {
                    // One statement commits on its own: no BEGIN and COMMIT round trips.
                    done.execute(&mut *conn).await?;
                    return Ok(None);
                }
                let mut tx = conn.begin().await?;
                done.execute(&mut *tx).await?;
                for job in &followups {
                    sqlx::query(&sql.followup)
                        .bind(id as i64)
                        .bind(&job.trigger)
                        .bind(job.action.as_str())
                        .bind(job.source.as_str())
                        .bind(&job.event_id)
                        .bind(&job.user_id)
                        .bind(context_text(job))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                return Ok(None);
            }
            Bookkeeping::Retry {
                id,
                run_at_ms,
                error,
                now_ms,
            } => sqlx::query(&sql.retry)
                .bind(id as i64)
                .bind(run_at_ms as i64)
                .bind(error)
                .bind(now_ms as i64),
            Bookkeeping::End {
                id,
                state,
                reason,
                now_ms,
            } => sqlx::query(&sql.end)
                .bind(id as i64)
                .bind(state.as_str())
                .bind(reason)
                .bind(now_ms as i64),
        };
        query.execute(&mut *conn).await?;
        Ok(None)
    }

    async fn claim_due(
        conn: &mut PgConnection,
        now_ms: u64,
        lease_ms: u64,
        lane: Lane,
    ) -> Result<Option<JobRow>, StoreError> {
        // Pending and expired jobs are looked for apart, each along `jobs_due` in run order: one search
        // over both states (an OR) can make the planner collect and sort the whole due backlog per claim.
        let busy = "c.action = 'create_persona' AND EXISTS (
                 SELECT 1 FROM jobs r
                 WHERE r.trigger_name = c.trigger_name AND r.user_id = c.user_id AND r.id <> c.id
                   AND r.state = 'running' AND r.action = 'create_persona'
                   AND r.lease_until_ms >= {NOW})";
        let (order, older) = match lane {
            Lane::Oldest => ("c.run_at_ms, c.id", "FALSE"),
            Lane::Newest => ("c.run_at_ms DESC, c.id DESC", OLDER_PENDING_PERSONA),
        };
        let claim = Self::DIALECT.fill(&format!(
            "WITH pending AS (
                 SELECT c.id, c.run_at_ms FROM jobs c
                 WHERE c.state = 'pending' AND c.run_at_ms <= $1 AND NOT ({busy}) AND NOT ({older})
                 ORDER BY {order} LIMIT 1 FOR UPDATE OF c SKIP LOCKED),
             expired AS (
                 SELECT c.id, c.run_at_ms FROM jobs c
                 WHERE c.state = 'running' AND c.lease_until_ms < {{NOW}} AND NOT ({busy})
                 ORDER BY c.run_at_ms, c.id LIMIT 1 FOR UPDATE OF c SKIP LOCKED)
             UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until_ms = {{NOW}} + $2, updated_ms = $1
             WHERE id = (SELECT id FROM (SELECT * FROM pending UNION ALL SELECT * FROM expired) due
                         ORDER BY run_at_ms, id LIMIT 1)
             RETURNING {{JOB}}"
        ));
        Ok(sqlx::query_as(&claim)
            .bind(now_ms as i64)
            .bind(lease_ms as i64)
            .fetch_optional(conn)
            .await?)
    }

    /// Other replicas may hold running jobs: nothing is released at start; their leases expire instead.
    async fn release_orphans(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Plain deletes: autovacuum makes the space reusable (Postgres gives it back to the file system only on
    /// `VACUUM FULL`, which would lock the tables).
    async fn reclaim_space(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn bytes_on_disk(&self) -> Result<u64, StoreError> {
        let (bytes,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
            .fetch_one(&self.pool)
            .await?;
        Ok(bytes as u64)
    }

    async fn after_erasure(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl SharedLimits for PgStore {
    async fn try_rate(
        &self,
        bucket: &str,
        limit: u32,
        window_ms: u64,
    ) -> Result<Result<(), Duration>, SharedLimitsDown> {
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
    ) -> Result<Option<i32>, SharedLimitsDown> {
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
    ) -> Result<bool, SharedLimitsDown> {
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

    async fn release_slot(
        &self,
        bucket: &str,
        slot: i32,
        holder: &str,
    ) -> Result<(), SharedLimitsDown> {
        sqlx::query("UPDATE slots SET holder = NULL, until_ms = 0 WHERE bucket = $1 AND slot = $2 AND holder = $3")
            .bind(bucket)
            .bind(slot)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
