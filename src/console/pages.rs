//! The overview, the research briefs and personas, the dead letters, and the login form.

use std::sync::atomic::Ordering;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::Response,
};
use minijinja::{context, Value};
use serde::Deserialize;
use serde_json::Value as Json;

use super::layout::{ago, count, render, render_markdown, time};
use crate::{
    jobs::{now_ms, Job, JobState},
    metrics::UpstreamHealth,
    sources::Source,
    state::AppState,
};

/// The sign-in form. `insecure_host` names the host when the page was reached over plain http on a name
/// that is not loopback: browsers then drop the `Secure` session cookie, and signing in would not stick.
pub fn login_page(
    status: StatusCode,
    error: Option<&str>,
    insecure_host: Option<&str>,
) -> Response {
    render(
        status,
        "login.html",
        context! { title => "Sign in", bare => true, error, insecure_host, locked_secs => None::<u64> },
    )
}

/// The page a locked-out client gets instead of the form.
pub fn locked_page(status: StatusCode, retry_after_secs: u64) -> Response {
    render(
        status,
        "login.html",
        context! { title => "Too many attempts", bare => true, locked_secs => retry_after_secs },
    )
}

/// A page of one sentence: what was not found, or why the store did not answer.
pub(super) fn message(status: StatusCode, title: &str, message: &str, alert: bool) -> Response {
    render(status, "message.html", context! { title, message, alert })
}

fn card(label: &str, value: impl std::fmt::Display) -> (String, String) {
    (label.to_string(), value.to_string())
}

fn health_row(name: &str, h: &UpstreamHealth, now: u64) -> Value {
    let last = h.last_success_ms.load(Ordering::Relaxed);
    context! {
        name,
        state => h.state(),
        failures => h.consecutive_failures.load(Ordering::Relaxed),
        last => if last == 0 { "none yet".to_string() } else { format!("{} ago", ago(last, now)) },
    }
}

/// Bars of events per minute over the last hour (triggered dark, ignored light), for `chart.html`.
fn chart(per_minute: &[(u64, u64)]) -> Value {
    let max = per_minute
        .iter()
        .map(|(t, i)| t + i)
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h) = (10u64, 120u64);
    let bars: Vec<Value> = per_minute
        .iter()
        .enumerate()
        .map(|(n, (triggered, ignored))| {
            context! {
                x => n as u64 * w,
                triggered,
                ignored,
                triggered_h => triggered * h / max,
                ignored_h => ignored * h / max,
            }
        })
        .collect();
    context! { width => 60 * w, height => h, peak => max, bars }
}

