//! The events list (filtered, paged by key) and one event's page: headers (masked), raw body, signature
//! check, the triggers it matched, and each job's attempts and errors.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::Response,
};
use minijinja::{context, Value};
use serde::Deserialize;
use serde_json::Value as Json;

use super::{
    layout::{count, query_value, render, time},
    pages::{message, not_found, unavailable},
};
use crate::{
    jobs::{
        events::{EventFilter, EventRow, JobBrief},
        Job, JobKind,
    },
    sources::Source,
    state::AppState,
    triggers::ActionKind,
};

const PAGE: usize = 50;

/// The list's query string; empty fields are no filter.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    source: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    status: String,
    before: Option<i64>,
}

fn some(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

impl ListQuery {
    fn filter(&self) -> Result<EventFilter, String> {
        Ok(EventFilter {
            source: some(&self.source)
                .map(|s| s.parse::<Source>())
                .transpose()?,
            name: some(&self.name),
            user: some(&self.user),
            status: some(&self.status).map(|s| s.parse()).transpose()?,
            before: self.before,
        })
    }

    /// This query with another `before`.
    fn link(&self, before: Option<i64>) -> String {
        let mut parts = Vec::new();
        for (key, value) in [
            ("source", &self.source),
            ("name", &self.name),
            ("user", &self.user),
            ("status", &self.status),
        ] {
            if !value.trim().is_empty() {
                parts.push(format!("{key}={}", query_value(value.trim())));
            }
        }
        if let Some(b) = before {
            parts.push(format!("before={b}"));
        }
        format!("/console/events?{}", parts.join("&"))
    }
}

/// An event's status from its jobs: the most urgent of them.
fn status_of(event: &EventRow, job_states: &[&str]) -> String {
    if event.status != "triggered" {
        return event.status.clone();
    }
    for state in ["dead", "running", "pending", "held", "done"] {
        if job_states.contains(&state) {
            return state.into();
        }
    }
    event.status.clone()
}

/// The status filter's choices: an event's own outcome, or its jobs' state.
const STATUSES: [&str; 10] = [
    "",
    "ignored",
    "triggered",
    "refused",
    "unprocessable",
    "pending",
    "running",
    "done",
    "dead",
    "held",
];

pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => return message(StatusCode::BAD_REQUEST, "Events", &e, true),
    };
    let store = &state.jobs.store;
    let (events, next_before) = match store.events(&filter, PAGE).await {
        Ok(page) => (page.rows, page.next_before),
        Err(e) => return unavailable(e),
    };
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    let jobs = match store.event_jobs(&ids).await {
        Ok(j) => j,
        Err(e) => return unavailable(e),
    };
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            let mine: Vec<&JobBrief> = jobs.iter().filter(|j| j.event_row == e.id).collect();
            let states: Vec<&str> = mine.iter().map(|j| j.state.as_str()).collect();
            context! {
                id => e.id,
                received => time(e.received_ms as u64),
                source => e.source,
                event_id => e.event_id,
                name => e.name,
                user => e.user_id.as_deref().unwrap_or("—"),
                status => status_of(e, &states),
                triggers => mine.iter().map(|j| j.trigger_name.as_str()).collect::<Vec<_>>(),
            }
        })
        .collect();
    render(
        StatusCode::OK,
        "events.html",
        context! {
            title => "Events",
            source => q.source.trim(),
            sources => ["", "segment", "customerio"],
            name => q.name.trim(),
            user => q.user.trim(),
            status => q.status.trim(),
            statuses => STATUSES,
            events,
            newest => q.before.is_some().then(|| q.link(None)),
            older => next_before.map(|next| q.link(Some(next))),
        },
    )
}

/// One job of an event's page, for `event.html`.
fn job_section(job: &Job) -> Value {
    let history: Vec<Value> = job
        .history
        .iter()
        .map(|h| {
            context! {
                attempt => h["attempt"].as_u64().unwrap_or(0),
                ended => time(h["at_ms"].as_u64().unwrap_or(0)),
                result => h["result"].as_str().unwrap_or("?"),
                error => h["error"].as_str().unwrap_or(""),
            }
        })
        .collect();
    let outcome = job.outcome.as_ref();
    context! {
        id => job.id,
        trigger => job.new.trigger,
        state => job.state.as_str(),
        attempts => count(job.attempts, "attempt", "attempts"),
        created => time(job.created_ms),
        last_error => job.last_error,
        brief => job.new.action == JobKind::Action(ActionKind::Research) && outcome.is_some_and(|o| o["brief"].is_string()),
        persona_id => outcome.and_then(|o| o["persona_id"].as_str()),
        skipped => outcome.and_then(|o| o["skipped"].as_str()),
        action => job.new.action.as_str(),
        history,
        replay => matches!(job.state.as_str(), "dead" | "held" | "done"),
    }
}

pub async fn detail(State(state): State<AppState>, Path(id): Path<i64>) -> Response {
    let (event, jobs) = match state.jobs.store.event(id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(&format!("There is no event {id}.")),
        Err(e) => return unavailable(e),
    };
    let headers: Vec<(String, String)> =
        serde_json::from_str::<serde_json::Map<String, Json>>(&event.headers)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or("").to_string()))
            .collect();
    let raw = serde_json::from_str::<Json>(&event.raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| event.raw.clone());
    let signature_state = if event.signature.starts_with("verified") {
        "verified"
    } else {
        "not checked"
    };
    let triggers: Vec<&str> = jobs
        .iter()
        .filter(|j| matches!(j.new.action, JobKind::Action(_)))
        .map(|j| j.new.trigger.as_str())
        .collect();
    let row = &event.row;
    let states: Vec<&str> = jobs.iter().map(|j| j.state.as_str()).collect();
    render(
        StatusCode::OK,
        "event.html",
        context! {
            title => format!("Event {}", row.event_id),
            csrf => super::csrf_for(&state),
            back => format!("/console/events/{id}"),
            event_id => row.event_id,
            source => row.source,
            name => row.name,
            user => row.user_id.as_deref().unwrap_or("—"),
            received => time(row.received_ms as u64),
            status => status_of(row, &states),
            reason => event.reason,
            signature_state,
            signature => event
                .signature
                .strip_prefix("verified: ")
                .or(event.signature.strip_prefix("not checked: "))
                .unwrap_or(&event.signature),
            triggers,
            jobs => jobs.iter().map(job_section).collect::<Vec<_>>(),
            headers,
            raw,
        },
    )
}
