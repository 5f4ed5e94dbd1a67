//! A job as both SQL stores return it: the same columns, JSON kept as text.

use serde_json::{Map, Value};

use super::{Job, JobId, JobKind, JobState, NewJob, StoreError};
use crate::{
    sources::Source,
    triggers::{config::SinkKind, ActionKind},
};

/// The columns of a job row. Postgres selects its `jsonb` columns `::text` into the same names.
#[derive(Debug, sqlx::FromRow)]
pub struct JobRow {
    id: i64,
    trigger_name: String,
    action: String,
    source: String,
    event_id: String,
    user_id: Option<String>,
    context: String,
    /// The event's raw JSON when the job keeps no context of its own ([`EVENTS_CONTEXT`]).
    event_raw: Option<String>,
    state: String,
    attempts: i64,
    created_ms: i64,
    run_at_ms: i64,
    progress: String,
    last_error: Option<String>,
    outcome: Option<String>,
    history: String,
}

impl JobRow {
    /// A job row as rusqlite reads it on SQLite's writer (a claim's `RETURNING`), by column name.
    pub fn from_sqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(JobRow {
            id: row.get("id")?,
            trigger_name: row.get("trigger_name")?,
            action: row.get("action")?,
            source: row.get("source")?,
            event_id: row.get("event_id")?,
            user_id: row.get("user_id")?,
            context: row.get("context")?,
            event_raw: row.get("event_raw")?,
            state: row.get("state")?,
            attempts: row.get("attempts")?,
            created_ms: row.get("created_ms")?,
            run_at_ms: row.get("run_at_ms")?,
            progress: row.get("progress")?,
            last_error: row.get("last_error")?,
            outcome: row.get("outcome")?,
            history: row.get("history")?,
        })
    }
}

pub fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A job's stored `context` when it is its event's: JSON `null` (text on SQLite, `jsonb` on Postgres). Its
/// event's raw JSON is already stored, and the context is a function of it (`Provider::full_context`), so
/// the job does not keep a second copy (~2.5 KB, rewritten with the row at each claim and outcome); a read
/// rebuilds it. Retention writes the context into the job before its event goes
/// ([`super::upkeep`]).
pub const EVENTS_CONTEXT: &str = "null";

/// The text a job's context is stored as: [`EVENTS_CONTEXT`] for an empty one (see [`NewJob::context`]).
pub fn context_text(job: &NewJob) -> String {
    if job.context.is_empty() {
        EVENTS_CONTEXT.into()
    } else {
        json_text(&job.context)
    }
}

/// A job's context as read: its own, or, for [`EVENTS_CONTEXT`], its event's rebuilt from the event's raw
/// JSON (empty if the event is gone, as after an erasure).
pub fn context_of(source: Source, stored: &str, event_raw: Option<&str>) -> Map<String, Value> {
    match event_raw {
        Some(raw) if stored == EVENTS_CONTEXT => source.provider().full_context(raw),
        _ => object(stored),
    }
}

fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(row: JobRow) -> Result<Self, StoreError> {
        let source: Source = row.source.parse().map_err(StoreError::Unavailable)?;
        Ok(Job {
            id: row.id as JobId,
            new: NewJob {
                trigger: row.trigger_name,
                action: row.action.parse().map_err(StoreError::Unavailable)?,
                source,
                event_id: row.event_id,
                user_id: row.user_id,
                context: context_of(source, &row.context, row.event_raw.as_deref()),
            },
            state: row.state.parse().unwrap_or(JobState::Pending),
            attempts: row.attempts as u32,
            created_ms: row.created_ms as u64,
            run_at_ms: row.run_at_ms as u64,
            progress: serde_json::from_str(&row.progress).unwrap_or_default(),
            last_error: row.last_error,
            outcome: row.outcome.and_then(|o| serde_json::from_str(&o).ok()),
            history: serde_json::from_str(&row.history).unwrap_or_default(),
        })
    }
}

/// Converts fetched rows.
pub fn jobs(rows: Vec<JobRow>) -> Result<Vec<Job>, StoreError> {
    rows.into_iter().map(Job::try_from).collect()
}

/// A delivery job's `action`: `sink:` and the sink's type.
const DELIVERY_PREFIX: &str = "sink:";

impl JobKind {
    /// The text of the `action` column: the action's name, or `sink:<type>` for a delivery.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Action(action) => action.as_str(),
            JobKind::Delivery(SinkKind::Log) => "sink:log",
            JobKind::Delivery(SinkKind::File) => "sink:file",
            JobKind::Delivery(SinkKind::Slack) => "sink:slack",
            JobKind::Delivery(SinkKind::Webhook) => "sink:webhook",
            JobKind::Delivery(SinkKind::Customerio) => "sink:customerio",
            JobKind::Delivery(SinkKind::Segment) => "sink:segment",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let kind = match s.strip_prefix(DELIVERY_PREFIX) {
            Some(sink) => SinkKind::ALL
                .into_iter()
                .find(|k| k.as_str() == sink)
                .map(JobKind::Delivery),
            None => ActionKind::ALL
                .into_iter()
                .find(|k| k.as_str() == s)
                .map(JobKind::Action),
        };
        kind.ok_or_else(|| format!("unknown job action `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_kind_reads_back_as_stored() {
        let kinds = ActionKind::ALL
            .into_iter()
            .map(JobKind::Action)
            .chain(SinkKind::ALL.into_iter().map(JobKind::Delivery));
        for kind in kinds {
            assert_eq!(kind.as_str().parse::<JobKind>(), Ok(kind));
        }
        assert_eq!(
            "sink:webhook".parse::<JobKind>(),
            Ok(JobKind::Delivery(SinkKind::Webhook))
        );
        assert!("sink:pager".parse::<JobKind>().is_err());
        assert!("launch".parse::<JobKind>().is_err());
    }
}
