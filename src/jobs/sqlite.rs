//! The embedded durable store: SQLite in WAL mode, created and migrated on start.
//!
//! Acknowledgements are `synchronous=FULL` by default: the commit that records a webhook's events is on
//! disk before the webhook is answered, even if the machine loses power right after. Job bookkeeping
//! (claims, outcomes) commits without its own fsync and is made durable by the next acknowledgement's
//! (in WAL mode one fsync covers every earlier commit); a killed process loses none of it, a power cut at
//! worst the last moments of bookkeeping, which re-runs those jobs under the in-flight guards.
//! `SQLITE_SYNCHRONOUS=normal` drops the fsync from acknowledgements too. One process per database file.
//!
//! sqlx makes every statement a round trip to the connection's thread (about 0.2 ms on a busy 2-core
//! machine), and SQLite has one writer: so a group commit and an event-log batch run whole on the writer
//! connection's handle in one thread crossing ([`sqlite_writer`]), acknowledgements go first (job
//! bookkeeping waits while one is queued), and the writer stays in `FULL` between acknowledgements instead
//! of switching for each. Every write, bookkeeping included, is on that one connection.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::Notify;

use serde_json::Value;
use sqlx::{
    sqlite::{
        SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
        SqliteSynchronous,
    },
    Acquire, SqlitePool,
};

use super::{
    audit::{self, AuditEntry, AuditLog, AuditRecord},
    digest::{self, DigestStore, Gather, Gathered},
    events,
    row::{self, json_text, JobRow},
    sqlite_writer,
    upkeep::{sql, Forgotten, StoreStats, Upkeep},
    Delivery, Guard, Hold, Job, JobCounts, JobId, JobState, JobStore, KnownPersona, NewJob,
    StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Claims the next due job (see `claim`); `CLAIM_BUSY` is replaced by [`CLAIM_BUSY`].
pub const CLAIM_SQL: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until_ms = ?1 + ?2, updated_ms = ?1
     WHERE id = (
         SELECT id FROM (
             SELECT * FROM (SELECT c.id, c.run_at_ms FROM jobs c
                            WHERE c.state = 'pending' AND c.run_at_ms <= ?1 AND NOT (CLAIM_BUSY)
                            ORDER BY c.run_at_ms, c.id LIMIT 1)
             UNION ALL
             SELECT * FROM (SELECT c.id, c.run_at_ms FROM jobs c
                            WHERE c.state = 'running' AND c.lease_until_ms < ?1 AND NOT (CLAIM_BUSY)
                            ORDER BY c.run_at_ms, c.id LIMIT 1))
         ORDER BY run_at_ms, id LIMIT 1)
     RETURNING *";

/// A persona job whose (trigger, user) has another persona job running: it waits its turn.
pub const CLAIM_BUSY_SQL: &str = "c.action = 'create_persona' AND EXISTS (
         SELECT 1 FROM jobs r INDEXED BY jobs_trigger_user
         WHERE r.trigger_name = c.trigger_name AND r.user_id = c.user_id AND r.id != c.id
           AND r.state = 'running' AND r.action = 'create_persona' AND r.lease_until_ms >= ?1)";

/// `PRAGMA auto_vacuum` of a file in incremental mode.
const INCREMENTAL: i64 = 2;

/// The database file a `sqlite:` URL names; `None` for an in-memory database.
pub fn database_file(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or("");
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

#[derive(Clone)]
pub struct SqliteStore {
    /// The database file (`None` in memory), for its size on disk.
    file: Option<PathBuf>,
    /// The one writer connection.
    pool: SqlitePool,
    /// Readers.
    reader: SqlitePool,
    /// Acknowledgements fsync (`SQLITE_SYNCHRONOUS=full`).
    ack_full: bool,
    /// Acknowledgements go first: bookkeeping waits while one is waiting for the writer.
    gate: Arc<Gate>,
}

/// The writer's queue order. Without it, a group commit waited behind every worker's claim and outcome
/// (16 workers: ~10 ms per commit under load) while the webhooks it answers were waiting too.
#[derive(Default)]
struct Gate {
    acks: AtomicUsize,
    open: Notify,
    /// The writer connection is in `synchronous = FULL` (set for acknowledgements).
    full: AtomicBool,
}

/// An acknowledgement's claim on the writer, from before it queues until it is done.
struct AckTurn<'a>(&'a Gate);

impl<'a> AckTurn<'a> {
    fn take(gate: &'a Gate) -> Self {
        gate.acks.fetch_add(1, Ordering::SeqCst);
        AckTurn(gate)
    }
}

