//! Digests: a store concern of their own. Events of a digest trigger are gathered durably per (trigger,
//! key); when the window closes or `max` is reached, the digest is closed and one job is recorded that runs
//! the trigger's action once, with every gathered event. The SQL is written once; `{J}` marks where
//! Postgres casts text to `jsonb`, and `{LOCK}` where it locks the open digest's row.

use serde::Serialize;
use serde_json::{json, Value};

use super::{JobId, StoreError};

/// One event to gather.
#[derive(Debug, Clone)]
pub struct Gather {
    pub trigger: String,
    pub key: String,
    pub source: crate::sources::Source,
    pub action: String,
    pub window_ms: u64,
    pub max: u32,
    /// The gathering job: gathering it again (a retry) adds nothing.
    pub job_id: JobId,
    pub user_id: Option<String>,
    /// The event's context, as the digest's action will see it in `events`.
    pub context: Value,
    pub now_ms: u64,
}

/// Where an event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gathered {
    pub digest_id: i64,
    /// Events in the digest now (this one included).
    pub count: u32,
    /// This event filled it: the digest's job is recorded.
    pub closed: bool,
}

/// A digest still gathering, for the console.
#[derive(Debug, Clone, Serialize)]
pub struct OpenDigest {
    pub id: i64,
    pub trigger: String,
    pub key: String,
    pub count: u32,
    pub max: u32,
    pub opened_ms: u64,
    pub closes_ms: u64,
    /// Who the gathered events are about, in arrival order (at most 20).
    pub users: Vec<String>,
}

/// The context of a digest's job: which digest, and its key.
pub fn job_context(digest_id: i64, key: &str, count: u32) -> Value {
    json!({ "digest_id": digest_id, "key": key, "count": count })
}

#[async_trait::async_trait]
pub trait DigestStore: Send + Sync {
    /// Adds an event to the open digest of (trigger, key), opening one if needed, and closes it when full.
    async fn gather(&self, g: &Gather) -> Result<Gathered, StoreError>;
    /// Closes every open digest whose window ended by `now_ms`, recording its job; how many.
    async fn close_due_digests(&self, now_ms: u64) -> Result<u64, StoreError>;
    /// The gathered events' contexts, in arrival order.
    async fn digest_events(&self, digest_id: i64) -> Result<Vec<Value>, StoreError>;
    async fn open_digests(&self) -> Result<Vec<OpenDigest>, StoreError>;
}

/// The statements, with `{J}` and `{LOCK}` to fill per backend.
pub mod sql {
    pub const ALREADY: &str =
        "SELECT d.id, d.count, CAST(CASE WHEN d.job_id IS NULL THEN 0 ELSE 1 END AS BIGINT)
         FROM digest_events e JOIN digests d ON d.id = e.digest_id WHERE e.job_id = $1";
    pub const OPEN: &str = "INSERT INTO digests (trigger_name, key, source, action, opened_ms, closes_ms, max_events, count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0) ON CONFLICT (trigger_name, key) WHERE job_id IS NULL DO NOTHING";
    pub const CURRENT: &str = "SELECT id, count, max_events, closes_ms FROM digests
         WHERE trigger_name = $1 AND key = $2 AND job_id IS NULL{LOCK}";
    pub const ADD: &str = "INSERT INTO digest_events (job_id, digest_id, seq, user_id, context) VALUES ($1, $2, $3, $4, $5{J})";
    pub const COUNT: &str = "UPDATE digests SET count = count + 1 WHERE id = $1";
    /// Records the digest's job and marks the digest closed by it.
    pub const CLOSE_JOB: &str = "INSERT INTO jobs (trigger_name, action, source, event_id, context, created_ms, run_at_ms, updated_ms)
         SELECT trigger_name, action, source, 'digest:' || id, $2{J}, $3, $3, $3 FROM digests WHERE id = $1 AND job_id IS NULL
         RETURNING id";
    pub const CLOSED_BY: &str = "UPDATE digests SET job_id = $2 WHERE id = $1";
    pub const DUE: &str = "SELECT id, key, count FROM digests WHERE job_id IS NULL AND closes_ms <= $1 ORDER BY closes_ms LIMIT 100{LOCK}";
    pub const EVENTS: &str =
        "SELECT context{T} FROM digest_events WHERE digest_id = $1 ORDER BY job_id";
    pub const OPEN_LIST: &str =
        "SELECT id, trigger_name, key, count, max_events, opened_ms, closes_ms FROM digests
         WHERE job_id IS NULL ORDER BY closes_ms LIMIT 200";
    pub const USERS: &str = "SELECT COALESCE(user_id, 'unknown') FROM digest_events WHERE digest_id = $1 ORDER BY job_id LIMIT 20";

