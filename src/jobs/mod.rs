//! Jobs: the work a matched trigger asks for, kept behind a small store interface and run by a worker pool.
//!
//! The handler only enqueues; workers claim due jobs, call Customer.io and Mavera, and record the outcome.
//! A job keeps its progress between attempts (an enrichment that succeeded is not repeated when the
//! Mavera call is retried).

pub mod audit;
pub mod batch;
pub mod committer;
#[macro_use]
pub mod digest;
pub mod event_log;
pub mod events;
pub mod guards;
mod kind;
pub mod lockfile;
pub mod personas;
pub mod postgres;
pub mod queue;
pub mod reads;
pub mod retry;
pub mod row;
pub mod sqlite;
mod sqlite_bookkeeping;
mod sqlite_writer;
pub mod store;
pub mod upkeep;
pub mod worker;

pub use kind::{Hold, JobKind, Progress};
pub use {
    audit::AuditLog, digest::DigestStore, event_log::EventLog, guards::Guards, personas::Personas,
    queue::Queue, reads::JobReads, store::Heartbeat, store::Intake, store::JobStore,
    upkeep::Upkeep,
};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::sources::Source;

pub type JobId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its (next) attempt.
    Pending,
    /// Claimed by a worker.
    Running,
    /// Finished: the outcome says what happened (including "condition not met").
    Done,
    /// Given up: a final error, or too many attempts. Kept with its reason.
    Dead,
    /// Held back by a cost guard (cooldown or budget), with the reason. An operator may replay it.
    Held,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
            JobState::Held => "held",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(JobState::Pending),
            "running" => Ok(JobState::Running),
            "done" => Ok(JobState::Done),
            "dead" => Ok(JobState::Dead),
            "held" => Ok(JobState::Held),
            other => Err(format!(
                "unknown state `{other}`: use pending, running, done, dead or held"
            )),
        }
    }
}

/// A job as the intake creates it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    pub trigger: String,
    pub action: JobKind,
    pub source: Source,
    pub event_id: String,
    pub user_id: Option<String>,
    /// What the job's templates and conditions read. Empty when the intake makes it: a job's context is then
    /// its event's, which the store does not copy but rebuilds from the event's raw JSON when the job is
    /// read ([`row::EVENTS_CONTEXT`]). A job read from the store always has it.
    pub context: Map<String, Value>,
}

/// One event that caused work, with its jobs: recorded together, or not at all.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub source: Source,
    pub event_id: String,
    pub name: String,
    /// The user or customer the event is about.
    pub user_id: Option<String>,
    /// The event's raw JSON, kept for replay and inspection.
    pub raw: String,
    /// The request's headers (masked) and signature check.
    pub meta: events::RequestMeta,
    /// Empty for an event no trigger matched: it is logged for the console, not run.
    pub jobs: Vec<NewJob>,
    /// Why a part of a genuine request is not a usable event (it has no jobs then), or `None`.
    pub refusal: Option<crate::sources::Refusal>,
}

/// A job as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    #[serde(flatten)]
    pub new: NewJob,
    pub state: JobState,
    pub attempts: u32,
    pub created_ms: u64,
    pub run_at_ms: u64,
    /// Steps already done (e.g. `attributes` from the enrichment).
    pub progress: Progress,
    pub last_error: Option<String>,
    pub outcome: Option<Value>,
    /// Each attempt's end: `{attempt, at_ms, result, error}`, oldest first.
    pub history: Vec<Value>,
}

impl Job {
    /// Whether this attempt repeats one that never ended: every attempt's end is added to the history (an
    /// operator's replay starts the count again), so a claimed attempt with fewer ends than earlier attempts
    /// follows one cut short by a kill or a lost lease.
    pub fn follows_an_interrupted_attempt(&self) -> bool {
        let since_replay = self
            .history
            .iter()
            .rev()
            .take_while(|h| h["result"] != "replayed")
            .count() as u32;
        self.attempts.saturating_sub(1) > since_replay
    }
}

/// Jobs per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    pub pending: u64,
    pub running: u64,
    pub done: u64,
    pub dead: u64,
    pub held: u64,
    /// When the oldest pending job was created.
    pub oldest_pending_ms: Option<u64>,
}

impl JobCounts {
    /// Counts from `(state, count)` rows.
    pub fn from_rows(rows: Vec<(String, i64)>) -> Self {
        let mut c = JobCounts::default();
        for (state, n) in rows {
            let n = n as u64;
            match state.parse().unwrap_or(JobState::Pending) {
                JobState::Pending => c.pending += n,
                JobState::Running => c.running += n,
                JobState::Done => c.done += n,
                JobState::Dead => c.dead += n,
                JobState::Held => c.held += n,
            }
        }
        c
    }

    /// No job is waiting or running.
    pub fn settled(&self) -> bool {
        self.pending == 0 && self.running == 0
    }
}

