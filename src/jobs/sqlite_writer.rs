//! The SQLite writer: one thread that owns the database's one write connection (rusqlite, statements
//! prepared once and cached) and runs whatever is queued for it as one transaction — the group commit's
//! events, jobs and tallies, the workers' claims, guards and outcomes, the event log's rows — then answers
//! every caller once that transaction has committed. One thread crossing per transaction, none per
//! statement (sqlx made each statement a round trip to its connection's thread, ~0.2 ms on a busy 2-core
//! machine, and the writer waited for each).
//!
//! - **Acknowledgements first.** A transaction that holds an acknowledgement commits in `synchronous=FULL`
//!   (on disk before the webhook is answered); one without commits in `NORMAL` and is made durable by the
//!   next acknowledgement's fsync (WAL: one fsync covers every earlier commit).
//! - **Each piece alone.** Every worker's piece runs in a savepoint of its own: one that fails (a broken
//!   row) rolls back alone, and its caller gets the error; the others commit.
//! - **Bounded.** A transaction takes one group commit (at most 512 deliveries, [`super::committer`]), one
//!   event-log batch and at most [`MAX_PIECES`] pieces, so a draining backlog adds at most that much to an
//!   acknowledgement's wait.
//! - **Checkpoints beside it.** Copying the WAL back into the database (two fsyncs each time) was a sixth
//!   of this thread's time when SQLite ran it after a commit. A checkpointer thread with its own connection
//!   now does it (`PRAGMA wal_checkpoint(PASSIVE)`, which never blocks the writer) each time the writer has
//!   written [`CHECKPOINT_PAGES`] pages. The WAL only starts over once it has been copied whole, which a
//!   checkpoint running beside a steady writer never quite manages; so once the WAL holds
//!   [`RESTART_PAGES`], this thread copies the rest itself between two transactions (what the
//!   checkpointer has not: nothing can be added meanwhile), and the next transaction starts the WAL over.
//!   SQLite's own checkpoint stays on as the last resort, at [`LAST_RESORT_PAGES`].
//! - **Rare writes on sqlx.** Retention, erasure, the audit log, digests and checkpoints keep their shared
//!   sqlx code on a second connection: [`Writer::lend`] parks this thread (between transactions) until the
//!   loan ends, so SQLite still has one writer at a time and nobody sleeps in its busy handler.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc, Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::{
    events::{self, EventStatus},
    row::context_text,
    Delivery, StoreError,
};
use crate::{metrics::CommitMetrics, sources::Source};

/// The most workers' pieces one transaction takes; the rest wait for the next.
pub const MAX_PIECES: usize = 256;

/// Pages the writer writes to the WAL between two background checkpoints (SQLite's default autocheckpoint).
pub const CHECKPOINT_PAGES: i64 = 1000;

/// The WAL's length (pages) at which the writer copies the rest itself, so that the WAL starts over.
pub const RESTART_PAGES: i64 = 4 * CHECKPOINT_PAGES;

/// SQLite's own checkpoint on the writer, should the checkpointer not run.
pub const LAST_RESORT_PAGES: i64 = 4 * RESTART_PAGES;

/// A worker's piece: run on the writer's connection, inside the batch's transaction, in a savepoint of its
/// own; what it returns is called once the transaction's fate is known (the commit's error, if any).
trait Work: Send {
    fn run(self: Box<Self>, db: &Connection) -> Deliver;
    /// The piece did not run: its transaction could not start or failed before it.
    fn fail(self: Box<Self>, error: &Arc<StoreError>);
}
type Piece = Box<dyn Work>;
type Deliver = Box<dyn FnOnce(Option<&Arc<StoreError>>) + Send>;

struct PieceOf<T, F> {
    f: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Work for PieceOf<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, db: &Connection) -> Deliver {
        let PieceOf { f, reply } = *self;
        let result = savepoint(db, f);
        Box::new(move |failed: Option<&Arc<StoreError>>| {
            let _ = reply.send(match failed {
                Some(e) => Err(StoreError::Shared(e.clone())),
                None => result,
            });
        })
    }

    fn fail(self: Box<Self>, error: &Arc<StoreError>) {
        let _ = self.reply.send(Err(StoreError::Shared(error.clone())));
    }
}

