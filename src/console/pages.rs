//! The console's pages: plain HTML from the server, escaped where it shows data, no scripts.

use axum::{extract::State, response::Html};

use crate::{
    jobs::{Job, JobState},
    state::AppState,
};

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Markdown from a brief, rendered and then sanitised (no scripts, no `javascript:` links, no event handlers).
pub fn render_brief(markdown: &str) -> String {
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new(markdown));
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&html)
        .to_string()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · mavera-triggers</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}}
nav{{background:#1d2330;padding:.6rem 1.2rem}} nav a{{color:#fff;margin-right:1.2rem;text-decoration:none}}
main{{max-width:60rem;margin:1.5rem auto;padding:0 1.2rem}}
.cards{{display:flex;gap:1rem;flex-wrap:wrap}} .card{{background:#fff;border-radius:8px;padding:1rem 1.2rem;min-width:9rem;box-shadow:0 1px 2px #0002}}
.card b{{display:block;font-size:1.6rem}} article{{background:#fff;border-radius:8px;padding:1rem 1.4rem;margin:1rem 0;box-shadow:0 1px 2px #0002}}
.meta{{color:#5b6475;font-size:.9rem}} input{{font:inherit;padding:.4rem}} button{{font:inherit;padding:.4rem .9rem}}
</style></head><body><nav><a href="/console">Overview</a><a href="/console/briefs">Briefs</a><a href="/console/dead">Dead letters</a></nav>
<main><h1>{title}</h1>{body}</main></body></html>"#,
        title = esc(title)
    ))
}

pub fn login_page(error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p role=alert>{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "Sign in",
        &format!(
            r#"{error}<form method="post" action="/console/login"><label>Admin token
<input type="password" name="token" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form>"#
        ),
    )
}

pub async fn overview(State(state): State<AppState>) -> Html<String> {
    let counts = state.jobs.store.counts().await.unwrap_or_default();
    let c = &state.intake.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let card =
        |label: &str, value: u64| format!("<div class=card><b>{value}</b>{}</div>", esc(label));
    let cards = [
        card("webhooks received", load(&c.received)),
        card("duplicates", load(&c.duplicates)),
        card("rejected", load(&c.rejected)),
        card("jobs pending", counts.pending),
        card("jobs done", counts.done),
        card("dead letters", counts.dead),
        card("held by cost guards", counts.held),
    ]
    .join("");
    page("Overview", &format!("<div class=cards>{cards}</div>"))
}

fn brief_article(job: &Job) -> Option<String> {
    let outcome = job.outcome.as_ref()?;
    let brief = outcome["brief"].as_str()?;
    let title = outcome["title"].as_str().unwrap_or(&job.new.trigger);
    let persona = outcome["persona_type"].as_str().unwrap_or("—");
    let who = outcome["customer_id"]
        .as_str()
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
                render_brief(&format!("[{}]({})", title.replace(['[', ']'], ""), url))
            )
        })
        .collect();
    Some(format!(
        "<article><h2>{}</h2><p class=meta>job {} · trigger {} · about {} · persona type {}</p>{}<ul>{sources}</ul></article>",
        esc(title),
        job.id,
        esc(&job.new.trigger),
        esc(who),
        esc(persona),
        render_brief(brief)
    ))
}

pub async fn briefs(State(state): State<AppState>) -> Html<String> {
    let jobs = state
        .jobs
        .store
        .list(Some(JobState::Done), 200)
        .await
        .unwrap_or_default();
    let articles: String = jobs
        .iter()
        .filter(|j| j.new.action == "research")
        .filter_map(brief_article)
        .collect();
    let body = if articles.is_empty() {
        "<p>No research briefs yet.</p>".to_string()
    } else {
        articles
    };
    page("Research briefs", &body)
}

pub async fn dead(State(state): State<AppState>) -> Html<String> {
    let csrf = state
        .settings
        .admin_token
        .as_ref()
        .map(super::csrf_value)
        .unwrap_or_default();
    let jobs = state
        .jobs
        .store
        .list(Some(JobState::Dead), 200)
        .await
        .unwrap_or_default();
    let form = |id: Option<u64>, label: &str| {
        let id = id
            .map(|id| format!(r#"<input type="hidden" name="id" value="{id}">"#))
            .unwrap_or_default();
        format!(
            r#"<form method="post" action="/console/dead/replay"><input type="hidden" name="csrf" value="{csrf}">{id}<button type="submit">{label}</button></form>"#
        )
    };
    let rows: String = jobs
        .iter()
        .map(|j| {
            format!(
                "<article><h2>Job {} · {}</h2><p class=meta>{} · event {} · user {} · {} attempts</p><p>{}</p>{}</article>",
                j.id,
                esc(&j.new.trigger),
                esc(&j.new.action),
                esc(&j.new.event_id),
                esc(j.new.user_id.as_deref().unwrap_or("unknown")),
                j.attempts,
                esc(j.last_error.as_deref().unwrap_or("")),
                form(Some(j.id), "Replay")
            )
        })
        .collect();
    let body = if jobs.is_empty() {
        "<p>No dead letters.</p>".to_string()
    } else {
        format!("{}{rows}", form(None, "Replay all"))
    };
    page("Dead letters", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_brief_with_script_or_javascript_links_renders_inert() {
        let html = render_brief(
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
}
