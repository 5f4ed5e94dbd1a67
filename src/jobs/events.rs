//! The event log the console reads: every event a source sent us (those that matched no trigger too), with
//! the request's headers (secrets masked), the signature check, and its jobs.
//!
//! Both SQL stores run the same statements: they use `$n` placeholders, which SQLite reads as well as
//! Postgres (numbered in order of first use). Lists go by key (`id < before`), never by offset, and each
//! filter has an index, so a page costs the same with a million events in the store.

use std::sync::Arc;

use axum::http::HeaderMap;
use serde::Serialize;

use super::JobState;
use crate::sources::{Refusal, Source};

/// What the request carried besides the event: shown on the event's page.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The request's headers as a JSON object, secrets masked (see [`masked_headers`]).
    pub headers: Arc<str>,
    /// How the signature check went, in words.
    pub signature: Arc<str>,
}

/// Headers whose value is a credential: never stored.
const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-admin-token",
];

/// The request's headers as a JSON object, fit to keep and show: credentials are replaced by
/// `•••• (masked)`, and signatures are cut to their first 8 characters (enough to compare by eye, not to
/// replay).
pub fn masked_headers(headers: &HeaderMap) -> String {
    let mut out = serde_json::Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        let value = String::from_utf8_lossy(value.as_bytes());
        let shown = if SECRET_HEADERS.contains(&name)
            || name.contains("secret")
            || name.contains("token")
            || name.contains("password")
        {
            "•••• (masked)".to_string()
        } else if name.contains("signature") {
            let cut: String = value.chars().take(8).collect();
            format!("{cut}… ({} characters)", value.chars().count())
        } else {
            value.chars().take(512).collect()
        };
        match out.get_mut(name) {
            Some(serde_json::Value::String(first)) => {
                first.push_str(", ");
                first.push_str(&shown);
            }
            _ => {
                out.insert(name.to_string(), shown.into());
            }
        }
    }
    serde_json::Value::Object(out).to_string()
}

/// Which events a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub source: Option<Source>,
    /// The event name (Segment) or metric (Customer.io), exactly.
    pub name: Option<String>,
    /// The user (Segment) or customer (Customer.io), exactly.
    pub user: Option<String>,
    pub status: Option<StatusFilter>,
    /// Only events older than this row: the key of the next page.
    pub before: Option<i64>,
}

/// What became of an event, as its row records it (the `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    /// It matched a trigger: its jobs say the rest.
    Triggered,
    /// No trigger matched it.
    Ignored,
    /// An element of a genuine Segment batch that is not a Segment event: kept with the reason, never run.
    Refused,
    /// A genuine Customer.io body that is not an event we can read: acknowledged (2xx), kept with the reason.
    Unprocessable,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Triggered => "triggered",
            EventStatus::Ignored => "ignored",
            EventStatus::Refused => "refused",
            EventStatus::Unprocessable => "unprocessable",
        }
    }
}

/// An event's status: what became of it (see [`EventStatus`]), or one of its jobs' states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Ignored,
    Triggered,
    Refused,
    Unprocessable,
    Job(JobState),
}

impl std::str::FromStr for StatusFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ignored" => Ok(StatusFilter::Ignored),
            "triggered" => Ok(StatusFilter::Triggered),
            "refused" => Ok(StatusFilter::Refused),
            "unprocessable" => Ok(StatusFilter::Unprocessable),
            other => other.parse().map(StatusFilter::Job).map_err(|_| {
                format!("unknown status `{other}`: use ignored, triggered, refused, unprocessable, pending, running, done, dead or held")
            }),
        }
    }
}

/// A bound value of a statement built at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Int(i64),
}

/// Binds [`list_query`]'s values, in order, for either store.
pub fn bind_all<'q, DB, O>(
    mut query: sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>,
    binds: Vec<Bind>,
) -> sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for b in binds {
        query = match b {
            Bind::Text(t) => query.bind(t),
            Bind::Int(i) => query.bind(i),
        };
    }
    query
}

/// The columns of an event row in a list.
pub const LIST_COLUMNS: &str =
    "e.id, e.source, e.event_id, e.name, e.user_id, e.received_ms, e.status";