/// Why the store could not do what it was asked. Each variant keeps the error that caused it (`source()`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the job store cannot write: {0}")]
    Unavailable(String),
    #[error("the job store cannot write: {0}")]
    Database(#[from] sqlx::Error),
    /// On the SQLite writer thread's own connection (`sqlite_writer.rs`).
    #[error("the job store cannot write: {0}")]
    Writer(#[from] rusqlite::Error),
    #[error("the job store cannot write: the store writer stopped: {0}")]
    WriterStopped(#[from] tokio::task::JoinError),
    #[error("the job store cannot write: migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("the job store cannot write: cannot create {}: {source}", path.display())]
    Folder {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// One failure answered to every caller of a group commit.
    #[error(transparent)]
    Shared(Arc<StoreError>),
    #[error("no job {0}")]
    NotFound(JobId),
}

/// A cost guard a job must pass before it calls Mavera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// At most one call per `window_ms` for (trigger, user).
    Cooldown {
        trigger: String,
        user: String,
        window_ms: u64,
    },
    /// At most `limit` calls in the window that starts at `window_start_ms` for `scope`.
    Budget {
        scope: String,
        window_start_ms: u64,
        limit: u64,
        /// How a refusal reads, e.g. "trigger churn_signal: 100 calls per hour".
        label: String,
    },
}

/// A persona this server created for a (trigger, user) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownPersona {
    pub persona_id: String,
    pub name: Option<String>,
}

/// The queue as the rest of the server sees it: a store, a group committer in front of it, and a bell
/// that wakes the workers.
#[derive(Clone)]
pub struct Jobs {
    pub store: Arc<dyn JobStore>,
    committer: committer::Committer,
    pub(crate) bell: Arc<Notify>,
}

impl Jobs {
    /// `log_max_per_sec`: how many events that matched no trigger the event log takes per second.
    pub fn new(store: Arc<dyn JobStore>, log_max_per_sec: u64) -> Self {
        Self {
            committer: committer::Committer::spawn(store.clone(), log_max_per_sec),
            store,
            bell: Arc::new(Notify::new()),
        }
    }

    /// Records deliveries durably (batched with concurrent callers into one transaction) and wakes a worker
    /// per new job.
    pub async fn submit(&self, deliveries: Vec<Delivery>) -> Result<Vec<bool>, StoreError> {
        let jobs: Vec<usize> = deliveries.iter().map(|d| d.jobs.len()).collect();
        let fresh = self.committer.record(deliveries).await?;
        let new_jobs = jobs.iter().zip(&fresh).filter(|(_, f)| **f).map(|(n, _)| n);
        self.wake(new_jobs.sum());
        Ok(fresh)
    }

    /// Wakes up to `jobs` idle workers, one per new job. Waking them all for each job made every idle
    /// worker claim on the one SQLite writer (16 claims per event, ~4 ms of writer time at one connection)
    /// while the next acknowledgement waited behind them. A busy worker claims again when it finishes, so
    /// a job left over when fewer are idle is taken then.
    pub(crate) fn wake(&self, jobs: usize) {
        for _ in 0..jobs {
            self.bell.notify_one();
        }
    }

    /// Logs events that matched no trigger for the console, without waiting for the disk.
    pub fn log(&self, deliveries: Vec<Delivery>) {
        if !deliveries.is_empty() {
            self.committer.log(deliveries);
        }
    }

    /// Whether the event log takes another event this second (else it is counted as not listed).
    pub fn log_has_room(&self) -> bool {
        self.committer.log_has_room()
    }

    /// Events the event log had no room for, since start.
    pub fn log_dropped(&self) -> u64 {
        self.committer
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the digests whose window ended by `now_ms` (recording one job each) and wakes the workers.
    pub async fn close_due_digests(&self, now_ms: u64) -> Result<u64, StoreError> {
        let closed = self.store.close_due_digests(now_ms).await?;
        if closed > 0 {
            tracing::info!(closed, "digests closed: their window ended");
            self.bell.notify_waiters();
        }
        Ok(closed)
    }

    /// Puts a finished or dead job back in the queue, due now.
    pub async fn replay(&self, id: JobId) -> Result<(), StoreError> {
        self.store.requeue(id, now_ms()).await?;
        self.bell.notify_waiters();
        Ok(())
    }
}

/// Opens the store `DATABASE_URL` names, creating and migrating it.
pub async fn open_store(
    settings: &crate::config::Settings,
) -> Result<Arc<dyn JobStore>, StoreError> {
    let url = &settings.store.database_url;
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(url, settings.store.sqlite_synchronous_full).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::open(
                url,
                settings.store.max_connections,
                settings.store.statement_timeout,
            )
            .await?,
        ))
    } else {
        Err(StoreError::Unavailable(format!(
            "DATABASE_URL: unsupported store `{}`; use sqlite://path/to/file.db or postgres://user@host/db",
            url.split(':').next().unwrap_or("")
        )))
    }
}

/// Wall-clock milliseconds since the Unix epoch: what the store records.
pub use crate::clock::now_ms;
pub use crate::ratelimit::{SharedLimits, SharedLimitsDown};

impl From<StoreError> for SharedLimitsDown {
    fn from(e: StoreError) -> Self {
        SharedLimitsDown(Box::new(e))
    }
}

impl From<sqlx::Error> for SharedLimitsDown {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::triggers::ActionKind;

    use super::*;

    fn job(attempts: u32, history: Vec<Value>) -> Job {
        Job {
            id: 1,
            new: NewJob {
                trigger: "t".into(),
                action: JobKind::Action(ActionKind::Research),
                source: Source::Segment,
                event_id: "e".into(),
                user_id: None,
                context: Map::new(),
            },
            state: JobState::Running,
            attempts,
            created_ms: 0,
            run_at_ms: 0,
            progress: Progress::default(),
            last_error: None,
            outcome: None,
            history,
        }
    }

    #[test]
    fn an_attempt_after_one_that_never_ended_is_told_apart() {
        let retry = json!({"result": "retry"});
        assert!(!job(1, vec![]).follows_an_interrupted_attempt());
        assert!(!job(2, vec![retry.clone()]).follows_an_interrupted_attempt());
        assert!(
            job(2, vec![]).follows_an_interrupted_attempt(),
            "killed mid-attempt"
        );
        assert!(job(3, vec![retry.clone()]).follows_an_interrupted_attempt());
        let replayed = vec![retry.clone(), json!({"result": "replayed"})];
        assert!(!job(1, replayed.clone()).follows_an_interrupted_attempt());
        assert!(job(2, replayed).follows_an_interrupted_attempt());
    }
}
