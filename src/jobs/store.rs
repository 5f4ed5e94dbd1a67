//! The store as one thing: [`JobStore`] gathers the small traits each concern has (intake, queue, job
//! reads, event log, guards, personas, heartbeat, audit, digests), which both backends implement.
//!
//! The SQL is written once, with `$n` placeholders (SQLite reads them too) and named tokens where the
//! dialects differ, filled by [`Dialect`]: `{J}` casts text to `jsonb`, `{T}` `jsonb` to text, `{LOCK}` locks
//! the rows read, `{NOW}` is the database's clock in milliseconds, `{JOB}` the columns of a job. Each concern's
//! statements run through one implementation, a macro expanded for each backend (sqlx's executor traits do not
//! let one generic function borrow a connection of either backend across several statements); a backend
//! supplies only its connections ([`SqlBackend`]) and what really differs (claiming, the group commit, the
//! shared limits, reclaiming space).

use std::sync::{Arc, OnceLock};

use crate::metrics::CommitMetrics;

use super::{
    audit::AuditLog, digest::DigestStore, event_log::EventLog, guards::Guards, personas::Personas,
    queue::Queue, reads::JobReads, upkeep::Upkeep, Delivery, SharedLimits, StoreError,
};

/// Where events, jobs and their outcomes live. Every backend (SQLite, Postgres) behaves the same; a caller
/// that needs one concern only can take that concern's trait instead.
pub trait JobStore:
    Intake + Queue + JobReads + EventLog + Guards + Personas + Heartbeat + AuditLog + DigestStore
{
    /// Retention and erasure on this store.
    fn upkeep(&self) -> Arc<dyn Upkeep>;
    /// Limits shared by every process on this store (Postgres); `None` keeps limits in this process.
    fn shared_limits(&self) -> Option<Arc<dyn SharedLimits>> {
        None
    }
}

/// Events in: the acknowledgement's write, which each backend does its own way (SQLite on its writer thread
/// in one crossing, Postgres in multi-row statements).
#[async_trait::async_trait]
pub trait Intake: Send + Sync + 'static {
    /// Records deliveries and their jobs in one transaction. For each delivery: true when it is new, false
    /// when its (source, event id) was recorded before (a duplicate: its jobs are not added).
    async fn record(&self, deliveries: Vec<Delivery>, now_ms: u64)
        -> Result<Vec<bool>, StoreError>;
    /// Logs events that matched no trigger, for the console: not on the acknowledgement's path, and not
    /// flushed to disk before the sender is answered (nothing is lost that would have run).
    async fn log_events(&self, deliveries: Vec<Delivery>, now_ms: u64) -> Result<(), StoreError>;
    /// Concurrent calls of [`Intake::record`] already share transactions (SQLite's writer thread takes
    /// whatever is queued): the committer then calls it from each request's task instead of gathering
    /// batches on a task of its own.
    fn groups_commits(&self) -> bool {
        false
    }
    /// Reports each transaction of the write path to `metrics` (SQLite's writer thread). A store whose
    /// writes are not one thread's (Postgres) reports none.
    fn observe_commits(&self, _metrics: CommitMetrics) {}
}

/// Proof of life.
#[async_trait::async_trait]
pub trait Heartbeat: Send + Sync {
    /// Writes a heartbeat row: proof that the store takes writes now.
    async fn ping(&self, now_ms: u64) -> Result<(), StoreError>;
}

pub const PING: &str = "INSERT INTO heartbeat (id, at_ms) VALUES (1, $1)
     ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms";

/// What a SQL backend gives the shared implementation: its connections and its dialect.
#[async_trait::async_trait]
pub trait SqlBackend: Send + Sync {
    type Db: sqlx::Database;
    const DIALECT: Dialect;
    /// Where reads go.
    fn reader(&self) -> &sqlx::Pool<Self::Db>;
    /// A connection for writes, held while it is written on (SQLite: its sqlx connection, with the writer
    /// thread parked meanwhile).
    type Writer: std::ops::DerefMut<Target = <Self::Db as sqlx::Database>::Connection> + Send;
    /// A connection for writes.
    async fn writer(&self) -> Result<Self::Writer, StoreError>;
}

