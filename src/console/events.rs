//! The events list (filtered, paged by key) and one event's page: headers (masked), raw body, signature
//! check, the triggers it matched, and each job's attempts and errors.

use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    layout::{badge, esc, page, query_value, time},
    pages::{not_found, replay_form, unavailable},
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

fn select(name: &str, current: &str, options: &[&str]) -> String {
    let options: String = options
        .iter()
        .map(|o| {
            let label = if o.is_empty() { "any" } else { o };
            let selected = if *o == current { " selected" } else { "" };
            format!("<option value=\"{o}\"{selected}>{label}</option>")
        })
        .collect();
    format!("<select name=\"{name}\">{options}</select>")
}

pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let filter = match q.filter() {
        Ok(f) => f,
        Err(e) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                page("Events", &format!("<p role=alert>{}</p>", esc(&e))),
            )
                .into_response()
        }
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
    let rows: String = events
        .iter()
        .map(|e| {
            let mine: Vec<&JobBrief> = jobs.iter().filter(|j| j.event_row == e.id).collect();
            let triggers: Vec<String> = mine.iter().map(|j| esc(&j.trigger_name)).collect();
            format!(
                "<tr><td>{}</td><td>{}</td><td><a href=\"/console/events/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(e.received_ms as u64),
                esc(&e.source),
                e.id,
                esc(&e.event_id),
                esc(&e.name),
                esc(e.user_id.as_deref().unwrap_or("—")),
                badge(&status_of(
                    e,
                    &mine.iter().map(|j| j.state.as_str()).collect::<Vec<_>>()
                )),
                if triggers.is_empty() { "—".into() } else { triggers.join(", ") },
            )
        })
        .collect();
    let filters = format!(
        "<form class=filters method=get action=\"/console/events\">\
         <label>source {}</label>\
         <label>event / metric <input name=name value=\"{}\" placeholder=\"trial_started\"></label>\
         <label>user / customer <input name=user value=\"{}\"></label>\
         <label>status {}</label>\
         <button type=submit>Filter</button> <a href=\"/console/events\">clear</a></form>",
        select("source", q.source.trim(), &["", "segment", "customerio"]),
        esc(q.name.trim()),
        esc(q.user.trim()),
        select(
            "status",
            q.status.trim(),
            &[
                "",
                "ignored",
                "triggered",
                "refused",
                "unprocessable",
                "pending",
                "running",
                "done",
                "dead",
                "held"
            ]
        ),
    );
    let table = if events.is_empty() {
        "<p>No events match.</p>".to_string()
    } else {
        format!("<table><tr><th>received</th><th>source</th><th>event id</th><th>event / metric</th><th>user / customer</th><th>status</th><th>triggers</th></tr>{rows}</table>")
    };
    let mut pager = Vec::new();
    if q.before.is_some() {
        pager.push(format!("<a href=\"{}\">← Newest</a>", esc(&q.link(None))));
    }
    if let Some(next) = next_before {
        pager.push(format!(
            "<a href=\"{}\">Older →</a>",
            esc(&q.link(Some(next)))
        ));
    }
    page(
        "Events",
        &format!("{filters}{table}<p class=pager>{}</p>", pager.join(" ")),
    )
    .into_response()
}

