//! The embedded durable store: SQLite in WAL mode, created and migrated on start.
//!
//! Acknowledgements are `synchronous=FULL` by default: the commit that records a webhook's events is on
//! disk before the webhook is answered, even if the machine loses power right after. Job bookkeeping
//! (claims, outcomes) commits without its own fsync and is made durable by the next acknowledgement's
//! (in WAL mode one fsync covers every earlier commit); a killed process loses none of it, a power cut at
//! worst the last moments of bookkeeping, which re-runs those jobs under the in-flight guards.
//! `SQLITE_SYNCHRONOUS=normal` drops the fsync from acknowledgements too. One process per database file.
//!
//! SQLite has one writer, and sqlx made every statement a round trip to its connection's thread (about
//! 0.2 ms on a busy 2-core machine). So the writes that happen all the time — group commits, the workers'
//! claims, steps, guards and persona map, the event log — are pieces of one transaction per round on the
//! writer thread (`sqlite_writer.rs`, the pieces' SQL in `sqlite_bookkeeping.rs`), which owns its connection.
//! The occasional ones (retention, erasure, audit, digests, checkpoints) keep the shared sqlx code on a
//! second connection, with the writer thread parked meanwhile ([`SqlBackend::writer`]). Reads use a pool
//! of their own.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use sqlx::{
    pool::PoolConnection,
    sqlite::{
        SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
        SqliteSynchronous,
    },
    Sqlite, SqliteConnection, SqlitePool,
};

use super::{
    audit::impl_audit_log,
    event_log::impl_event_log,
    queue::{impl_queue, Bookkeeping},
    reads::impl_job_reads,
    row::JobRow,
    sqlite_bookkeeping,
    sqlite_writer::{Loan, Writer},
    store::{impl_heartbeat, Dialect, Intake, SqlBackend},
    upkeep::{impl_upkeep, Upkeep},
    Delivery, Guard, Hold, JobId, JobStore, KnownPersona, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

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
    /// The database file, for its size on disk.
    file: Option<PathBuf>,
    /// The connection for the writes that keep sqlx (retention, audit, digests…), lent the writer in turn.
    pool: SqlitePool,
    /// Readers.
    reader: SqlitePool,
    /// The writer thread: group commits, the workers' bookkeeping, the event log.
    writer: Writer,
    /// An in-memory database is a file in the temporary folder, removed with the last clone of the store.
    _scratch: Option<Arc<Scratch>>,
}

/// A database file removed when dropped (`sqlite::memory:`: the writer thread needs a second connection to
/// the same database, which a private in-memory database cannot give).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The sqlx write connection while the writer thread is parked (`Writer::lend`). The connection goes back
/// to its pool before the thread goes on (fields drop in order).
pub struct Lent {
    conn: PoolConnection<Sqlite>,
    _loan: Loan,
}

impl std::ops::Deref for Lent {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl SqliteStore {
    /// Opens (creating the file and its folder when missing) and migrates the database at `url`
    /// (`sqlite://path/to/file.db`, or `sqlite::memory:`).
    pub async fn open(url: &str, synchronous_full: bool) -> Result<Self, StoreError> {
        let scratch = database_file(url).is_none().then(|| {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Arc::new(Scratch(std::env::temp_dir().join(format!(
                "mavera-triggers-memory-{}-{n}.db",
                std::process::id()
            ))))
        });
        let url = match &scratch {
            Some(s) => format!("sqlite://{}", s.0.display()),
            None => url.to_string(),
        };
        let url = url.as_str();
        if let Some(dir) = database_file(url)
            .as_deref()
            .and_then(Path::parent)
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The writes left on sqlx (retention, audit, digests…) are made durable by the next
            // acknowledgement's fsync, as the workers' bookkeeping is.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Deleted rows are overwritten with zeros, so an erased person's data is not left in free
            // pages or free space inside pages.
            .pragma("secure_delete", "on");
        // Freed pages go back to the file system a little at a time (retention's `reclaim`). A new file
        // takes this at creation; an older one needs one VACUUM, run below. Only the writer says it: setting
        // it writes the file's first page, so a reader that said it too wrote to the database each time the
        // pool opened it (and left the write-ahead log non-empty after a checkpoint).
        let reader_options = options.clone();
        let options = options.auto_vacuum(SqliteAutoVacuum::Incremental);
        // SQLite takes one writer at a time: the writer thread, or this connection while the thread is
        // parked for it ([`SqlBackend::writer`]). Writes queue in order instead of meeting in SQLite's lock
        // and sleeping in its busy handler. Reads use a pool of their own (WAL lets them run beside it).
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
        if auto_vacuum != INCREMENTAL {
            tracing::info!(
                "switching the database to incremental vacuum: one VACUUM (rewrites the file once)"
            );
            sqlx::query("VACUUM").execute(&pool).await?;
        }
        MIGRATOR.run(&pool).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .idle_timeout(None)
            .max_lifetime(None)
            // 512 KiB of page cache each (SQLite's default is 2 MiB): the console's pages read a few index
            // pages, and four full default caches were most of the server's memory growth as the file grew.
            .connect_with(reader_options.pragma("cache_size", "-512"))
            .await?;
        let file = database_file(url).expect("a file: in-memory databases are scratch files");
        Ok(Self {
            writer: Writer::start(&file, synchronous_full)?,
            file: Some(file),
            pool,
            reader,
            _scratch: scratch,
        })
    }

