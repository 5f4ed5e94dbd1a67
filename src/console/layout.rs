//! The console's frame: one stylesheet, the navigation, escaping, times. Plain HTML from the server, no
//! scripts.

use std::time::{Duration, UNIX_EPOCH};

use axum::response::Html;

/// Escapes text for HTML (element content and quoted attributes).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a value for a URL's query string.
pub fn query_value(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Markdown from a brief, rendered and then sanitised (no scripts, no `javascript:` links, no event
/// handlers): briefs are third-party text.
pub fn render_markdown(markdown: &str) -> String {
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new(markdown));
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&html)
        .to_string()
}

/// A time as `2026-11-25 15:41:50 UTC`.
pub fn time(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// How long ago, roughly: `42s`, `3m`, `5h`, `2d`.
pub fn ago(ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A state as a coloured badge.
pub fn badge(state: &str) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", esc(state))
}

/// The console's one stylesheet, served from `/console/style.css` (the Content-Security-Policy allows no
/// inline style).
const CSS: &str = r#"body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
nav{background:#1d2330;padding:.6rem 1.2rem} nav a{color:#fff;margin-right:1.2rem;text-decoration:none}
nav b{color:#9fb3ff;margin-right:1.6rem}
main{max-width:72rem;margin:1.5rem auto;padding:0 1.2rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:1rem} .card{background:#fff;border-radius:8px;padding:.8rem 1.1rem;min-width:8.5rem;box-shadow:0 1px 2px #0002}
.card b{display:block;font-size:1.5rem} article,section{background:#fff;border-radius:8px;padding:1rem 1.4rem;margin:1rem 0;box-shadow:0 1px 2px #0002}
.meta{color:#5b6475;font-size:.9rem} input,select,textarea{font:inherit;padding:.35rem} button{font:inherit;padding:.35rem .9rem;cursor:pointer}
table{border-collapse:collapse;width:100%;background:#fff} th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{font-size:.85rem;color:#5b6475} pre{background:#0f1420;color:#e6e9ef;padding:.8rem;border-radius:6px;overflow:auto;max-height:28rem}
code{font-size:.9em} .badge{padding:.05rem .45rem;border-radius:4px;font-size:.8rem;background:#e3e6eb}
.badge.done,.badge.triggered,.badge.verified,.badge.closed{background:#d5f5e3} .badge.dead,.badge.open,.badge.failed{background:#fadbd8}
.badge.pending,.badge.running,.badge.held{background:#fdebd0} .badge.ignored,.badge.skipped{background:#eaecee}
form.filters{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end;margin-bottom:1rem} form.filters label{display:flex;flex-direction:column;font-size:.85rem}
p[role=alert]{background:#fadbd8;padding:.6rem .9rem;border-radius:6px} .warn{background:#fdebd0;padding:.6rem .9rem;border-radius:6px}
.pager{margin:1rem 0;display:flex;gap:1rem} svg text{font-size:10px;fill:#5b6475}
.signout{display:inline;float:right;margin:0} .signout button{background:none;border:1px solid #9fb3ff;color:#fff;padding:.1rem .6rem}
"#;

pub async fn stylesheet() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
}

const NAV: [(&str, &str); 6] = [
    ("/console", "Overview"),
    ("/console/events", "Events"),
    ("/console/briefs", "Briefs"),
    ("/console/dead", "Dead letters"),
    ("/console/triggers", "Triggers"),
    ("/console/audit", "Audit"),
];

/// Signs out: a form, so that no link prefetch or image can end a session.
const SIGN_OUT: &str = r#"<form class=signout method=post action="/console/logout"><button type=submit>Sign out</button></form>"#;

/// `1 attempt`, `2 attempts`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A console page with the navigation.
pub fn page(title: &str, body: &str) -> Html<String> {
    let nav: String = NAV
        .iter()
        .map(|(href, label)| format!("<a href=\"{href}\">{label}</a>"))
        .chain([SIGN_OUT.to_string()])
        .collect();
    frame(title, &nav, body)
}

/// A page without the navigation (the sign-in form: its links would only lead back to it).
pub fn bare_page(title: &str, body: &str) -> Html<String> {
    frame(title, "", body)
}

fn frame(title: &str, nav: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · mavera-triggers</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/console/style.css"></head><body><nav><b>mavera-triggers</b>{nav}</nav>
<main><h1>{title}</h1>{body}</main></body></html>"#,
        title = esc(title)
    ))
}