impl Drop for AckTurn<'_> {
    fn drop(&mut self) {
        if self.0.acks.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.open.notify_waiters();
        }
    }
}

impl SqliteStore {
    /// Opens (creating the file and its folder when missing) and migrates the database at `url`
    /// (`sqlite://path/to/file.db`, or `sqlite::memory:`).
    pub async fn open(url: &str, synchronous_full: bool) -> Result<Self, StoreError> {
        if let Some(dir) = database_file(url)
            .as_deref()
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if synchronous_full {
                // A connection the pool opens anew is safe for acknowledgements from the start.
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Freed pages go back to the file system a little at a time (retention's `reclaim`). A new
            // file takes this at creation; an older one needs one VACUUM, run below.
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            // Deleted rows are overwritten with zeros, so an erased person's data is not left in free
            // pages or free space inside pages.
            .pragma("secure_delete", "on");
        // SQLite takes one writer at a time. All writes (group commits, claims, outcomes) queue for one
        // connection, in order, instead of meeting in SQLite's lock and sleeping in its busy handler, which
        // put long stalls on the webhook's answer. Reads use a pool of their own (WAL lets them run beside
        // the writer). An in-memory database lives in one connection, so it is both.
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        let (auto_vacuum,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum")
            .fetch_one(&pool)
            .await?;
        if auto_vacuum != INCREMENTAL && !in_memory {
            tracing::info!(
                "switching the database to incremental vacuum: one VACUUM (rewrites the file once)"
            );
            sqlx::query("VACUUM").execute(&pool).await?;
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let reader = if in_memory {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .idle_timeout(None)
                .max_lifetime(None)
                // 512 KiB of page cache each (SQLite's default is 2 MiB): the console's pages read a
                // few index pages, and four full default caches were most of the server's memory growth
                // as the file grew.
                .connect_with(options.pragma("cache_size", "-512"))
                .await?
        };
        Ok(Self {
            file: database_file(url),
            pool,
            reader,
            ack_full: synchronous_full,
            gate: Arc::new(Gate {
                full: AtomicBool::new(synchronous_full),
                ..Gate::default()
            }),
        })
    }

    /// The writer, for job bookkeeping and the event log: after any acknowledgement that is waiting.
    async fn bookkeeping(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, StoreError> {
        loop {
            // Registered before the check: a notification between the two is not lost.
            let opened = self.gate.open.notified();
            if self.gate.acks.load(Ordering::SeqCst) == 0 {
                break;
            }
            opened.await;
        }
        let mut conn = self.pool.acquire().await?;
        if self.gate.full.load(Ordering::SeqCst) {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
            self.gate.full.store(false, Ordering::SeqCst);
        }
        Ok(conn)
    }

    /// Ends a job's attempt as `dead` or `held`, with the reason, in its history too.
    async fn set_final(&self, id: JobId, state: &str, reason: String) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET state = ?2, last_error = ?3, lease_until_ms = NULL, updated_ms = ?4,
                         history = json_insert(history, '$[#]', json_object('attempt', attempts, 'at_ms', ?4, 'result', ?2, 'error', ?3)) WHERE id = ?1")
            .bind(id as i64)
            .bind(state)
            .bind(reason)
            .bind(super::now_ms() as i64)
            .execute(&mut *self.bookkeeping().await?)
            .await?;
        Ok(())
    }

    /// The connection pool, for tests that need to break the store on purpose.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl JobStore for SqliteStore {
    async fn record(
        &self,
        deliveries: Vec<Delivery>,
        now_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        let _first = AckTurn::take(&self.gate);
        let conn = self.pool.acquire().await?;
        let (gate, ack_full) = (self.gate.clone(), self.ack_full);
        sqlite_writer::on_writer(conn, move |db| {
            // The writer stays in FULL from one acknowledgement to the next; bookkeeping switches it back.
            if ack_full && !gate.full.load(Ordering::SeqCst) {
                db.execute_batch("PRAGMA synchronous = FULL")?;
                gate.full.store(true, Ordering::SeqCst);
            }
            sqlite_writer::record(db, &deliveries, now_ms)
        })
        .await
    }

    async fn log_events(&self, deliveries: Vec<Delivery>, now_ms: u64) -> Result<(), StoreError> {
        let conn = self.bookkeeping().await?;
        sqlite_writer::on_writer(conn, move |db| {
            sqlite_writer::record(db, &deliveries, now_ms).map(|_| ())
        })
        .await
    }

    async fn events(
        &self,
        filter: &events::EventFilter,
        limit: usize,
    ) -> Result<events::EventPage, StoreError> {
        let (sql, binds) = events::list_query(filter, limit);
        let rows = events::bind_all(sqlx::query_as(&sql), binds)
            .fetch_all(&self.reader)
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
        Ok(query.fetch_all(&self.reader).await?)
    }

    async fn event(&self, row: i64) -> Result<Option<(events::EventDetail, Vec<Job>)>, StoreError> {
        let detail: Option<events::EventDetail> = sqlx::query_as(events::DETAIL_QUERY)
            .bind(row)
            .fetch_optional(&self.reader)
            .await?;
        let Some(detail) = detail else {
            return Ok(None);
        };
        let jobs: Vec<JobRow> =
            sqlx::query_as("SELECT * FROM jobs WHERE event_row = ?1 ORDER BY id")
                .bind(row)
                .fetch_all(&self.reader)
                .await?;
        Ok(Some((detail, row::jobs(jobs)?)))
    }

    async fn event_minutes(&self, minute: i64) -> Result<Vec<events::MinuteCount>, StoreError> {
        Ok(sqlx::query_as(events::MINUTES_SINCE)
            .bind(minute)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn claim(&self, now_ms: u64, lease_ms: u64) -> Result<Option<Job>, StoreError> {
        // Pending and expired jobs are looked for apart, each along its index in run order: one search over
        // both states (an OR) collected the whole backlog and sorted it, on every claim.
        let row: Option<JobRow> = sqlx::query_as(&CLAIM_SQL.replace("CLAIM_BUSY", CLAIM_BUSY_SQL))
            .bind(now_ms as i64)
            .bind(lease_ms as i64)
            .fetch_optional(&mut *self.bookkeeping().await?)
            .await?;
        row.map(Job::try_from).transpose()
    }

    async fn release_running(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'pending', lease_until_ms = NULL WHERE state = 'running'",
        )
        .execute(&mut *self.bookkeeping().await?)
        .await?;
        Ok(done.rows_affected())
    }

    async fn renew_lease(&self, id: JobId, lease_ms: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET lease_until_ms = ?2 WHERE id = ?1 AND state = 'running'")
            .bind(id as i64)
            .bind((super::now_ms() + lease_ms) as i64)
            .execute(&mut *self.bookkeeping().await?)
            .await?;
        Ok(())
    }

    async fn merge_progress(&self, id: JobId, patch: Value) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET progress = json_patch(progress, ?2) WHERE id = ?1")
            .bind(id as i64)
            .bind(json_text(&patch))
            .execute(&mut *self.bookkeeping().await?)
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
        let done = sqlx::query("UPDATE jobs SET state = 'done', outcome = ?2, lease_until_ms = NULL, updated_ms = ?3,
                         history = json_insert(history, '$[#]', json_object('attempt', attempts, 'at_ms', ?3, 'result', 'done', 'error', NULL)) WHERE id = ?1")
            .bind(id as i64)
            .bind(json_text(&outcome))
            .bind(now);
        let mut conn = self.bookkeeping().await?;
        if followups.is_empty() {
            // One statement commits on its own: no BEGIN and COMMIT round trips.
            done.execute(&mut *conn).await?;
            return Ok(());
        }
        let mut tx = conn.begin().await?;
        done.execute(&mut *tx).await?;
        for job in &followups {
            sqlx::query(
                "INSERT INTO jobs (event_row, trigger_name, action, source, event_id, user_id, context,
                                   created_ms, run_at_ms, updated_ms)
                 SELECT event_row, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8 FROM jobs WHERE id = ?1",
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
        sqlx::query("UPDATE jobs SET state = 'pending', run_at_ms = ?2, last_error = ?3, lease_until_ms = NULL, updated_ms = ?4,
                         history = json_insert(history, '$[#]', json_object('attempt', attempts, 'at_ms', ?4, 'result', 'retry', 'error', ?3)) WHERE id = ?1")
            .bind(id as i64)
            .bind(run_at_ms as i64)
            .bind(error)
            .bind(super::now_ms() as i64)
            .execute(&mut *self.bookkeeping().await?)
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
        let mut conn = self.bookkeeping().await?;
        let mut tx = conn.begin().await?;
        for guard in guards {
            let refused = match guard {
                Guard::Cooldown {
                    trigger,
                    user,
                    window_ms,
                } => {
                    let taken: Option<(i64,)> = sqlx::query_as(
                        "INSERT INTO cooldowns (trigger_name, user_id, last_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (trigger_name, user_id) DO UPDATE SET last_ms = excluded.last_ms
                         WHERE cooldowns.last_ms <= ?3 - ?4
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
                        "INSERT INTO budget_usage (scope, window_start_ms, used) SELECT ?1, ?2, 1 WHERE ?3 > 0
                         ON CONFLICT (scope, window_start_ms) DO UPDATE SET used = budget_usage.used + 1
                         WHERE budget_usage.used < ?3
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
        sqlx::query("UPDATE jobs SET progress = json_set(progress, '$.guards_taken', json('true')) WHERE id = ?1")
            .bind(job as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn requeue(&self, id: JobId, now_ms: u64) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'pending', run_at_ms = ?2, attempts = 0, outcome = NULL, updated_ms = ?2,
                             progress = json_set(json_remove(progress, '$.guards_taken'), '$.replay', json('true')),
                             history = json_insert(history, '$[#]', json_object('attempt', attempts, 'at_ms', ?2, 'result', 'replayed', 'error', NULL))
             WHERE id = ?1 AND state IN ('done', 'dead', 'held')",
        )
        .bind(id as i64)
        .bind(now_ms as i64)
        .execute(&mut *self.bookkeeping().await?)
        .await?;
        if done.rows_affected() == 0 && self.get(id).await?.is_none() {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let row: Option<JobRow> = sqlx::query_as("SELECT * FROM jobs WHERE id = ?1")
            .bind(id as i64)
            .fetch_optional(&self.reader)
            .await?;
        row.map(Job::try_from).transpose()
    }

    async fn finished(
        &self,
        action: &str,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(
            "SELECT * FROM jobs WHERE action = ?1 AND state = 'done' AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )
        .bind(action)
        .bind(before.map_or(i64::MAX, |b| b as i64))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        row::jobs(rows)
    }

    async fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, StoreError> {
        let rows: Vec<JobRow> = match state {
            Some(s) => {
                sqlx::query_as("SELECT * FROM jobs WHERE state = ?1 ORDER BY id DESC LIMIT ?2")
                    .bind(s.as_str())
                    .bind(limit as i64)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => {
                sqlx::query_as("SELECT * FROM jobs ORDER BY id DESC LIMIT ?1")
                    .bind(limit as i64)
                    .fetch_all(&self.reader)
                    .await?
            }
        };
        row::jobs(rows)
    }

    async fn counts(&self) -> Result<JobCounts, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .fetch_all(&self.reader)
                .await?;
        let mut c = JobCounts::from_rows(rows);
        let oldest: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT MIN(created_ms) FROM jobs WHERE state = 'pending'")
                .fetch_optional(&self.reader)
                .await?;
        c.oldest_pending_ms = oldest.and_then(|(m,)| m).map(|m| m as u64);
        Ok(c)
    }

    async fn next_due_ms(&self) -> Result<Option<u64>, StoreError> {
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT MIN(run_at_ms) FROM jobs WHERE state = 'pending'")
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.and_then(|(m,)| m).map(|m| m as u64))
    }

    async fn ping(&self, now_ms: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO heartbeat (id, at_ms) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms",
        )
        .bind(now_ms as i64)
        .execute(&mut *self.bookkeeping().await?)
        .await?;
        Ok(())
    }

    fn upkeep(&self) -> Arc<dyn Upkeep> {
        Arc::new(self.clone())
    }

    async fn persona_for(
        &self,
        trigger: &str,
        user: &str,
    ) -> Result<Option<KnownPersona>, StoreError> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT persona_id, name FROM personas WHERE trigger_name = ?1 AND user_id = ?2",
        )
        .bind(trigger)
        .bind(user)
        .fetch_optional(&self.reader)
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
            "INSERT INTO personas (trigger_name, user_id, persona_id, name, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (trigger_name, user_id) DO UPDATE SET persona_id = excluded.persona_id, name = excluded.name,
             updated_ms = excluded.updated_ms",
        )
        .bind(trigger)
        .bind(user)
        .bind(&persona.persona_id)
        .bind(&persona.name)
        .bind(now_ms as i64)
        .execute(&mut *self.bookkeeping().await?)
        .await?;
        Ok(())
    }
}

/// Free pages given back per step of the incremental vacuum: a few milliseconds of the writer each.
const VACUUM_STEP: i64 = 1000;

#[async_trait::async_trait]
impl Upkeep for SqliteStore {
    async fn prune_events(&self, before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        let mut conn = self.bookkeeping().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(&sql::sqlite(&sql::unlink_old_events()))
            .bind(before_ms as i64)
            .bind(limit as i64)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query(&sql::sqlite(&sql::delete_old_events()))
            .bind(before_ms as i64)
            .bind(limit as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(&sql::sqlite(sql::DELETE_OLD_MINUTES))
            .bind(before_ms as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn prune_jobs(&self, before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        let mut conn = self.bookkeeping().await?;
        let deleted = sqlx::query(&sql::sqlite(sql::DELETE_OLD_JOBS))
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
                sqlx::query(&sql::sqlite(statement))
                    .bind(before_ms as i64)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(deleted)
    }

    async fn reclaim(&self) -> Result<(), StoreError> {
        loop {
            let (free,): (i64,) = sqlx::query_as("PRAGMA freelist_count")
                .fetch_one(&self.reader)
                .await?;
            if free == 0 {
                break;
            }
            sqlx::query(&format!("PRAGMA incremental_vacuum({VACUUM_STEP})"))
                .execute(&mut *self.bookkeeping().await?)
                .await?;
            if free <= VACUUM_STEP {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.checkpoint().await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let bytes = self.file.as_ref().map_or(0, |file| {
            let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
            let mut wal = file.as_os_str().to_owned();
            wal.push("-wal");
            size(file) + size(Path::new(&wal))
        });
        let (oldest_event,): (Option<i64>,) = sqlx::query_as(sql::OLDEST_EVENT)
            .fetch_one(&self.reader)
            .await?;
        let oldest_job: Option<(i64,)> = sqlx::query_as(sql::OLDEST_JOB)
            .fetch_optional(&self.reader)
            .await?;
        Ok(StoreStats {
            bytes,
            oldest_event_ms: oldest_event.map(|m| m as u64),
            oldest_job_ms: oldest_job.map(|(m,)| m as u64),
        })
    }

    async fn forget(&self, user: &str) -> Result<Forgotten, StoreError> {
        let mut conn = self.bookkeeping().await?;
        let mut tx = conn.begin().await?;
        let mut removed = [0u64; 6];
        for (n, statement) in removed.iter_mut().zip(sql::FORGET) {
            *n = sqlx::query(&sql::sqlite(statement))
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        drop(conn);
        // The rows are zeroed in the database's pages (secure_delete); the write-ahead log still holds
        // earlier copies of those pages until it is checkpointed and emptied.
        self.checkpoint().await?;
        Ok(Forgotten::from_counts(removed))
    }
}

impl SqliteStore {
    /// Copies the write-ahead log into the database and empties it (retried while a reader holds it).
    async fn checkpoint(&self) -> Result<(), StoreError> {
        for _ in 0..50 {
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *self.bookkeeping().await?)
                .await?;
            if busy == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(StoreError::Unavailable(
            "the write-ahead log could not be emptied: a reader held it for a second".into(),
        ))
    }
}

#[async_trait::async_trait]
impl DigestStore for SqliteStore {
    async fn gather(&self, g: &Gather) -> Result<Gathered, StoreError> {
        let mut conn = self.bookkeeping().await?;
        let mut tx = conn.begin().await?;
        digest::gather_in!(tx, false, g)
    }

    async fn close_due_digests(&self, now_ms: u64) -> Result<u64, StoreError> {
        let mut conn = self.bookkeeping().await?;
        let mut tx = conn.begin().await?;
        digest::close_due_in!(tx, false, now_ms)
    }

    async fn digest_events(&self, digest_id: i64) -> Result<Vec<Value>, StoreError> {
        digest::events_in!(&self.reader, false, digest_id)
    }

    async fn open_digests(&self) -> Result<Vec<digest::OpenDigest>, StoreError> {
        digest::open_in!(&self.reader, false)
    }
}

#[async_trait::async_trait]
impl AuditLog for SqliteStore {
    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        audit::query::insert::<sqlx::Sqlite>(entry)
            .execute(&mut *self.bookkeeping().await?)
            .await?;
        Ok(())
    }

    async fn audit_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = audit::query::page::<sqlx::Sqlite>(before, limit)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }

    async fn prune_audit(&self, before_ms: u64, batch: usize) -> Result<u64, StoreError> {
        let done = audit::query::prune::<sqlx::Sqlite>(before_ms, batch)
            .execute(&mut *self.bookkeeping().await?)
            .await?;
        Ok(done.rows_affected())
    }
}
