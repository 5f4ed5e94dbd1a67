//! The overview, the research briefs and personas, the dead letters, and the login form.

use std::sync::atomic::Ordering;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{ago, badge, bare_page, count, esc, page, render_markdown, time};
use crate::{
    jobs::{now_ms, Job, JobState},
    metrics::UpstreamHealth,
    sources::Source,
    state::AppState,
};

/// The sign-in form. `insecure_host` names the host when the page was reached over plain http on a name
/// that is not loopback: browsers then drop the `Secure` session cookie, and signing in would not stick.
pub fn login_page(error: Option<&str>, insecure_host: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p role=alert>{}</p>", esc(e)))
        .unwrap_or_default();
    let warning = insecure_host
        .map(|host| {
            format!(
                "<p class=warn>This page came over plain http to <code>{}</code>. Browsers keep the console's session                  cookie (Secure) only over https or on 127.0.0.1/localhost, so signing in here will not stick. Open the                  console over https (for example through ngrok) or at http://127.0.0.1, or send                  <code>Authorization: Bearer &lt;ADMIN_TOKEN&gt;</code> from a script.</p>",
                esc(host)
            )
        })
        .unwrap_or_default();
    bare_page(
        "Sign in",
        &format!(
            r#"{warning}{error}<form method="post" action="/console/login"><label>Admin token
<input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form>"#
        ),
    )
}

fn card(label: &str, value: impl std::fmt::Display) -> String {
    format!("<div class=card><b>{value}</b>{}</div>", esc(label))
}

fn health_row(name: &str, h: &UpstreamHealth, now: u64) -> String {
    let last = h.last_success_ms.load(Ordering::Relaxed);
    format!(
        "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        badge(h.state()),
        h.consecutive_failures.load(Ordering::Relaxed),
        if last == 0 {
            "none yet".to_string()
        } else {
            format!("{} ago", ago(last, now))
        }
    )
}

/// Bars of events per minute over the last hour (triggered dark, ignored light).
fn chart(per_minute: &[(u64, u64)]) -> String {
    let max = per_minute
        .iter()
        .map(|(t, i)| t + i)
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h) = (10u64, 120u64);
    let bars: String = per_minute
        .iter()
        .enumerate()
        .map(|(n, (triggered, ignored))| {
            let x = n as u64 * w;
            let th = triggered * h / max;
            let ih = ignored * h / max;
            format!(
                "<rect x=\"{x}\" y=\"{}\" width=\"8\" height=\"{th}\" fill=\"#3f51b5\"><title>{triggered} triggered</title></rect>\
                 <rect x=\"{x}\" y=\"{}\" width=\"8\" height=\"{ih}\" fill=\"#b0bec5\"><title>{ignored} ignored</title></rect>",
                h - th,
                h - th - ih
            )
        })
        .collect();
    format!(
        "<svg role=img aria-label=\"events per minute, last hour\" viewBox=\"0 0 {} {}\" width=\"100%\" height=\"150\">{bars}\
         <text x=\"0\" y=\"{}\">60 min ago</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">now · peak {max}/min</text></svg>",
        60 * w,
        h + 14,
        h + 12,
        60 * w,
        h + 12
    )
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
    let rows: String = Source::all()
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
        .map(|(s, st)| {
            let (hour, day) = table
                .get(&(s.to_string(), st.to_string()))
                .copied()
                .unwrap_or_default();
            format!(
                "<tr><td>{s}</td><td>{}</td><td>{hour}</td><td>{day}</td></tr>",
                badge(st)
            )
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
    ]
    .join("");
    let since_start = [
        card("webhooks received", load(&c.received)),
        card("duplicates dropped", load(&c.duplicates)),
        card("requests refused", load(&c.rejected)),
        card("not listed (log behind)", state.jobs.log_dropped()),
    ]
    .join("");
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
        s => ago(s as u64 * 1000, now),
    };
    let store = [
        card(
            "store size",
            format!("{:.1} MB", m.store_size_bytes.get() as f64 / 1e6),
        ),
        card("oldest event kept", oldest("events")),
        card("oldest job kept", oldest("jobs")),
        card("rows pruned since start", pruned("events") + pruned("jobs")),
    ]
    .join("");
    let health = format!(
        "<table><tr><th>upstream</th><th>state</th><th>failures in a row</th><th>last success</th></tr>{}{}</table>",
        health_row("Mavera", &state.metrics.mavera_health, now),
        health_row("Customer.io App API", &state.metrics.customerio_health, now)
    );
    page(
        "Overview",
        &format!(
            "<div class=cards>{cards}</div>\
             <section><h2>Events, last hour</h2>{}</section>\
             <section><h2>Events by source and outcome</h2><table><tr><th>source</th><th>outcome</th><th>last hour</th><th>last day</th></tr>{rows}</table>\
             <p class=meta>Outcomes of the jobs they started: <a href=\"/console/events?status=done\">done</a> · <a href=\"/console/events?status=pending\">pending</a> · <a href=\"/console/events?status=dead\">dead</a> · <a href=\"/console/events?status=held\">held</a></p></section>\
             <section><h2>Since this process started</h2><div class=cards>{since_start}</div></section>\
             <section><h2>Upstream health</h2>{health}</section>\
             <section><h2>Store</h2><div class=cards>{store}</div>\
             <p class=meta>Retention: events {}, jobs {}; pruned every {}.</p></section>",
            chart(&per_minute),
            kept_for(state.settings.retention_events),
            kept_for(state.settings.retention_jobs),
            humantime::format_duration(state.settings.prune_interval),
        ),
    )
    .into_response()
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
    (
        StatusCode::SERVICE_UNAVAILABLE,
        page(
            "Store unavailable",
            &format!("<p>{}</p>", esc(&e.to_string())),
        ),
    )
        .into_response()
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v[key].as_str().filter(|s| !s.is_empty())
}