enum Command {
    /// A group commit: the acknowledgement's write.
    Record {
        rows: Vec<EventRow>,
        now_ms: u64,
        reply: oneshot::Sender<Recorded>,
    },
    /// Events for the console's log (no acknowledgement waits on them).
    Log {
        rows: Vec<EventRow>,
        now_ms: u64,
        reply: oneshot::Sender<Logged>,
    },
    Piece(Piece),
    /// Parks the thread until `back` is dropped, after answering `lent`.
    Lend {
        lent: oneshot::Sender<()>,
        back: std_mpsc::Receiver<()>,
    },
}

/// A delivery as the writer inserts it: text only, made on the caller's task (the job's context serialized
/// there, and the parsed event freed there), so that the one writer thread does SQLite's work alone.
pub struct EventRow {
    source: Source,
    event_id: String,
    name: String,
    raw: String,
    user_id: Option<String>,
    headers: Arc<str>,
    signature: Arc<str>,
    status: EventStatus,
    reason: Option<String>,
    jobs: Vec<JobText>,
}

struct JobText {
    trigger: String,
    action: &'static str,
    source: Source,
    event_id: String,
    user_id: Option<String>,
    context: String,
}

impl From<Delivery> for EventRow {
    fn from(d: Delivery) -> Self {
        let status = events::status_of(&d);
        EventRow {
            source: d.source,
            event_id: d.event_id,
            name: d.name,
            raw: d.raw,
            user_id: d.user_id,
            headers: d.meta.headers,
            signature: d.meta.signature,
            status,
            reason: d.refusal.map(|r| r.reason().to_string()),
            jobs: d
                .jobs
                .into_iter()
                .map(|j| JobText {
                    context: context_text(&j),
                    trigger: j.trigger,
                    action: j.action.as_str(),
                    source: j.source,
                    event_id: j.event_id,
                    user_id: j.user_id,
                })
                .collect(),
        }
    }
}

/// The way to the writer thread. The thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: std_mpsc::Sender<Command>,
    /// Where the thread reports each transaction, once the app has given it somewhere (`observe`).
    observed: Arc<OnceLock<CommitMetrics>>,
}

/// While held, the writer thread is parked and a sqlx connection may write. Dropping it lets the thread on.
pub struct Loan {
    _back: std_mpsc::Sender<()>,
}

/// The way to the checkpointer thread, held by the writer thread: it counts the pages the writer has
/// written to the WAL, wakes the checkpointer every [`CHECKPOINT_PAGES`], and copies the WAL's rest itself
/// once it holds [`RESTART_PAGES`]. The thread ends with it.
struct Checkpointer {
    wake: std_mpsc::SyncSender<()>,
    /// Pages written since the checkpointer was last woken.
    pages: i64,
    /// Pages written since the WAL was last copied whole (so since it started over): about its length.
    wal: i64,
    /// Set while this thread waits to copy the WAL's rest: the checkpointer starts no pass meanwhile (a
    /// checkpoint holds a lock that another one does not wait for).
    writers_turn: Arc<AtomicBool>,
    /// Held by the checkpointer during each pass.
    pass: Arc<Mutex<()>>,
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: the WAL's length and how much of it is copied, both in pages, or
/// `None` when another checkpoint held the lock.
fn checkpoint(db: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(0)? == 0).then_some((r.get(1)?, r.get(2)?)))
    })
}

