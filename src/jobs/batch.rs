//! A group commit's rows written with one multi-row statement per table, not one per row: each statement
//! is a round trip to the database (for SQLite, to its connection's thread), and a commit of a few hundred
//! events would otherwise make hundreds of them.

use std::collections::HashMap;

use sqlx::{Database, QueryBuilder};

use super::{events, row::context_text, Delivery};

/// Rows per statement: far below SQLite's 32,766 and Postgres' 65,535 bound values.
pub const CHUNK: usize = 1000;

/// `INSERT INTO events … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING id, source, event_id`.
pub fn insert_events<'a, DB>(deliveries: &'a [Delivery], now_ms: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<&'a str>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = QueryBuilder::new(
        "INSERT INTO events (source, event_id, name, received_ms, raw, user_id, headers, signature, status, reason) ",
    );
    q.push_values(deliveries, |mut b, d| {
        b.push_bind(d.source.as_str())
            .push_bind(d.event_id.as_str())
            .push_bind(d.name.as_str())
            .push_bind(now_ms)
            .push_bind(d.raw.as_str())
            .push_bind(d.user_id.as_deref())
            .push_bind(&*d.meta.headers)
            .push_bind(&*d.meta.signature)
            .push_bind(events::status_of(d).as_str())
            .push_bind(d.refusal.as_ref().map(|r| r.reason()));
    });
    q.push(" ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id");
    q
}

/// The row of each delivery that was new, in order; `None` for a duplicate (recorded before, or earlier
/// in the same batch). `inserted` is what [`insert_events`] returned.
pub fn fresh_rows(
    deliveries: &[Delivery],
    inserted: Vec<(i64, String, String)>,
) -> Vec<Option<i64>> {
    let mut rows: HashMap<(String, String), i64> = inserted
        .into_iter()
        .map(|(id, source, event_id)| ((source, event_id), id))
        .collect();
    deliveries
        .iter()
        .map(|d| rows.remove(&(d.source.as_str().to_string(), d.event_id.clone())))
        .collect()
}

/// `INSERT INTO jobs … VALUES (…), (…)` for the jobs of new deliveries. `context_cast` follows the
/// context's value (`::jsonb` for Postgres). `None` when there is no job to insert.
pub fn insert_jobs<'a, DB>(
    deliveries: &'a [Delivery],
    rows: &[Option<i64>],
    now_ms: i64,
    context_cast: &str,
) -> Option<QueryBuilder<'a, DB>>
where
    DB: Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<&'a str>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let jobs: Vec<(i64, &super::NewJob)> = deliveries
        .iter()
        .zip(rows)
        .filter_map(|(d, row)| row.map(|r| d.jobs.iter().map(move |j| (r, j))))
        .flatten()
        .collect();
    if jobs.is_empty() {
        return None;
    }
    let mut q = QueryBuilder::new(
        "INSERT INTO jobs (event_row, trigger_name, action, source, event_id, user_id, context, created_ms, run_at_ms, updated_ms) ",
    );
    q.push_values(jobs, |mut b, (row, job)| {
        b.push_bind(row)
            .push_bind(job.trigger.as_str())
            .push_bind(job.action.as_str())
            .push_bind(job.source.as_str())
            .push_bind(job.event_id.as_str())
            .push_bind(job.user_id.as_deref())
            .push_bind(context_text(job))
            .push_unseparated(context_cast)
            .push_bind(now_ms)
            .push_bind(now_ms)
            .push_bind(now_ms);
    });
    Some(q)
}

/// Tallies the new deliveries per minute, source and status.
pub fn tally(deliveries: &[Delivery], rows: &[Option<i64>], now_ms: u64) -> events::Tally {
    let mut tally = events::Tally::default();
    for (d, row) in deliveries.iter().zip(rows) {
        if row.is_some() {
            tally.add(now_ms, d.source, events::status_of(d));
        }
    }
    tally
}