fn brief_article(job: &Job, full: bool) -> Option<String> {
    let outcome = job.outcome.as_ref()?;
    let brief = outcome["brief"].as_str()?;
    let title = str_of(outcome, "title").unwrap_or(&job.new.trigger);
    let persona = str_of(outcome, "persona_type")
        .or_else(|| job.new.context.get("persona_type").and_then(Value::as_str))
        .unwrap_or("—");
    let who = str_of(outcome, "customer_id")
        .or(job.new.user_id.as_deref())
        .unwrap_or("unknown");
    let sources: String = outcome["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            s["url"]
                .as_str()
                .map(|u| (u, s["title"].as_str().unwrap_or(u)))
        })
        .map(|(url, title)| {
            format!(
                "<li>{}</li>",
                render_markdown(&format!("[{}](<{}>)", title.replace(['[', ']'], ""), url))
            )
        })
        .collect();
    let sources = if sources.is_empty() {
        String::new()
    } else {
        format!("<h3>Sources</h3><ul>{sources}</ul>")
    };
    let summary = str_of(outcome, "summary")
        .map(|s| format!("<p><em>{}</em></p>", esc(s)))
        .unwrap_or_default();
    let link = if full {
        String::new()
    } else {
        format!(
            "<p><a href=\"/console/briefs/{}\">Read the brief</a> on its own page</p>",
            job.id
        )
    };
    let body = format!("{summary}{}{sources}{link}", render_markdown(brief));
    Some(format!(
        "<article id=\"job-{id}\"><h2>{}</h2><p class=meta>job {id} · {} · trigger {} · about {} · persona type {}</p>{body}</article>",
        esc(title),
        time(job.created_ms),
        esc(&job.new.trigger),
        esc(who),
        esc(persona),
        id = job.id,
    ))
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
    let articles: String = research
        .iter()
        .filter_map(|j| brief_article(j, false))
        .collect();
    let articles = if articles.is_empty() {
        "<p>No research briefs yet.</p>".to_string()
    } else {
        articles
    };
    let older = if research.len() == PAGE {
        format!(
            "<p class=pager><a href=\"/console/briefs?before={}\">Older briefs →</a></p>",
            research.last().map_or(0, |j| j.id)
        )
    } else {
        String::new()
    };
    let persona_rows: String = personas
        .iter()
        .filter_map(|j| {
            let o = j.outcome.as_ref()?;
            let id = str_of(o, "persona_id")?;
            Some(format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(str_of(o, "name").unwrap_or("—")),
                esc(id),
                match (str_of(o, "action"), o["adopted"].as_bool()) {
                    (Some("update_persona"), _) => "updated",
                    (_, Some(true)) => "adopted (found by name after an interrupted attempt)",
                    _ => "created",
                },
                esc(&j.new.trigger),
                esc(j.new.user_id.as_deref().unwrap_or("unknown")),
                time(j.created_ms)
            ))
        })
        .collect();
    let personas = if persona_rows.is_empty() {
        "<p>No personas yet.</p>".to_string()
    } else {
        format!("<table><tr><th>persona</th><th>Mavera id</th><th>what</th><th>trigger</th><th>user</th><th>when</th></tr>{persona_rows}</table>")
    };
    page(
        "Research briefs",
        &format!(
            "{articles}{older}<section><h2>Personas created or updated</h2>{personas}</section>"
        ),
    )
    .into_response()
}