/// Which SQL the store speaks: the statements are shared, the tokens in them are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The columns of a job, in the names [`super::row::JobRow`] reads (`jsonb` as text on Postgres), from a
/// statement on `jobs` unaliased. A job that keeps no context of its own (`row::EVENTS_CONTEXT`) comes with its
/// event's raw JSON, which its context is rebuilt from.
const JOB: &str = "id, trigger_name, action, source, event_id, user_id, context{T} AS context,
     CASE WHEN context{T} = 'null' THEN (SELECT e.raw FROM events e WHERE e.id = jobs.event_row) END AS event_raw,
     state, attempts, created_ms, run_at_ms, progress{T} AS progress, last_error, outcome{T} AS outcome,
     history{T} AS history";

/// The database's clock in milliseconds (the same clock as the process's on SQLite, which is on this machine;
/// Postgres's, so that replicas' clocks need not agree).
const PG_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
const SQLITE_NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

impl Dialect {
    pub const fn is_postgres(self) -> bool {
        matches!(self, Dialect::Postgres)
    }

    /// `statement` with its tokens filled for this dialect.
    pub fn fill(self, statement: &str) -> String {
        let (j, t, lock, now) = match self {
            Dialect::Postgres => ("::jsonb", "::text", " FOR UPDATE", PG_NOW),
            Dialect::Sqlite => ("", "", "", SQLITE_NOW),
        };
        statement
            .replace("{JOB}", JOB)
            .replace("{J}", j)
            .replace("{T}", t)
            .replace("{LOCK}", lock)
            .replace("{NOW}", now)
    }

    /// `history` with one attempt's end appended: `{attempt, at_ms, result, error}`.
    pub fn push_history(self, at_ms: &str, result: &str, error: &str) -> String {
        match self {
            Dialect::Postgres => format!(
                "history || jsonb_build_array(jsonb_build_object('attempt', attempts, 'at_ms', CAST({at_ms} AS BIGINT), \
                 'result', CAST({result} AS TEXT), 'error', CAST({error} AS TEXT)))"
            ),
            Dialect::Sqlite => format!(
                "json_insert(history, '$[#]', json_object('attempt', attempts, 'at_ms', {at_ms}, 'result', {result}, 'error', {error}))"
            ),
        }
    }

    /// The JSON object `object` with the object `patch` merged in, a key set to `null` removed.
    pub fn patch(self, object: &str, patch: &str) -> String {
        match self {
            Dialect::Postgres => format!("jsonb_strip_nulls({object} || {patch}::jsonb)"),
            Dialect::Sqlite => format!("json_patch({object}, {patch})"),
        }
    }

    /// The JSON object `object` with `key` set to `true`.
    pub fn set_true(self, object: &str, key: &str) -> String {
        match self {
            Dialect::Postgres => format!("{object} || '{{\"{key}\": true}}'::jsonb"),
            Dialect::Sqlite => format!("json_set({object}, '$.{key}', json('true'))"),
        }
    }

    /// The JSON object `object` without `key`.
    pub fn remove(self, object: &str, key: &str) -> String {
        match self {
            Dialect::Postgres => format!("({object} - '{key}')"),
            Dialect::Sqlite => format!("json_remove({object}, '$.{key}')"),
        }
    }
}

/// `sql` with each `$n` placeholder written `?n` (JSON paths such as `'$[#]'` and `'$.key'` are left): SQLite
/// binds `$n` in order of first appearance (rusqlite runs these on the writer thread), `?n` by its number.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let digit_next = chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if c == '$' && digit_next { '?' } else { c });
    }
    out
}

/// The statements with tokens filled, per dialect: built on first use and kept.
pub struct Statements {
    pub queue: super::queue::Sql,
    pub reads: super::reads::Sql,
    /// Marks job `$1` as holding its guards.
    pub guards_taken: String,
}

impl Statements {
    pub fn of(dialect: Dialect) -> &'static Statements {
        static CELLS: [OnceLock<Statements>; 2] = [OnceLock::new(), OnceLock::new()];
        CELLS[dialect as usize].get_or_init(|| Statements {
            queue: super::queue::Sql::new(dialect),
            reads: super::reads::Sql::new(dialect),
            guards_taken: super::guards::taken(dialect),
        })
    }
}

/// The heartbeat, on a backend's writer.
macro_rules! impl_heartbeat {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::jobs::store::Heartbeat for $store {
            async fn ping(&self, now_ms: u64) -> Result<(), $crate::jobs::StoreError> {
                use $crate::jobs::store::SqlBackend;
                sqlx::query($crate::jobs::store::PING)
                    .bind(now_ms as i64)
                    .execute(&mut *self.writer().await?)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use impl_heartbeat;