    /// A statement for a backend: Postgres casts (`::jsonb`, `::text`) and row locks; SQLite neither.
    pub fn of(statement: &str, postgres: bool) -> String {
        let (j, t, lock) = if postgres {
            ("::jsonb", "::text", " FOR UPDATE")
        } else {
            ("", "", "")
        };
        statement
            .replace("{J}", j)
            .replace("{T}", t)
            .replace("{LOCK}", lock)
    }
}

/// The gathering transaction, the same on every backend: `$tx` is an open transaction, `$pg` says whether
/// it is Postgres. A macro, because sqlx's executor traits do not let one function borrow a transaction of
/// either backend across several statements.
macro_rules! gather_in {
    ($tx:ident, $pg:expr, $g:expr) => {{
        use $crate::jobs::digest::{sql, Gathered};
        let g = $g;
        let q = |s: &str| sql::of(s, $pg);
        let now = g.now_ms as i64;
        let already: Option<(i64, i64, i64)> = sqlx::query_as(&q(sql::ALREADY))
            .bind(g.job_id as i64)
            .fetch_optional(&mut *$tx)
            .await?;
        if let Some((digest_id, count, closed)) = already {
            $tx.commit().await?;
            return Ok(Gathered {
                digest_id,
                count: count as u32,
                closed: closed == 1,
            });
        }
        let mut current: (i64, i64, i64, i64);
        loop {
            sqlx::query(&q(sql::OPEN))
                .bind(&g.trigger)
                .bind(&g.key)
                .bind(g.source.as_str())
                .bind(&g.action)
                .bind(now)
                .bind(now + g.window_ms as i64)
                .bind(i64::from(g.max))
                .execute(&mut *$tx)
                .await?;
            current = sqlx::query_as(&q(sql::CURRENT))
                .bind(&g.trigger)
                .bind(&g.key)
                .fetch_one(&mut *$tx)
                .await?;
            if current.3 > now {
                break;
            }
            // Its window ended before the closer came by: close it, and gather into a new one.
            close_in!($tx, $pg, current.0, &g.key, current.1);
        }
        let (digest_id, before, max, _) = current;
        sqlx::query(&q(sql::ADD))
            .bind(g.job_id as i64)
            .bind(digest_id)
            .bind(before + 1)
            .bind(g.user_id.as_deref())
            .bind($crate::jobs::row::json_text(&g.context))
            .execute(&mut *$tx)
            .await?;
        sqlx::query(&q(sql::COUNT))
            .bind(digest_id)
            .execute(&mut *$tx)
            .await?;
        let count = before + 1;
        let closed = count >= max;
        if closed {
            close_in!($tx, $pg, digest_id, &g.key, count);
        }
        $tx.commit().await?;
        Ok(Gathered {
            digest_id,
            count: count as u32,
            closed,
        })
    }};
}