pub async fn brief(State(state): State<AppState>, Path(id): Path<u64>) -> Response {
    match state.jobs.store.get(id).await {
        Ok(Some(job)) => match brief_article(&job, true) {
            Some(article) => page("Research brief", &article).into_response(),
            None => not_found(&format!("Job {id} has no research brief.")),
        },
        Ok(None) => not_found(&format!("There is no job {id}.")),
        Err(e) => unavailable(e),
    }
}

pub(super) fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        page("Not found", &format!("<p>{}</p>", esc(what))),
    )
        .into_response()
}

/// A form that replays one job (or every dead letter without `id`), with the CSRF token.
pub(super) fn replay_form(csrf: &str, id: Option<u64>, label: &str, back: &str) -> String {
    let id = id
        .map(|id| format!(r#"<input type="hidden" name="id" value="{id}">"#))
        .unwrap_or_default();
    format!(
        r#"<form method="post" action="/console/dead/replay"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="back" value="{}">{id}<button type="submit">{label}</button></form>"#,
        esc(back)
    )
}

pub async fn dead(State(state): State<AppState>) -> Response {
    let csrf = super::csrf_for(&state);
    let jobs = match state.jobs.store.list(Some(JobState::Dead), 200).await {
        Ok(jobs) => jobs,
        Err(e) => return unavailable(e),
    };
    let rows: String = jobs
        .iter()
        .map(|j| {
            format!(
                "<article><h2>Job {} · {}</h2><p class=meta>{} · event {} · user {} · {} · {}</p><p>{}</p>{}</article>",
                j.id,
                esc(&j.new.trigger),
                esc(j.new.action.as_str()),
                esc(&j.new.event_id),
                esc(j.new.user_id.as_deref().unwrap_or("unknown")),
                count(j.attempts, "attempt", "attempts"),
                time(j.created_ms),
                esc(j.last_error.as_deref().unwrap_or("")),
                replay_form(&csrf, Some(j.id), "Replay", "/console/dead")
            )
        })
        .collect();
    let body = if jobs.is_empty() {
        "<p>No dead letters.</p>".to_string()
    } else {
        format!(
            "{}{rows}",
            replay_form(&csrf, None, "Replay all", "/console/dead")
        )
    };
    page("Dead letters", &body).into_response()
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
        let svg = chart(&minutes);
        assert!(
            svg.contains("height=\"72\"") && svg.contains("height=\"48\""),
            "{svg}"
        );
        assert!(svg.contains("peak 10/min"), "{svg}");
    }
}

/// The page a locked-out client gets instead of the form.
pub fn locked_page(retry_after_secs: u64) -> Html<String> {
    bare_page(
        "Too many attempts",
        &format!(
            "<p role=alert>Too many wrong tokens came from your address. Try again in {retry_after_secs} s; \
             each lockout lasts twice as long as the one before.</p>"
        ),
    )
}

/// The audit trail, 50 lines a page. Rendered by a minijinja `.html` template, which escapes every value.
const AUDIT_TEMPLATE: &str = r#"{% if rows %}<table><tr><th>when</th><th>action</th><th>via</th><th>client</th><th>what</th></tr>
{% for r in rows %}<tr><td>{{ r.when }}</td><td><span class="badge {{ r.action }}">{{ r.action }}</span></td><td>{{ r.via }}</td><td><code>{{ r.client }}</code></td><td>{{ r.detail }}</td></tr>
{% endfor %}</table>{% if older %}<p class=pager><a href="/console/audit?before={{ older }}">Older →</a></p>{% endif %}
{% else %}<p>Nothing yet: sign-ins, replays, reloads and erasures are listed here.</p>{% endif %}"#;

const AUDIT_PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    before: Option<i64>,
}

pub async fn audit(State(state): State<AppState>, Query(q): Query<AuditQuery>) -> Response {
    let rows = match state.jobs.store.audit_page(q.before, AUDIT_PAGE).await {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let older = (rows.len() == AUDIT_PAGE).then(|| rows.last().map_or(0, |r| r.id));
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "when": time(r.at_ms),
                "action": r.action,
                "via": r.via,
                "client": r.client,
                "detail": r.detail,
            })
        })
        .collect();
    let mut env = minijinja::Environment::new();
    let body = env
        .add_template("audit.html", AUDIT_TEMPLATE)
        .and_then(|()| env.get_template("audit.html"))
        .and_then(|t| t.render(minijinja::context! { rows, older }));
    match body {
        Ok(body) => page("Audit trail", &body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "audit page template");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