pub async fn overview(State(state): State<AppState>) -> Response {
    let now = now_ms();
    let this_minute = (now / 60_000) as i64;
    let (counts, minutes) = match tokio::try_join!(
        state.jobs.store.counts(),
        state.jobs.store.event_minutes(this_minute - 24 * 60 + 1)
    ) {
        Ok(both) => both,
        Err(e) => return unavailable(e),
    };
    // events per (source, status) in the last hour and day, and per minute for the chart
    let mut table = std::collections::BTreeMap::<(String, String), (i64, i64)>::new();
    let mut per_minute = vec![(0u64, 0u64); 60];
    for m in &minutes {
        let cell = table
            .entry((m.source.clone(), m.status.clone()))
            .or_default();
        cell.1 += m.count;
        if m.minute > this_minute - 60 {
            cell.0 += m.count;
            let slot = &mut per_minute[(59 - (this_minute - m.minute)) as usize];
            match m.status.as_str() {
                "triggered" => slot.0 += m.count as u64,
                "ignored" => slot.1 += m.count as u64,
                // Refused and unprocessable parts are in the table below, not the chart.
                _ => {}
            }
        }
    }
    let outcomes: Vec<Value> = Source::all()
        .iter()
        .flat_map(|s| {
            ["triggered", "ignored", "refused", "unprocessable"].map(move |st| (s.as_str(), st))
        })
        // Segment batches have refused elements; Customer.io bodies are unprocessable.
        .filter(|(s, st)| {
            !matches!(
                (*s, *st),
                ("segment", "unprocessable") | ("customerio", "refused")
            )
        })
        .map(|(source, status)| {
            let (hour, day) = table
                .get(&(source.to_string(), status.to_string()))
                .copied()
                .unwrap_or_default();
            context! { source, status, hour, day }
        })
        .collect();
    let c = &state.intake.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let cards = [
        card("queue depth", counts.pending + counts.running),
        card(
            "oldest pending",
            counts
                .oldest_pending_ms
                .map(|t| ago(t, now))
                .unwrap_or_else(|| "—".into()),
        ),
        card("dead letters", counts.dead),
        card("held by cost guards", counts.held),
        card("jobs done", counts.done),
        card(
            "Mavera credits used",
            format!("{:.1}", state.metrics.mavera_credits_used.get()),
        ),
    ];
    let since_start = [
        card("webhooks received", load(&c.received)),
        card("duplicates dropped", load(&c.duplicates)),
        card("requests refused", load(&c.rejected)),
        card("not listed (log behind)", state.jobs.log_dropped()),
    ];
    let m = &state.metrics;
    let pruned = |table| {
        m.store_rows_pruned
            .get_or_create(&crate::metrics::Metrics::table(table))
            .get()
    };
    let oldest = |table| match m
        .store_oldest_row_timestamp_seconds
        .get_or_create(&crate::metrics::Metrics::table(table))
        .get()
    {
        0 => "—".to_string(),
        // The gauge holds whole seconds (truncated): the row arrived within that second, so its age is
        // counted from the second's end, never more than it really is (a row 0.1 s old read "1s").
        s => ago(s as u64 * 1000 + 999, now),
    };
    let store = [
        card(
            "store size",
            format!("{:.1} MB", m.store_size_bytes.get() as f64 / 1e6),
        ),
        card("oldest event kept", oldest("events")),
        card("oldest job kept", oldest("jobs")),
        card("rows pruned since start", pruned("events") + pruned("jobs")),
    ];
    let health = [
        health_row("Mavera", &state.metrics.mavera_health, now),
        health_row("Customer.io App API", &state.metrics.customerio_health, now),
    ];
    render(
        StatusCode::OK,
        "overview.html",
        context! {
            title => "Overview",
            cards,
            c => chart(&per_minute),
            outcomes,
            since_start,
            health,
            store,
            retention_events => kept_for(state.settings.store.retention_events),
            retention_jobs => kept_for(state.settings.store.retention_jobs),
            prune_interval => humantime::format_duration(state.settings.store.prune_interval).to_string(),
        },
    )
}

fn kept_for(retention: Option<std::time::Duration>) -> String {
    match retention {
        None => "kept forever (off)".into(),
        // Whole days as days: humantime would write 90 days as "2months 29days 2h 52m 48s".
        Some(d) if d.as_secs() % 86_400 == 0 => format!("kept {} days", d.as_secs() / 86_400),
        Some(d) => format!("kept {}", humantime::format_duration(d)),
    }
}

pub(super) fn unavailable(e: crate::jobs::StoreError) -> Response {
    tracing::warn!(error = %e, "console: the store did not answer");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Store unavailable",
        &e.to_string(),
        false,
    )
}

pub(super) fn not_found(what: &str) -> Response {
    message(StatusCode::NOT_FOUND, "Not found", what, false)
}

fn str_of<'a>(v: &'a Json, key: &str) -> Option<&'a str> {
    v[key].as_str().filter(|s| !s.is_empty())
}

/// A research brief for the `brief_article` macro; `None` for a job without one.
fn brief_article(job: &Job) -> Option<Value> {
    let outcome = job.outcome.as_ref()?;
    let brief = outcome["brief"].as_str()?;
    let sources: Vec<Value> = outcome["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            s["url"]
                .as_str()
                .map(|u| (u, s["title"].as_str().unwrap_or(u)))
        })
        .map(|(url, title)| {
            // Through the Markdown renderer and its sanitiser, which drops a `javascript:` link.
            Value::from_safe_string(render_markdown(&format!(
                "[{}](<{}>)",
                title.replace(['[', ']'], ""),
                url
            )))
        })
        .collect();
    Some(context! {
        id => job.id,
        title => str_of(outcome, "title").unwrap_or(&job.new.trigger),
        created => time(job.created_ms),
        trigger => job.new.trigger,
        who => str_of(outcome, "customer_id")
            .or(job.new.user_id.as_deref())
            .unwrap_or("unknown"),
        persona => str_of(outcome, "persona_type")
            .or_else(|| job.new.context.get("persona_type").and_then(Json::as_str))
            .unwrap_or("—"),
        summary => str_of(outcome, "summary"),
        html => Value::from_safe_string(render_markdown(brief)),
        sources,
    })
}

