//! The audit trail: who signed in (or failed to), replayed, reloaded or erased what, from where and when.
//! One small store concern, written once in SQL both dialects accept, and implemented by each backend.

use serde::Serialize;

use super::StoreError;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    SignIn,
    SignInFailed,
    SignOut,
    /// One job put back in the queue.
    Replay,
    /// Every job in a state put back in the queue.
    ReplayAll,
    Reload,
    /// One person's data erased.
    Forget,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::SignIn => "sign_in",
            AuditAction::SignInFailed => "sign_in_failed",
            AuditAction::SignOut => "sign_out",
            AuditAction::Replay => "replay",
            AuditAction::ReplayAll => "replay_all",
            AuditAction::Reload => "reload",
            AuditAction::Forget => "forget",
        }
    }
}

/// Which door it came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The web console (session cookie or its sign-in form).
    Console,
    /// `/admin/*` with a Bearer token.
    Api,
    /// The command line, on the store directly.
    Cli,
    /// A signal to the process (SIGHUP).
    Signal,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Console => "console",
            Via::Api => "api",
            Via::Cli => "cli",
            Via::Signal => "signal",
        }
    }
}

/// One line of the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub action: AuditAction,
    pub via: Via,
    /// The client's address (after trusted proxies), or `local` for the CLI and signals.
    pub client: String,
    /// What it touched: job ids, counts, a reason. Never a secret.
    pub detail: String,
}

/// A stored line, with its key for paging.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at_ms: u64,
    /// As stored: an action this build no longer knows still lists.
    pub action: String,
    pub via: String,
    pub client: String,
    pub detail: String,
}

/// What a replay of every job in a state touched, for the audit trail: the count and the first ids.
pub fn replayed_detail(state: &str, ids: &[u64]) -> String {
    let shown: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
    let more = if ids.len() > 20 { ", …" } else { "" };
    format!(
        "{} {state} jobs: {}{more}",
        ids.len(),
        if shown.is_empty() {
            "none".into()
        } else {
            shown.join(", ")
        }
    )
}

pub type AuditRow = (i64, i64, String, String, String, String);

impl From<AuditRow> for AuditRecord {
    fn from((id, at_ms, action, via, client, detail): AuditRow) -> Self {
        AuditRecord {
            id,
            at_ms: at_ms as u64,
            action,
            via,
            client,
            detail,
        }
    }
}

pub const INSERT_SQL: &str =
    "INSERT INTO audit (at_ms, action, via, client, detail) VALUES ($1, $2, $3, $4, $5)";
/// Newest first, below id `$1`.
pub const PAGE_SQL: &str = "SELECT id, at_ms, action, via, client, detail FROM audit
     WHERE id < $1 ORDER BY id DESC LIMIT $2";
/// At most `$2` lines older than `$1`, oldest first: retention deletes in small batches.
pub const PRUNE_SQL: &str = "DELETE FROM audit WHERE id IN (
     SELECT id FROM audit WHERE at_ms < $1 ORDER BY id LIMIT $2)";

/// Where the trail is kept.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync {
    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// At most `limit` lines, newest first, older than line `before` when given.
    async fn audit_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Deletes at most `batch` lines older than `before_ms`; how many went.
    async fn prune_audit(&self, before_ms: u64, batch: usize) -> Result<u64, StoreError>;
}

/// The statements, built once for either backend: each store only picks the connection they run on.
pub mod query {
    use sqlx::{query::Query, query::QueryAs, Database, Encode, FromRow, Type};

    use super::{AuditEntry, AuditRow, INSERT_SQL, PAGE_SQL, PRUNE_SQL};

    pub fn insert<'q, DB: Database>(entry: &'q AuditEntry) -> Query<'q, DB, DB::Arguments<'q>>
    where
        i64: Encode<'q, DB> + Type<DB>,
        &'q str: Encode<'q, DB> + Type<DB>,
    {
        sqlx::query(INSERT_SQL)
            .bind(entry.at_ms as i64)
            .bind(entry.action.as_str())
            .bind(entry.via.as_str())
            .bind(entry.client.as_str())
            .bind(entry.detail.as_str())
    }

    pub fn page<'q, DB: Database>(
        before: Option<i64>,
        limit: usize,
    ) -> QueryAs<'q, DB, AuditRow, DB::Arguments<'q>>
    where
        i64: Encode<'q, DB> + Type<DB>,
        AuditRow: for<'r> FromRow<'r, DB::Row>,
    {
        sqlx::query_as(PAGE_SQL)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit as i64)
    }

    pub fn prune<'q, DB: Database>(before_ms: u64, batch: usize) -> Query<'q, DB, DB::Arguments<'q>>
    where
        i64: Encode<'q, DB> + Type<DB>,
    {
        sqlx::query(PRUNE_SQL)
            .bind(before_ms as i64)
            .bind(batch as i64)
    }
}

/// The trail on a backend: lines written on its writer, pages read from its readers.
macro_rules! impl_audit_log {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::jobs::audit::AuditLog for $store {
            async fn audit(
                &self,
                entry: &$crate::jobs::audit::AuditEntry,
            ) -> Result<(), $crate::jobs::StoreError> {
                $crate::jobs::audit::query::insert(entry)
                    .execute(&mut *self.writer().await?)
                    .await?;
                Ok(())
            }

            async fn audit_page(
                &self,
                before: Option<i64>,
                limit: usize,
            ) -> Result<Vec<$crate::jobs::audit::AuditRecord>, $crate::jobs::StoreError> {
                let rows = $crate::jobs::audit::query::page(before, limit)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows
                    .into_iter()
                    .map($crate::jobs::audit::AuditRecord::from)
                    .collect())
            }

            async fn prune_audit(
                &self,
                before_ms: u64,
                batch: usize,
            ) -> Result<u64, $crate::jobs::StoreError> {
                let done = $crate::jobs::audit::query::prune(before_ms, batch)
                    .execute(&mut *self.writer().await?)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use impl_audit_log;