fn job_section(job: &Job, csrf: &str, back: &str) -> String {
    let history: String = job
        .history
        .iter()
        .map(|h| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                h["attempt"].as_u64().unwrap_or(0),
                time(h["at_ms"].as_u64().unwrap_or(0)),
                badge(h["result"].as_str().unwrap_or("?")),
                esc(h["error"].as_str().unwrap_or(""))
            )
        })
        .collect();
    let history = if history.is_empty() {
        "<p class=meta>No attempt has ended yet.</p>".to_string()
    } else {
        format!("<table><tr><th>attempt</th><th>ended</th><th>result</th><th>error</th></tr>{history}</table>")
    };
    let outcome = job.outcome.as_ref();
    let mut links = Vec::new();
    if job.new.action == JobKind::Action(ActionKind::Research)
        && outcome.is_some_and(|o| o["brief"].is_string())
    {
        links.push(format!(
            "<a href=\"/console/briefs/{}\">Read the brief</a>",
            job.id
        ));
    }
    if let Some(id) = outcome.and_then(|o| o["persona_id"].as_str()) {
        links.push(format!("Mavera persona <code>{}</code>", esc(id)));
    }
    if let Some(reason) = outcome.and_then(|o| o["skipped"].as_str()) {
        links.push(esc(reason));
    }
    let replay = if matches!(job.state.as_str(), "dead" | "held" | "done") {
        replay_form(csrf, Some(job.id), "Replay", back)
    } else {
        String::new()
    };
    format!(
        "<section><h3>Job {} · {} · {}</h3><p class=meta>{} · created {}{}</p>{}{}{history}{replay}</section>",
        job.id,
        esc(&job.new.trigger),
        badge(job.state.as_str()),
        super::layout::count(job.attempts, "attempt", "attempts"),
        time(job.created_ms),
        job.last_error
            .as_deref()
            .map(|e| format!(" · last error: {}", esc(e)))
            .unwrap_or_default(),
        if links.is_empty() { String::new() } else { format!("<p>{}</p>", links.join(" · ")) },
        format_args!("<p class=meta>action {}</p>", esc(job.new.action.as_str())),
    )
}

pub async fn detail(State(state): State<AppState>, Path(id): Path<i64>) -> Response {
    let (event, jobs) = match state.jobs.store.event(id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(&format!("There is no event {id}.")),
        Err(e) => return unavailable(e),
    };
    let csrf = super::csrf_for(&state);
    let headers: String = serde_json::from_str::<serde_json::Map<String, Value>>(&event.headers)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| {
            format!(
                "<tr><th>{}</th><td><code>{}</code></td></tr>",
                esc(k),
                esc(v.as_str().unwrap_or(""))
            )
        })
        .collect();
    let raw = serde_json::from_str::<Value>(&event.raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| event.raw.clone());
    let signature_state = if event.signature.starts_with("verified") {
        "verified"
    } else {
        "not checked"
    };
    let triggers: Vec<String> = jobs
        .iter()
        .filter(|j| matches!(j.new.action, JobKind::Action(_)))
        .map(|j| format!("<code>{}</code>", esc(&j.new.trigger)))
        .collect();
    let back = format!("/console/events/{id}");
    let job_sections: String = jobs.iter().map(|j| job_section(j, &csrf, &back)).collect();
    let row = &event.row;
    let states: Vec<&str> = jobs.iter().map(|j| j.state.as_str()).collect();
    let body = format!(
        "<section><table>\
         <tr><th>event id</th><td><code>{}</code></td></tr>\
         <tr><th>source</th><td>{}</td></tr>\
         <tr><th>event / metric</th><td>{}</td></tr>\
         <tr><th>user / customer</th><td>{}</td></tr>\
         <tr><th>received</th><td>{}</td></tr>\
         <tr><th>status</th><td>{}{}</td></tr>\
         <tr><th>signature</th><td>{} {}</td></tr>\
         <tr><th>triggers matched</th><td>{}</td></tr></table></section>\
         {job_sections}\
         <section><h2>Headers</h2><p class=meta>Credentials are masked and signatures cut before they are stored.</p><table>{headers}</table></section>\
         <section><h2>Raw body</h2><pre>{}</pre></section>",
        esc(&row.event_id),
        esc(&row.source),
        esc(&row.name),
        esc(row.user_id.as_deref().unwrap_or("—")),
        time(row.received_ms as u64),
        badge(&status_of(row, &states)),
        event
            .reason
            .as_deref()
            .map(|why| format!(" <span class=reason>{}</span>", esc(why)))
            .unwrap_or_default(),
        badge(signature_state),
        esc(event
            .signature
            .strip_prefix("verified: ")
            .or(event.signature.strip_prefix("not checked: "))
            .unwrap_or(&event.signature)),
        if event.reason.is_some() {
            "none: not a usable event, acknowledged and kept here".to_string()
        } else if triggers.is_empty() {
            "none: acknowledged and ignored".to_string()
        } else {
            triggers.join(", ")
        },
        esc(&raw),
    );
    page(&format!("Event {}", row.event_id), &body).into_response()
}