/// Closes one digest inside a transaction: records its job and marks the digest closed by it.
macro_rules! close_in {
    ($tx:ident, $pg:expr, $id:expr, $key:expr, $count:expr) => {{
        use $crate::jobs::digest::{job_context, sql};
        let context = job_context($id, $key, $count as u32);
        // Due now, on the clock (a caller may close windows as of a later time).
        let job: Option<(i64,)> = sqlx::query_as(&sql::of(sql::CLOSE_JOB, $pg))
            .bind($id)
            .bind($crate::jobs::row::json_text(&context))
            .bind($crate::jobs::now_ms() as i64)
            .fetch_optional(&mut *$tx)
            .await?;
        if let Some((job,)) = job {
            sqlx::query(&sql::of(sql::CLOSED_BY, $pg))
                .bind($id)
                .bind(job)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// Closes the digests due at `now`, in one transaction.
macro_rules! close_due_in {
    ($tx:ident, $pg:expr, $now:expr) => {{
        use $crate::jobs::digest::sql;
        let now = $now as i64;
        let due: Vec<(i64, String, i64)> = sqlx::query_as(&sql::of(sql::DUE, $pg))
            .bind(now)
            .fetch_all(&mut *$tx)
            .await?;
        for (id, key, count) in &due {
            close_in!($tx, $pg, *id, key, *count);
        }
        $tx.commit().await?;
        Ok(due.len() as u64)
    }};
}

/// The gathered events of a digest, over a pool of either backend.
macro_rules! events_in {
    ($pool:expr, $pg:expr, $id:expr) => {{
        use $crate::jobs::digest::sql;
        let rows: Vec<(String,)> = sqlx::query_as(&sql::of(sql::EVENTS, $pg))
            .bind($id)
            .fetch_all($pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(c,)| serde_json::from_str(&c).unwrap_or_default())
            .collect())
    }};
}

/// The open digests with the first users in each, over a pool of either backend.
macro_rules! open_in {
    ($pool:expr, $pg:expr) => {{
        use $crate::jobs::digest::{sql, OpenDigest};
        let rows: Vec<(i64, String, String, i64, i64, i64, i64)> =
            sqlx::query_as(&sql::of(sql::OPEN_LIST, $pg))
                .fetch_all($pool)
                .await?;
        let mut open = Vec::new();
        for (id, trigger, key, count, max, opened_ms, closes_ms) in rows {
            let users: Vec<(String,)> = sqlx::query_as(&sql::of(sql::USERS, $pg))
                .bind(id)
                .fetch_all($pool)
                .await?;
            open.push(OpenDigest {
                id,
                trigger,
                key,
                count: count as u32,
                max: max as u32,
                opened_ms: opened_ms as u64,
                closes_ms: closes_ms as u64,
                users: users.into_iter().map(|(u,)| u).collect(),
            });
        }
        Ok(open)
    }};
}

/// The digests on a backend: gathering and closing in a transaction on its writer, reads on its readers.
macro_rules! impl_digest_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::jobs::digest::DigestStore for $store {
            async fn gather(
                &self,
                g: &$crate::jobs::digest::Gather,
            ) -> Result<$crate::jobs::digest::Gathered, $crate::jobs::StoreError> {
                use sqlx::Acquire;
                let mut conn = self.writer().await?;
                let mut tx = conn.begin().await?;
                $crate::jobs::digest::gather_in!(tx, Self::POSTGRES, g)
            }

            async fn close_due_digests(
                &self,
                now_ms: u64,
            ) -> Result<u64, $crate::jobs::StoreError> {
                use sqlx::Acquire;
                let mut conn = self.writer().await?;
                let mut tx = conn.begin().await?;
                $crate::jobs::digest::close_due_in!(tx, Self::POSTGRES, now_ms)
            }

            async fn digest_events(
                &self,
                digest_id: i64,
            ) -> Result<Vec<serde_json::Value>, $crate::jobs::StoreError> {
                $crate::jobs::digest::events_in!(self.reader(), Self::POSTGRES, digest_id)
            }

            async fn open_digests(
                &self,
            ) -> Result<Vec<$crate::jobs::digest::OpenDigest>, $crate::jobs::StoreError> {
                $crate::jobs::digest::open_in!(self.reader(), Self::POSTGRES)
            }
        }

        impl $store {
            const POSTGRES: bool = <Self as $crate::jobs::store::SqlBackend>::DIALECT.is_postgres();
        }
    };
}

pub(crate) use {close_due_in, events_in, gather_in, open_in};
