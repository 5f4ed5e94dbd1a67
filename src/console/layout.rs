//! The console's frame: its templates (compiled into the binary, escaping by default), one stylesheet,
//! times and counts. Plain HTML from the server, no scripts.

use std::{
    sync::LazyLock,
    time::{Duration, UNIX_EPOCH},
};

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use minijinja::{AutoEscape, Environment, Value};
use pulldown_cmark_escape::FmtWriter;

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

/// `1 attempt`, `2 attempts`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Every console template, compiled once. `.html` names turn auto-escaping on, so a value printed with
/// `{{ }}` is always escaped; only HTML the server made safe itself (sanitised Markdown) is marked safe, in
/// Rust, with `Value::from_safe_string`.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // minijinja's own escape also writes `/` as `&#x2f;`, which garbles the paths and URLs shown as text;
    // pulldown-cmark's escapes `& < > "` (every attribute in the templates is double-quoted).
    env.set_formatter(|out, state, value| {
        if state.auto_escape() == AutoEscape::Html && !value.is_safe() {
            pulldown_cmark_escape::escape_html(FmtWriter(out), &value.to_string())?;
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    macro_rules! add {
        ($($name:literal),+) => {$(
            env.add_template($name, include_str!(concat!("templates/", $name)))
                .unwrap_or_else(|e| panic!("console template {}: {e:#}", $name));
        )+};
    }
    add!(
        "layout.html",
        "macros.html",
        "login.html",
        "message.html",
        "overview.html",
        "chart.html",
        "briefs.html",
        "brief.html",
        "dead.html",
        "events.html",
        "event.html",
        "triggers.html",
        "trigger_table.html",
        "trigger_form.html",
        "audit.html"
    );
    env
});

/// Renders a template to a string (a page, or a fragment such as the chart).
pub fn render_to_string(name: &str, context: Value) -> Result<String, minijinja::Error> {
    TEMPLATES.get_template(name)?.render(context)
}

/// A console page from its template, answered with `status`. Templates are compiled into the binary and
/// tested, so a failure here is a bug: it is logged and answered 500.
pub fn render(status: StatusCode, name: &str, context: Value) -> Response {
    match render_to_string(name, context) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %format!("{e:#}"), "console template");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