impl Checkpointer {
    fn start(file: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(file)?;
        db.busy_timeout(Duration::from_secs(10))?;
        let (wake, woken) = std_mpsc::sync_channel::<()>(1);
        let writers_turn = Arc::new(AtomicBool::new(false));
        let wait = writers_turn.clone();
        let pass = Arc::new(Mutex::new(()));
        let passing = pass.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    let Ok(_pass) = passing.lock() else { return };
                    if wait.load(Ordering::Relaxed) {
                        continue;
                    }
                    // PASSIVE copies what no reader still needs and never waits for the writer.
                    match checkpoint(&db) {
                        Ok(Some((wal, copied))) => tracing::trace!(wal, copied, "checkpoint"),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "store checkpoint failed; the writer's own checkpoint will do it"),
                    }
                }
            })
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the store checkpointer: {e}"))
            })?;
        Ok(Self {
            wake,
            pages: 0,
            wal: 0,
            writers_turn,
            pass,
        })
    }

    /// Counts the pages `db` has written since the last call and wakes the checkpointer when enough have;
    /// once the WAL holds [`RESTART_PAGES`], copies what the checkpointer has not (a pass that copies it
    /// whole lets the next transaction start it over).
    fn after_commit(&mut self, db: &Connection) {
        let written = pages_written(db);
        self.pages += written;
        self.wal += written;
        if self.wal >= RESTART_PAGES {
            // The checkpointer's pass holds SQLite's checkpoint lock, which another checkpoint does not
            // wait for: wait for the pass to end only once the WAL is twice its mark.
            let pass = match self.pass.try_lock() {
                Ok(pass) => Some(pass),
                Err(_) if self.wal >= 2 * RESTART_PAGES => self.pass.lock().ok(),
                Err(_) => None,
            };
            match pass.map(|_pass| checkpoint(db)) {
                Some(Ok(Some((wal, copied)))) if wal == copied => {
                    self.wal = 0;
                    self.writers_turn.store(false, Ordering::Relaxed);
                }
                // A pass is under way, or a reader holds the WAL's end: again after the next commit, and
                // the checkpointer starts no new pass meanwhile.
                None | Some(Ok(_)) => self.writers_turn.store(true, Ordering::Relaxed),
                Some(Err(e)) => tracing::warn!(error = %e, "store checkpoint failed"),
            }
            // Its own copying is not the WAL's growth.
            pages_written(db);
        }
        if self.pages >= CHECKPOINT_PAGES {
            self.pages = 0;
            // Full: it is awake already, and will copy these pages too.
            let _ = self.wake.try_send(());
        }
    }
}

/// Pages this connection has written since the last call (`SQLITE_DBSTATUS_CACHE_WRITE`, reset as read).
fn pages_written(db: &Connection) -> i64 {
    let (mut current, mut highest) = (0, 0);
    // SAFETY: `db.handle()` is this open connection's own pointer, used on the thread that owns it; the
    // two out-parameters are valid for the call.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_status(
            db.handle(),
            rusqlite::ffi::SQLITE_DBSTATUS_CACHE_WRITE,
            &mut current,
            &mut highest,
            1,
        )
    };
    if rc == rusqlite::ffi::SQLITE_OK {
        i64::from(current)
    } else {
        0
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

impl Writer {
    /// Opens the write connection on `file` (created and migrated already) and starts its thread.
    pub fn start(file: &Path, ack_full: bool) -> Result<Self, StoreError> {
        let db = Connection::open(file)?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;",
        )?;
        db.pragma_update(None, "wal_autocheckpoint", LAST_RESORT_PAGES)?;
        db.set_prepared_statement_cache_capacity(64);
        let checkpoints = Checkpointer::start(file)?;
        let (tx, rx) = std_mpsc::channel();
        let name = PathBuf::from(file);
        let observed = Arc::new(OnceLock::new());
        let report = observed.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                run(db, rx, ack_full, &report, checkpoints);
                tracing::debug!(file = %name.display(), "store writer stopped");
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        Ok(Self { tx, observed })
    }

    /// Reports every transaction from now on to `metrics` (the first call wins).
    pub fn observe(&self, metrics: CommitMetrics) {
        let _ = self.observed.set(metrics);
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        self.tx.send(command).map_err(|_| stopped())
    }

    /// Records deliveries in the next transaction, in `synchronous=FULL` when acknowledgements are; per
    /// delivery, whether it was new. Concurrent callers share a transaction (the group commit).
    pub async fn record(
        &self,
        deliveries: Vec<Delivery>,
        now_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        self.with_rows(deliveries, |rows, reply| Command::Record {
            rows,
            now_ms,
            reply,
        })
        .await
    }

    /// Writes events to the console's log in the next transaction.
    pub async fn log(&self, deliveries: Vec<Delivery>, now_ms: u64) -> Result<(), StoreError> {
        self.with_rows(deliveries, |rows, reply| Command::Log {
            rows,
            now_ms,
            reply,
        })
        .await
    }

    /// Sends `deliveries` as rows (made on this task) in the command `command` makes, and waits for its
    /// answer; the rows come back with it, to be freed here rather than on the writer thread.
    async fn with_rows<T>(
        &self,
        deliveries: Vec<Delivery>,
        command: impl FnOnce(
            Vec<EventRow>,
            oneshot::Sender<(Result<T, StoreError>, Vec<EventRow>)>,
        ) -> Command,
    ) -> Result<T, StoreError> {
        let rows = deliveries.into_iter().map(EventRow::from).collect();
        let (reply, answer) = oneshot::channel();
        self.send(command(rows, reply))?;
        let (result, _rows) = answer.await.map_err(|_| stopped())?;
        result
    }

    /// Runs `piece` in the next transaction, in a savepoint of its own (rolled back if it fails), and
    /// answers once that transaction has committed.
    pub async fn run<T, F>(&self, piece: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Piece(Box::new(PieceOf { f: piece, reply })))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Parks the thread between two transactions, for a write on another connection; it goes on when the
    /// [`Loan`] is dropped.
    pub async fn lend(&self) -> Result<Loan, StoreError> {
        let (lent, parked) = oneshot::channel();
        let (back_tx, back) = std_mpsc::channel();
        self.send(Command::Lend { lent, back })?;
        parked.await.map_err(|_| stopped())?;
        Ok(Loan { _back: back_tx })
    }
}