    /// The connection pool, for tests that need to break the store on purpose.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl SqlBackend for SqliteStore {
    type Db = Sqlite;
    type Writer = Lent;
    const DIALECT: Dialect = Dialect::Sqlite;

    /// The sqlx write connection, with the writer thread parked until it is dropped: for the writes that
    /// are not the acknowledgements' or the workers' (those run on the writer thread).
    async fn writer(&self) -> Result<Lent, StoreError> {
        let loan = self.writer.lend().await?;
        Ok(Lent {
            conn: self.pool.acquire().await?,
            _loan: loan,
        })
    }

    /// The readers' pool (WAL lets them run beside the writer).
    fn reader(&self) -> &SqlitePool {
        &self.reader
    }
}

#[async_trait::async_trait]
impl Intake for SqliteStore {
    async fn record(
        &self,
        deliveries: Vec<Delivery>,
        now_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        self.writer.record(deliveries, now_ms).await
    }

    async fn log_events(&self, deliveries: Vec<Delivery>, now_ms: u64) -> Result<(), StoreError> {
        self.writer.log(deliveries, now_ms).await
    }

    fn groups_commits(&self) -> bool {
        true
    }

    fn observe_commits(&self, metrics: crate::metrics::CommitMetrics) {
        self.writer.observe(metrics);
    }
}

/// Guards on the writer thread: a job takes them in the writer's next transaction.
#[async_trait::async_trait]
impl super::guards::Guards for SqliteStore {
    async fn take_guards(
        &self,
        job: JobId,
        guards: &[Guard],
        now_ms: u64,
    ) -> Result<Option<Hold>, StoreError> {
        let guards = guards.to_vec();
        self.writer
            .run(move |db| sqlite_bookkeeping::take_guards(db, job, &guards, now_ms))
            .await
    }
}

/// The persona map: found on the readers, remembered on the writer thread.
#[async_trait::async_trait]
impl super::personas::Personas for SqliteStore {
    async fn persona_for(
        &self,
        trigger: &str,
        user: &str,
    ) -> Result<Option<KnownPersona>, StoreError> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(super::personas::FIND)
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
        let (trigger, user, persona) = (trigger.to_string(), user.to_string(), persona.clone());
        self.writer
            .run(move |db| {
                sqlite_bookkeeping::remember_persona(db, &trigger, &user, &persona, now_ms)
            })
            .await
    }
}

impl JobStore for SqliteStore {
    fn upkeep(&self) -> Arc<dyn Upkeep> {
        Arc::new(self.clone())
    }
}

impl_queue!(SqliteStore);
impl_job_reads!(SqliteStore);
impl_event_log!(SqliteStore);
impl_heartbeat!(SqliteStore);
impl_audit_log!(SqliteStore);
impl_digest_store!(SqliteStore);
impl_upkeep!(SqliteStore);

/// Free pages given back per step of the incremental vacuum: a few milliseconds of the writer each.
const VACUUM_STEP: i64 = 1000;

/// What SQLite does its own way: claiming on the one writer, releasing at start-up, giving space back.
impl SqliteStore {
    /// Runs a worker's claim or step in the writer thread's next transaction and waits until it has
    /// committed.
    async fn bookkeep(&self, op: Bookkeeping) -> Result<Option<JobRow>, StoreError> {
        self.writer
            .run(move |db| sqlite_bookkeeping::run_one(db, op))
            .await
    }

    /// One process per database file: a running job at start-up was cut short.
    async fn release_orphans(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'pending', lease_until_ms = NULL WHERE state = 'running'",
        )
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected())
    }

    /// Incremental vacuum a step at a time, then a checkpoint.
    async fn reclaim_space(&self) -> Result<(), StoreError> {
        loop {
            let (free,): (i64,) = sqlx::query_as("PRAGMA freelist_count")
                .fetch_one(&self.reader)
                .await?;
            if free == 0 {
                break;
            }
            sqlx::query(&format!("PRAGMA incremental_vacuum({VACUUM_STEP})"))
                .execute(&mut *self.writer().await?)
                .await?;
            if free <= VACUUM_STEP {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.checkpoint().await
    }

    /// The database file and its write-ahead log.
    async fn bytes_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.file.as_ref().map_or(0, |file| {
            let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
            let mut wal = file.as_os_str().to_owned();
            wal.push("-wal");
            size(file) + size(Path::new(&wal))
        }))
    }

    /// The rows are zeroed in the database's pages (secure_delete); the write-ahead log still holds
    /// earlier copies of those pages until it is checkpointed and emptied.
    async fn after_erasure(&self) -> Result<(), StoreError> {
        self.checkpoint().await
    }

    /// Copies the write-ahead log into the database and empties it (retried while a reader holds it).
    async fn checkpoint(&self) -> Result<(), StoreError> {
        for _ in 0..50 {
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *self.writer().await?)
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
