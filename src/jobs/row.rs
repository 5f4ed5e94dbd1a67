//! A job as both SQL stores return it: the same columns, JSON kept as text.

use serde_json::{Map, Value};

use super::{Job, JobId, JobState, NewJob, StoreError};

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
    state: String,
    attempts: i64,
    created_ms: i64,
    run_at_ms: i64,
    progress: String,
    last_error: Option<String>,
    outcome: Option<String>,
    history: String,
}

pub fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn object(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(row: JobRow) -> Result<Self, StoreError> {
        Ok(Job {
            id: row.id as JobId,
            new: NewJob {
                trigger: row.trigger_name,
                action: row.action,
                source: row.source.parse().map_err(StoreError::Unavailable)?,
                event_id: row.event_id,
                user_id: row.user_id,
                context: object(&row.context),
            },
            state: row.state.parse().unwrap_or(JobState::Pending),
            attempts: row.attempts as u32,
            created_ms: row.created_ms as u64,
            run_at_ms: row.run_at_ms as u64,
            progress: object(&row.progress),
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