/// `f` inside `SAVEPOINT`: released when it succeeds, rolled back when it fails.
pub fn savepoint<T>(
    db: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    db.execute_batch("SAVEPOINT piece")?;
    let result = f(db);
    if result.is_err() {
        db.execute_batch("ROLLBACK TO piece")?;
    }
    db.execute_batch("RELEASE piece")?;
    result
}

type Recorded = (Result<Vec<bool>, StoreError>, Vec<EventRow>);
type Logged = (Result<(), StoreError>, Vec<EventRow>);
type Records = Vec<(Vec<EventRow>, u64, oneshot::Sender<Recorded>)>;
type Logs = Vec<(Vec<EventRow>, u64, oneshot::Sender<Logged>)>;

/// Deliveries one transaction takes from group commits, at most (a caller's whole batch always fits).
pub const MAX_ROWS: usize = 1024;

/// What one transaction takes.
#[derive(Default)]
struct Round {
    records: Records,
    logs: Logs,
    pieces: Vec<Piece>,
    lends: Vec<(oneshot::Sender<()>, std_mpsc::Receiver<()>)>,
    rows: usize,
}

impl Round {
    fn take(&mut self, command: Command) {
        match command {
            Command::Record {
                rows,
                now_ms,
                reply,
            } => {
                self.rows += rows.len();
                self.records.push((rows, now_ms, reply));
            }
            Command::Log {
                rows,
                now_ms,
                reply,
            } => {
                self.rows += rows.len();
                self.logs.push((rows, now_ms, reply));
            }
            Command::Piece(piece) => self.pieces.push(piece),
            Command::Lend { lent, back } => self.lends.push((lent, back)),
        }
    }

    fn full(&self) -> bool {
        self.pieces.len() >= MAX_PIECES || self.rows >= MAX_ROWS
    }

    fn writes(&self) -> bool {
        !(self.records.is_empty() && self.logs.is_empty() && self.pieces.is_empty())
    }
}