#[derive(Deserialize, Default)]
pub struct Before {
    before: Option<u64>,
}

/// Briefs are long: 20 to a page.
const PAGE: usize = 20;

pub async fn briefs(State(state): State<AppState>, Query(q): Query<Before>) -> Response {
    let store = &state.jobs.store;
    let (research, personas) = match tokio::try_join!(
        store.finished("research", q.before, PAGE),
        store.finished("create_persona", None, PAGE)
    ) {
        Ok(both) => both,
        Err(e) => return unavailable(e),
    };
    let briefs: Vec<Value> = research.iter().filter_map(brief_article).collect();
    let older = (research.len() == PAGE).then(|| research.last().map_or(0, |j| j.id));
    let personas: Vec<Value> = personas
        .iter()
        .filter_map(|j| {
            let o = j.outcome.as_ref()?;
            Some(context! {
                name => str_of(o, "name").unwrap_or("—"),
                id => str_of(o, "persona_id")?,
                what => match (str_of(o, "action"), o["adopted"].as_bool()) {
                    (Some("update_persona"), _) => "updated",
                    (_, Some(true)) => "adopted (found by name after an interrupted attempt)",
                    _ => "created",
                },
                trigger => j.new.trigger,
                user => j.new.user_id.as_deref().unwrap_or("unknown"),
                when => time(j.created_ms),
            })
        })
        .collect();
    render(
        StatusCode::OK,
        "briefs.html",
        context! { title => "Research briefs", briefs, older, personas },
    )
}

pub async fn brief(State(state): State<AppState>, Path(id): Path<u64>) -> Response {
    match state.jobs.store.get(id).await {
        Ok(Some(job)) => match brief_article(&job) {
            Some(brief) => render(
                StatusCode::OK,
                "brief.html",
                context! { title => "Research brief", brief },
            ),
            None => not_found(&format!("Job {id} has no research brief.")),
        },
        Ok(None) => not_found(&format!("There is no job {id}.")),
        Err(e) => unavailable(e),
    }
}

pub async fn dead(State(state): State<AppState>) -> Response {
    let csrf = super::csrf_for(&state);
    let jobs = match state.jobs.store.list(Some(JobState::Dead), 200).await {
        Ok(jobs) => jobs,
        Err(e) => return unavailable(e),
    };
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|j| {
            context! {
                id => j.id,
                trigger => j.new.trigger,
                action => j.new.action.as_str(),
                event_id => j.new.event_id,
                user => j.new.user_id.as_deref().unwrap_or("unknown"),
                attempts => count(j.attempts, "attempt", "attempts"),
                created => time(j.created_ms),
                error => j.last_error.as_deref().unwrap_or(""),
            }
        })
        .collect();
    render(
        StatusCode::OK,
        "dead.html",
        context! { title => "Dead letters", csrf, jobs },
    )
}

const AUDIT_PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    before: Option<i64>,
}

/// The audit trail, 50 lines a page.
pub async fn audit(State(state): State<AppState>, Query(q): Query<AuditQuery>) -> Response {
    let rows = match state.jobs.store.audit_page(q.before, AUDIT_PAGE).await {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let older = (rows.len() == AUDIT_PAGE).then(|| rows.last().map_or(0, |r| r.id));
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            context! {
                when => time(r.at_ms),
                action => r.action,
                via => r.via,
                client => r.client,
                detail => r.detail,
            }
        })
        .collect();
    render(
        StatusCode::OK,
        "audit.html",
        context! { title => "Audit trail", rows, older },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_brief_with_script_or_javascript_links_renders_inert() {
        let html = render_markdown(
            "# Plan\n<script>alert(1)</script>\n[click](javascript:alert(2)) <img src=x onerror=alert(3)> **bold**",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("onerror"), "{html}");
        assert!(
            html.contains("<h1>Plan</h1>") && html.contains("<strong>bold</strong>"),
            "{html}"
        );
    }

    #[test]
    fn the_chart_scales_to_the_busiest_minute() {
        let mut minutes = vec![(0, 0); 60];
        minutes[59] = (6, 4);
        let svg =
            super::super::layout::render_to_string("chart.html", context! { c => chart(&minutes) })
                .unwrap();
        assert!(
            svg.contains("height=\"72\"") && svg.contains("height=\"48\""),
            "{svg}"
        );
        assert!(svg.contains("peak 10/min"), "{svg}");
    }
}
