//! Batches on the SQLite writer connection that run in one thread crossing, not one per statement.
//!
//! sqlx runs each SQLite statement on its connection's own thread: a group commit of BEGIN, an insert per
//! table, the tallies and COMMIT was five or more round trips (~0.2 ms each on a busy 2-core machine)
//! while the webhooks it answers waited. Here the whole transaction runs on a blocking thread, directly on
//! the writer connection's `sqlite3` handle (rusqlite over the same libsqlite3-sys as sqlx), with prepared
//! statements and one row per execution. It is the same connection as every other write, so SQLite still
//! has one writer and nothing waits in its busy handler.

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use sqlx::{pool::PoolConnection, Sqlite};

use super::{events, row::json_text, Delivery, StoreError};

/// Runs `write` on the writer connection `conn`, on a blocking thread, with sqlx's thread held off the
/// handle until it returns. `write` gets a rusqlite view of the handle that finalizes its statements when
/// dropped (sqlx closes the handle with `sqlite3_close`, which refuses while any statement is open).
pub async fn on_writer<T, F>(mut conn: PoolConnection<Sqlite>, write: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut locked = runtime.block_on(conn.lock_handle())?;
        // SAFETY: the handle is open (the pool holds the connection) and locked away from sqlx's thread
        // until `locked` drops, after `db`. `from_handle` does not close it; dropping `db` finalizes the
        // statements it prepared.
        let db = unsafe { Connection::from_handle(locked.as_raw_handle().as_ptr()) }?;
        let result = write(&db);
        drop(db);
        drop(locked);
        result
    })
    .await?
}

/// Records deliveries in one transaction: each new event, its jobs and the minute tallies; returns, per
/// delivery, whether it was new (a duplicate was recorded before, or earlier in the same batch).
pub fn record(
    db: &Connection,
    deliveries: &[Delivery],
    now_ms: u64,
) -> Result<Vec<bool>, StoreError> {
    let now = now_ms as i64;
    let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
    let mut fresh = Vec::with_capacity(deliveries.len());
    let mut tally = events::Tally::default();
    {
        let mut event = tx.prepare_cached(
            "INSERT INTO events (source, event_id, name, received_ms, raw, user_id, headers, signature, status, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (source, event_id) DO NOTHING RETURNING id",
        )?;
        let mut job = tx.prepare_cached(
            "INSERT INTO jobs (event_row, trigger_name, action, source, event_id, user_id, context, created_ms, run_at_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)",
        )?;
        for d in deliveries {
            let status = events::status_of(d);
            let row: Option<i64> = event
                .query(params![
                    d.source.as_str(),
                    d.event_id,
                    d.name,
                    now,
                    d.raw,
                    d.user_id,
                    &*d.meta.headers,
                    &*d.meta.signature,
                    status.as_str(),
                    d.refusal.as_ref().map(|r| r.reason()),
                ])?
                .next()?
                .map(|r| r.get(0))
                .transpose()?;
            if let Some(row) = row {
                for j in &d.jobs {
                    job.execute(params![
                        row,
                        j.trigger,
                        j.action.as_str(),
                        j.source.as_str(),
                        j.event_id,
                        j.user_id,
                        json_text(&j.context),
                        now,
                    ])?;
                }
                tally.add(now_ms, d.source, status);
            }
            fresh.push(row.is_some());
        }
        let mut count = tx.prepare_cached(events::COUNT_MINUTE)?;
        for (minute, source, status, n) in tally.rows() {
            count.execute(params![minute, source, status, n])?;
        }
    }
    tx.commit()?;
    Ok(fresh)
}
