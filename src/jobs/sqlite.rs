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
//! connection's handle in one thread crossing ([`sqlite_writer`]), the workers' claims and outcomes queue
//! and run in batches there too ([`sqlite_bookkeeping`]), acknowledgements go first (bookkeeping waits while
//! one is queued), and the writer stays in `FULL` between acknowledgements instead of switching for each.
//! Every write, bookkeeping included, is on that one connection.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{mpsc, oneshot, Notify};

use sqlx::{
    pool::PoolConnection,
    sqlite::{
        SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
        SqliteSynchronous,
    },
    Sqlite, SqlitePool,
};

use super::{
    audit::impl_audit_log,
    event_log::impl_event_log,
    guards::impl_guards,
    personas::impl_personas,
    queue::{impl_queue, Bookkeeping},
    reads::impl_job_reads,
    row::JobRow,
    sqlite_bookkeeping, sqlite_writer,
    store::{impl_heartbeat, Dialect, Intake, SqlBackend},
    upkeep::{impl_upkeep, Upkeep},
    Delivery, JobStore, StoreError,
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
    /// The workers' claims and steps, run in batches on the writer.
    bookkeeping: mpsc::UnboundedSender<sqlite_bookkeeping::Queued>,
}

/// The writer's queue order. Without it, a group commit waited behind every worker's claim and outcome
/// (16 workers: ~10 ms per commit under load) while the webhooks it answers were waiting too.
#[derive(Default)]
pub(super) struct Gate {
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

impl Gate {
    /// The writer connection of `pool`, after any acknowledgement that is waiting.
    pub(super) async fn turn(
        &self,
        pool: &SqlitePool,
    ) -> Result<PoolConnection<Sqlite>, StoreError> {
        loop {
            // Registered before the check: a notification between the two is not lost.
            let opened = self.open.notified();
            if self.acks.load(Ordering::SeqCst) == 0 {
                break;
            }
            opened.await;
        }
        Ok(pool.acquire().await?)
    }

    /// [`Gate::turn`], in `synchronous = NORMAL` (bookkeeping is made durable by the next acknowledgement's
    /// fsync).
    pub(super) async fn writer(
        &self,
        pool: &SqlitePool,
    ) -> Result<PoolConnection<Sqlite>, StoreError> {
        let mut conn = self.turn(pool).await?;
        if self.full.load(Ordering::SeqCst) {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
            self.full.store(false, Ordering::SeqCst);
        }
        Ok(conn)
    }

    /// [`Gate::writer`]'s switch on the writer's own handle, inside [`sqlite_writer::on_writer`].
    pub(super) fn to_normal(&self, db: &rusqlite::Connection) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            db.execute_batch("PRAGMA synchronous = NORMAL")?;
            self.full.store(false, Ordering::SeqCst);
        }
        Ok(())
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
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                path: dir.to_path_buf(),
                source,
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
            // Deleted rows are overwritten with zeros, so an erased person's data is not left in free
            // pages or free space inside pages.
            .pragma("secure_delete", "on");
        // Freed pages go back to the file system a little at a time (retention's `reclaim`). A new file
        // takes this at creation; an older one needs one VACUUM, run below. Only the writer says it: setting
        // it writes the file's first page, so a reader that said it too wrote to the database each time the
        // pool opened it (and left the write-ahead log non-empty after a checkpoint).
        let reader_options = options.clone();
        let options = options.auto_vacuum(SqliteAutoVacuum::Incremental);
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
        MIGRATOR.run(&pool).await?;
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
                .connect_with(reader_options.pragma("cache_size", "-512"))
                .await?
        };
        let gate = Arc::new(Gate {
            full: AtomicBool::new(synchronous_full),
            ..Gate::default()
        });
        Ok(Self {
            file: database_file(url),
            bookkeeping: sqlite_bookkeeping::spawn(pool.clone(), gate.clone()),
            pool,
            reader,
            ack_full: synchronous_full,
            gate,
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
    const DIALECT: Dialect = Dialect::Sqlite;

    /// The writer, for job bookkeeping and the event log: after any acknowledgement that is waiting. Every
    /// write but the acknowledgement's goes through here (the group commit is [`Intake::record`]).
    async fn writer(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        self.gate.writer(&self.pool).await
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
        let conn = self.writer().await?;
        sqlite_writer::on_writer(conn, move |db| {
            sqlite_writer::record(db, &deliveries, now_ms).map(|_| ())
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
impl_guards!(SqliteStore);
impl_personas!(SqliteStore);
impl_heartbeat!(SqliteStore);
impl_audit_log!(SqliteStore);
impl_digest_store!(SqliteStore);
impl_upkeep!(SqliteStore);

/// Free pages given back per step of the incremental vacuum: a few milliseconds of the writer each.
const VACUUM_STEP: i64 = 1000;

/// What SQLite does its own way: claiming on the one writer, releasing at start-up, giving space back.
impl SqliteStore {
    /// Queues a worker's claim or step for the writer's next batch ([`sqlite_bookkeeping`]) and waits
    /// until that batch has committed.
    async fn bookkeep(&self, op: Bookkeeping) -> Result<Option<JobRow>, StoreError> {
        let stopped = || StoreError::Unavailable("the store writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.bookkeeping.send((op, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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
