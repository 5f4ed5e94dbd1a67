//! Jobs as the console, the admin API and the alerter read them: one job, a list, the counts per state.

use super::{store::Dialect, Job, JobCounts, JobId, JobState, StoreError};

/// Jobs not done, per state ([`JobReads::backlog`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: u64,
    pub running: u64,
    pub dead: u64,
    pub held: u64,
    /// When the oldest pending job was created.
    pub oldest_pending_ms: Option<u64>,
}

impl Backlog {
    /// No job is waiting or running.
    pub fn settled(&self) -> bool {
        self.pending == 0 && self.running == 0
    }
}

#[async_trait::async_trait]
pub trait JobReads: Send + Sync {
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;
    /// Finished (`done`) jobs of one action, newest first, older than job `before` when given.
    async fn finished(
        &self,
        action: &str,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError>;
    /// Newest first.
    async fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>, StoreError>;
    async fn counts(&self) -> Result<JobCounts, StoreError>;
    /// The jobs not done, counted along the state index, and the oldest pending one: what monitors poll
    /// (every half second). [`JobReads::counts`] also counts the done jobs retention keeps, which costs a
    /// pass over all of them.
    async fn backlog(&self) -> Result<Backlog, StoreError>;
    /// When the next pending job is due, if any.
    async fn next_due_ms(&self) -> Result<Option<u64>, StoreError>;
}

/// The reads' statements in one dialect.
pub struct Sql {
    /// Jobs per state. SQLite keeps the count of done jobs as they change (migration `0011_done_count`):
    /// counting them was a pass over nearly every job kept, on every health probe.
    pub counts: String,
    pub get: String,
    pub finished: String,
    pub in_state: String,
    pub all: String,
    pub of_event: String,
}

pub const COUNTS: &str = "SELECT state, COUNT(*) FROM jobs GROUP BY state";
pub const NOT_DONE: &str = "SELECT state, COUNT(*) FROM jobs WHERE state IN ('pending', 'running', 'dead', 'held') GROUP BY state";
/// The first pending job by id is the oldest created (one index step, not a pass over the backlog).
pub const OLDEST_PENDING: &str =
    "SELECT created_ms FROM jobs WHERE id = (SELECT MIN(id) FROM jobs WHERE state = 'pending')";
pub const NEXT_DUE: &str = "SELECT MIN(run_at_ms) FROM jobs WHERE state = 'pending'";

impl Sql {
    pub(crate) fn new(d: Dialect) -> Self {
        Sql {
            counts: match d {
                Dialect::Sqlite => format!(
                    "{NOT_DONE} UNION ALL SELECT 'done', n FROM job_done_count WHERE id = 1"
                ),
                Dialect::Postgres => COUNTS.to_string(),
            },
            get: d.fill("SELECT {JOB} FROM jobs WHERE id = $1"),
            finished: d.fill(
                "SELECT {JOB} FROM jobs WHERE action = $1 AND state = 'done' AND id < $2 ORDER BY id DESC LIMIT $3",
            ),
            in_state: d.fill("SELECT {JOB} FROM jobs WHERE state = $1 ORDER BY id DESC LIMIT $2"),
            all: d.fill("SELECT {JOB} FROM jobs ORDER BY id DESC LIMIT $1"),
            of_event: d.fill("SELECT {JOB} FROM jobs WHERE event_row = $1 ORDER BY id"),
        }
    }
}

/// The reads on a backend's readers.
macro_rules! impl_job_reads {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::jobs::reads::JobReads for $store {
            async fn get(
                &self,
                id: $crate::jobs::JobId,
            ) -> Result<Option<$crate::jobs::Job>, $crate::jobs::StoreError> {
                let row: Option<$crate::jobs::row::JobRow> = sqlx::query_as(&Self::reads().get)
                    .bind(id as i64)
                    .fetch_optional(self.reader())
                    .await?;
                row.map($crate::jobs::Job::try_from).transpose()
            }

            async fn finished(
                &self,
                action: &str,
                before: Option<$crate::jobs::JobId>,
                limit: usize,
            ) -> Result<Vec<$crate::jobs::Job>, $crate::jobs::StoreError> {
                let rows = sqlx::query_as(&Self::reads().finished)
                    .bind(action)
                    .bind(before.map_or(i64::MAX, |b| b as i64))
                    .bind(limit as i64)
                    .fetch_all(self.reader())
                    .await?;
                $crate::jobs::row::jobs(rows)
            }

            async fn list(
                &self,
                state: Option<$crate::jobs::JobState>,
                limit: usize,
            ) -> Result<Vec<$crate::jobs::Job>, $crate::jobs::StoreError> {
                let sql = Self::reads();
                let query = match state {
                    Some(s) => sqlx::query_as(&sql.in_state).bind(s.as_str()),
                    None => sqlx::query_as(&sql.all),
                };
                let rows = query.bind(limit as i64).fetch_all(self.reader()).await?;
                $crate::jobs::row::jobs(rows)
            }

            async fn counts(&self) -> Result<$crate::jobs::JobCounts, $crate::jobs::StoreError> {
                use $crate::jobs::reads::OLDEST_PENDING;
                let rows: Vec<(String, i64)> = sqlx::query_as(&Self::reads().counts)
                    .fetch_all(self.reader())
                    .await?;
                let mut c = $crate::jobs::JobCounts::from_rows(rows);
                let oldest: Option<(i64,)> = sqlx::query_as(OLDEST_PENDING)
                    .fetch_optional(self.reader())
                    .await?;
                c.oldest_pending_ms = oldest.map(|(m,)| m as u64);
                Ok(c)
            }

            async fn backlog(
                &self,
            ) -> Result<$crate::jobs::reads::Backlog, $crate::jobs::StoreError> {
                use $crate::jobs::reads::{NOT_DONE, OLDEST_PENDING};
                let rows: Vec<(String, i64)> =
                    sqlx::query_as(NOT_DONE).fetch_all(self.reader()).await?;
                let c = $crate::jobs::JobCounts::from_rows(rows);
                let oldest: Option<(i64,)> = sqlx::query_as(OLDEST_PENDING)
                    .fetch_optional(self.reader())
                    .await?;
                Ok($crate::jobs::reads::Backlog {
                    pending: c.pending,
                    running: c.running,
                    dead: c.dead,
                    held: c.held,
                    oldest_pending_ms: oldest.map(|(m,)| m as u64),
                })
            }

            async fn next_due_ms(&self) -> Result<Option<u64>, $crate::jobs::StoreError> {
                let (due,): (Option<i64>,) = sqlx::query_as($crate::jobs::reads::NEXT_DUE)
                    .fetch_one(self.reader())
                    .await?;
                Ok(due.map(|m| m as u64))
            }
        }

        impl $store {
            fn reads() -> &'static $crate::jobs::reads::Sql {
                let dialect = <Self as $crate::jobs::store::SqlBackend>::DIALECT;
                &$crate::jobs::store::Statements::of(dialect).reads
            }
        }
    };
}

pub(crate) use impl_job_reads;