/// The statement for one page of events (`limit` rows), newest first, and its values.
///
/// Each shape walks one index in key order and stops at the limit, never sorting: a name or user filter
/// reads its index (and checks a job state through `jobs (event_row)`); a job state alone reads
/// `jobs (state, event_row)`, where dead letters are few among a million finished jobs. That walk may
/// meet an event twice (two jobs in the same state): [`dedupe_page`] folds them.
pub fn list_query(filter: &EventFilter, limit: usize) -> (String, Vec<Bind>) {
    let mut binds = Vec::new();
    let mut conditions = Vec::new();
    let bind = |value: Bind, binds: &mut Vec<Bind>| {
        binds.push(value);
        format!("${}", binds.len())
    };
    let narrow = filter.name.is_some() || filter.user.is_some();
    let by_jobs = matches!(filter.status, Some(StatusFilter::Job(_))) && !narrow;
    let key = if by_jobs { "j.event_row" } else { "e.id" };
    if let Some(before) = filter.before {
        let p = bind(Bind::Int(before), &mut binds);
        conditions.push(format!("{key} < {p}"));
    }
    if let Some(name) = &filter.name {
        let p = bind(Bind::Text(name.clone()), &mut binds);
        conditions.push(format!("e.name = {p}"));
    }
    if let Some(user) = &filter.user {
        let p = bind(Bind::Text(user.clone()), &mut binds);
        conditions.push(format!("e.user_id = {p}"));
    }
    if let Some(source) = filter.source {
        // Two sources: walking by key finds a page quickly; an index would not narrow it.
        let p = bind(Bind::Text(source.as_str().into()), &mut binds);
        conditions.push(format!("(e.source || '') = {p}"));
    }
    match filter.status {
        Some(StatusFilter::Job(state)) => {
            let p = bind(Bind::Text(state.as_str().into()), &mut binds);
            conditions.push(if by_jobs {
                format!("j.state = {p}")
            } else {
                format!("EXISTS (SELECT 1 FROM jobs j WHERE j.event_row = e.id AND j.state = {p})")
            });
        }
        Some(
            word @ (StatusFilter::Ignored
            | StatusFilter::Triggered
            | StatusFilter::Refused
            | StatusFilter::Unprocessable),
        ) => {
            let word = match word {
                StatusFilter::Ignored => EventStatus::Ignored,
                StatusFilter::Refused => EventStatus::Refused,
                StatusFilter::Unprocessable => EventStatus::Unprocessable,
                _ => EventStatus::Triggered,
            };
            let p = bind(Bind::Text(word.as_str().into()), &mut binds);
            // With a name or user, their index is the narrow one: the status is only checked.
            conditions.push(if narrow {
                format!("(e.status || '') = {p}")
            } else {
                format!("e.status = {p}")
            });
        }
        None => {}
    }
    let from = if by_jobs {
        "jobs j JOIN events e ON e.id = j.event_row"
    } else {
        "events e"
    };
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    (
        format!("SELECT {LIST_COLUMNS} FROM {from}{filter_sql} ORDER BY {key} DESC LIMIT {limit}"),
        binds,
    )
}

/// One page of events and the key of the next, if there may be more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventPage {
    pub rows: Vec<EventRow>,
    pub next_before: Option<i64>,
}

/// Folds repeats of an event (met once per job in the filtered state) and says where the next page starts:
/// a full page of `limit` rows may have more after it.
pub fn dedupe_page(rows: Vec<EventRow>, limit: usize) -> EventPage {
    let full = rows.len() == limit;
    let next_before = rows.last().map(|r| r.id).filter(|_| full);
    let mut out: Vec<EventRow> = Vec::with_capacity(rows.len());
    for row in rows {
        if out.last().map(|r| r.id) != Some(row.id) {
            out.push(row);
        }
    }
    EventPage {
        rows: out,
        next_before,
    }
}

/// An event in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub source: String,
    pub event_id: String,
    pub name: String,
    pub user_id: Option<String>,
    pub received_ms: i64,
    /// `triggered`, `ignored`, `refused` or `unprocessable` ([`EventStatus`]); the jobs say the rest.
    pub status: String,
}

/// A job of an event, as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct JobBrief {
    pub event_row: i64,
    pub id: i64,
    pub trigger_name: String,
    pub action: String,
    pub state: String,
}

/// One event with what the request carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct EventDetail {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub row: EventRow,
    pub headers: String,
    pub signature: String,
    pub raw: String,
    /// Why a refused or unprocessable event could not be used.
    pub reason: Option<String>,
}