fn run(
    db: Connection,
    rx: std_mpsc::Receiver<Command>,
    ack_full: bool,
    report: &OnceLock<CommitMetrics>,
    mut checkpoints: Checkpointer,
) {
    let mut full = false;
    while let Ok(first) = rx.recv() {
        let mut round = Round::default();
        round.take(first);
        // A loan waits for the transaction before it, not for what queues after it.
        while !round.full() && round.lends.is_empty() {
            match rx.try_recv() {
                Ok(next) => round.take(next),
                Err(_) => break,
            }
        }
        if round.writes() {
            let started = Instant::now();
            let rows = round.rows as u64;
            let acknowledging = ack_full && !round.records.is_empty();
            if acknowledging != full {
                let mode = if acknowledging { "FULL" } else { "NORMAL" };
                match db.execute_batch(&format!("PRAGMA synchronous = {mode}")) {
                    Ok(()) => full = acknowledging,
                    Err(e) => {
                        answer_all(round.records, round.logs, round.pieces, e.into());
                        continue;
                    }
                }
            }
            // A bug that panics inside one round fails that round's callers (their answers are dropped:
            // "the store writer has stopped"), rolls its transaction back, and leaves the thread running.
            let (records, logs, pieces) = (round.records, round.logs, round.pieces);
            let db_ref = &db;
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                commit(db_ref, records, logs, pieces)
            }))
            .is_err()
            {
                tracing::error!("store writer: a transaction panicked and was rolled back");
                if !db.is_autocommit() {
                    let _ = db.execute_batch("ROLLBACK");
                }
            }
            checkpoints.after_commit(&db);
            if let Some(metrics) = report.get() {
                metrics.seconds.observe(started.elapsed().as_secs_f64());
                metrics.rows.inc_by(rows);
            }
        }
        for (lent, back) in round.lends {
            if lent.send(()).is_ok() {
                // Returns when the loan is dropped.
                let _ = back.recv();
            }
        }
    }
}

/// One transaction: the group commits, the workers' pieces, the event log; then every answer.
fn commit(db: &Connection, records: Records, logs: Logs, pieces: Vec<Piece>) {
    let tx = match Transaction::new_unchecked(db, TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return answer_all(records, logs, pieces, e.into()),
    };
    let mut fresh = Vec::with_capacity(records.len());
    for (rows, now_ms, _) in &records {
        match record(&tx, rows, *now_ms) {
            Ok(f) => fresh.push(f),
            Err(e) => {
                drop(tx);
                return answer_all(records, logs, pieces, e);
            }
        }
    }
    let delivered: Vec<Deliver> = pieces.into_iter().map(|piece| piece.run(&tx)).collect();
    let mut logged = Vec::with_capacity(logs.len());
    for (rows, now_ms, reply) in logs {
        // A log that cannot be written costs its own rows, not the acknowledgements'.
        let result = savepoint(&tx, |db| record(db, &rows, now_ms).map(drop));
        logged.push((result, rows, reply));
    }
    let failed = tx.commit().err().map(|e| {
        tracing::error!(error = %e, deliveries = records.iter().map(|r| r.0.len()).sum::<usize>(), "group commit failed");
        Arc::new(StoreError::from(e))
    });
    let shared = |e: &Arc<StoreError>| StoreError::Shared(e.clone());
    for ((rows, _, reply), fresh) in records.into_iter().zip(fresh) {
        let _ = reply.send((failed.as_ref().map_or(Ok(fresh), |e| Err(shared(e))), rows));
    }
    for deliver in delivered {
        deliver(failed.as_ref());
    }
    for (result, rows, reply) in logged {
        let _ = reply.send((failed.as_ref().map_or(result, |e| Err(shared(e))), rows));
    }
}

/// Answers everything in a round that could not commit with `error`.
fn answer_all(records: Records, logs: Logs, pieces: Vec<Piece>, error: StoreError) {
    let deliveries: usize = records.iter().map(|r| r.0.len()).sum();
    tracing::error!(error = %error, deliveries, "group commit failed");
    let error = Arc::new(error);
    for (rows, _, reply) in records {
        let _ = reply.send((Err(StoreError::Shared(error.clone())), rows));
    }
    for (rows, _, reply) in logs {
        let _ = reply.send((Err(StoreError::Shared(error.clone())), rows));
    }
    for piece in pieces {
        piece.fail(&error);
    }
}