pub const DETAIL_QUERY: &str =
    "SELECT e.id, e.source, e.event_id, e.name, e.user_id, e.received_ms, e.status, e.headers, e.signature, e.raw, e.reason
     FROM events e WHERE e.id = $1";

/// The jobs of some events (from the `jobs (event_row)` index).
pub fn jobs_query(rows: usize) -> String {
    let marks: Vec<String> = (1..=rows).map(|i| format!("${i}")).collect();
    format!(
        "SELECT event_row, id, trigger_name, action, state FROM jobs WHERE event_row IN ({}) ORDER BY id",
        marks.join(", ")
    )
}

/// `refused` or `unprocessable` for an event that could not be used, else `triggered` for an event with
/// jobs and `ignored` for one without.
pub fn status_of(delivery: &super::Delivery) -> EventStatus {
    match &delivery.refusal {
        Some(Refusal::Refused(_)) => EventStatus::Refused,
        Some(Refusal::Unprocessable(_)) => EventStatus::Unprocessable,
        None if delivery.jobs.is_empty() => EventStatus::Ignored,
        None => EventStatus::Triggered,
    }
}

/// Adds `count` events to a minute's tally.
pub const COUNT_MINUTE: &str =
    "INSERT INTO event_minutes (minute, source, status, count) VALUES ($1, $2, $3, $4)
     ON CONFLICT (minute, source, status) DO UPDATE SET count = event_minutes.count + excluded.count";

/// Minutes since `$1` (a minute number), with their tallies.
pub const MINUTES_SINCE: &str =
    "SELECT minute, source, status, count FROM event_minutes WHERE minute >= $1 ORDER BY minute";

/// One minute's tally of events by source and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MinuteCount {
    pub minute: i64,
    pub source: String,
    pub status: String,
    pub count: i64,
}

/// Tallies of `(source, status)` per minute for recorded events.
#[derive(Debug, Default)]
pub struct Tally(std::collections::BTreeMap<(i64, &'static str, &'static str), i64>);

impl Tally {
    pub fn add(&mut self, now_ms: u64, source: Source, status: EventStatus) {
        *self
            .0
            .entry(((now_ms / 60_000) as i64, source.as_str(), status.as_str()))
            .or_default() += 1;
    }

    pub fn merge(&mut self, other: Tally) {
        for (key, n) in other.0 {
            *self.0.entry(key).or_default() += n;
        }
    }

    pub fn rows(&self) -> impl Iterator<Item = (i64, &'static str, &'static str, i64)> + '_ {
        self.0.iter().map(|(&(m, s, st), &n)| (m, s, st, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_and_signatures_cut() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-live-123".parse().unwrap());
        h.insert("x-signature", "0123456789abcdef0123".parse().unwrap());
        h.insert("x-my-secret-thing", "hunter2".parse().unwrap());
        h.insert("user-agent", "Segment.io/1.0".parse().unwrap());
        let shown = masked_headers(&h);
        assert!(
            !shown.contains("sk-live-123") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(!shown.contains("0123456789abcdef0123"), "{shown}");
        assert!(shown.contains("01234567… (20 characters)"), "{shown}");
        assert!(shown.contains("Segment.io/1.0"), "{shown}");
    }

    #[test]
    fn a_job_state_filter_reads_the_narrowest_index_in_key_order() {
        let (sql, binds) = list_query(
            &EventFilter {
                status: Some(StatusFilter::Job(JobState::Dead)),
                before: Some(99),
                user: Some("u1".into()),
                ..Default::default()
            },
            51,
        );
        assert!(
            sql.contains("e.id < $1") && sql.contains("e.user_id = $2"),
            "{sql}"
        );
        assert!(
            sql.contains("j.state = $3)") && sql.ends_with("ORDER BY e.id DESC LIMIT 51"),
            "{sql}"
        );
        assert_eq!(
            binds,
            vec![
                Bind::Int(99),
                Bind::Text("u1".into()),
                Bind::Text("dead".into())
            ]
        );
        let (sql, _) = list_query(
            &EventFilter {
                status: Some(StatusFilter::Job(JobState::Dead)),
                ..Default::default()
            },
            51,
        );
        assert!(
            sql.contains("FROM jobs j JOIN events e")
                && sql.ends_with("ORDER BY j.event_row DESC LIMIT 51"),
            "{sql}"
        );
    }
}