/// Records deliveries: each new event, its jobs and the minute tallies; returns, per delivery, whether it
/// was new (a duplicate was recorded before, or earlier in the same batch).
fn record(db: &Connection, rows: &[EventRow], now_ms: u64) -> Result<Vec<bool>, StoreError> {
    let now = now_ms as i64;
    let mut fresh = Vec::with_capacity(rows.len());
    let mut tally = events::Tally::default();
    let mut event = db.prepare_cached(
        "INSERT INTO events (source, event_id, name, received_ms, raw, user_id, headers, signature, status, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (source, event_id) DO NOTHING RETURNING id",
    )?;
    let mut job = db.prepare_cached(
        "INSERT INTO jobs (event_row, trigger_name, action, source, event_id, user_id, context, created_ms, run_at_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)",
    )?;
    for e in rows {
        let row: Option<i64> = event
            .query(params![
                e.source.as_str(),
                e.event_id,
                e.name,
                now,
                e.raw,
                e.user_id,
                &*e.headers,
                &*e.signature,
                e.status.as_str(),
                e.reason,
            ])?
            .next()?
            .map(|r| r.get(0))
            .transpose()?;
        if let Some(row) = row {
            for j in &e.jobs {
                job.execute(params![
                    row,
                    j.trigger,
                    j.action,
                    j.source.as_str(),
                    j.event_id,
                    j.user_id,
                    j.context,
                    now,
                ])?;
            }
            tally.add(now_ms, e.source, e.status);
        }
        fresh.push(row.is_some());
    }
    let mut count = db.prepare_cached(events::COUNT_MINUTE)?;
    for (minute, source, status, n) in tally.rows() {
        count.execute(params![minute, source, status, n])?;
    }
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wal_stays_bounded_under_a_steady_writer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.db");
        let writer = Writer::start(&file, true).unwrap();
        writer
            .run(|db| Ok(db.execute_batch("CREATE TABLE t (n INTEGER, pad TEXT)")?))
            .await
            .unwrap();
        // About 3 × RESTART_PAGES pages, written back to back in transactions of ~24 pages, the way a
        // busy intake writes: the WAL never has a quiet moment to start over in.
        let rounds = 3 * RESTART_PAGES / 24;
        for round in 0..rounds {
            writer
                .run(move |db| {
                    let mut insert = db.prepare_cached("INSERT INTO t VALUES (?1, ?2)")?;
                    for n in 0..24 {
                        insert.execute(params![round * 24 + n, "x".repeat(3000)])?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("w.db-wal"))
            .unwrap()
            .len();
        let frame = 4096 + 24;
        assert!(
            wal <= (2 * RESTART_PAGES + 100) as u64 * frame,
            "the WAL grew to {wal} bytes ({} frames) for {} rows of 3 KB",
            wal / frame,
            rounds * 24
        );
        let rows: i64 = writer
            .run(|db| Ok(db.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(rows, rounds * 24);
    }

    #[test]
    fn pages_written_counts_a_commit_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Connection::open(dir.path().join("p.db")).unwrap();
        db.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER)")
            .unwrap();
        pages_written(&db);
        db.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert!(pages_written(&db) >= 1, "the insert's page was written");
        assert_eq!(pages_written(&db), 0, "the count starts over once read");
    }

    #[tokio::test]
    async fn a_piece_that_panics_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::start(&dir.path().join("w.db"), true).unwrap();
        writer
            .run(|db| Ok(db.execute_batch("CREATE TABLE t (n INTEGER)")?))
            .await
            .unwrap();
        let panicked = writer
            .run(|db| -> Result<(), StoreError> {
                db.execute_batch("INSERT INTO t VALUES (1)")?;
                panic!("a bug in a piece")
            })
            .await;
        assert!(panicked.is_err(), "its caller gets an error, not a hang");
        writer
            .run(|db| Ok(db.execute_batch("INSERT INTO t VALUES (2)")?))
            .await
            .unwrap();
        let rows: Vec<i64> = writer
            .run(|db| {
                let mut q = db.prepare("SELECT n FROM t ORDER BY n")?;
                let rows = q.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![2],
            "the panicking round was rolled back, the next one committed"
        );
    }
}
