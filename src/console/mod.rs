//! The web console at `/console`: served by the binary itself, no front-end build. Off (404) without
//! `ADMIN_TOKEN`; a login form sets a session cookie (HttpOnly, Secure, SameSite=Strict) derived from the
//! token, and `Authorization: Bearer <token>` works too, for scripts.
//!
//! Pages: the overview (with a chart of the last hour), events (filtered, paged by key) and each event's
//! headers, body, signature check and jobs; research briefs (Markdown rendered, then sanitised: briefs are
//! third-party text) and personas; dead letters with replay; the trigger table with a dry-run test form.
//! Every form carries a CSRF token; pages are server-rendered HTML without scripts.

mod events;
mod layout;
mod pages;
mod triggers;

pub use layout::render_markdown;

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
    Form, Router,
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::{config::Secret, state::AppState};

const COOKIE: &str = "mt_console";

pub fn routes(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/console", get(pages::overview))
        .route("/console/events", get(events::list))
        .route("/console/events/{id}", get(events::detail))
        .route("/console/briefs", get(pages::briefs))
        .route("/console/briefs/{id}", get(pages::brief))
        .route("/console/dead", get(pages::dead))
        .route("/console/dead/replay", axum::routing::post(replay))
        .route("/console/triggers", get(triggers::show))
        .route(
            "/console/triggers/test",
            axum::routing::post(triggers::test),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/console/login", get(login_form).post(login))
        .merge(guarded)
        .route_layer(axum::middleware::from_fn_with_state(state, console_enabled))
}

fn derived(token: &Secret, label: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.expose().as_bytes()).expect("any key length");
    mac.update(label);
    hex::encode(mac.finalize().into_bytes())
}

/// The session value: an HMAC of a fixed label under the admin token. Changing the token ends every session.
fn session_value(token: &Secret) -> String {
    derived(token, b"mavera-triggers console session v1")
}

/// The token every console form carries: a cross-site form cannot know it (and SameSite=Strict keeps the
/// cookie off cross-site requests as well).
pub(crate) fn csrf_value(token: &Secret) -> String {
    derived(token, b"mavera-triggers console csrf v1")
}

/// The CSRF token of this server's forms.
fn csrf_for(state: &AppState) -> String {
    state
        .settings
        .admin_token
        .as_ref()
        .map(csrf_value)
        .unwrap_or_default()
}

fn csrf_ok(state: &AppState, presented: &str) -> bool {
    state
        .settings
        .admin_token
        .as_ref()
        .is_some_and(|token| Secret::new(csrf_value(token)).matches(presented))
}

fn csrf_refused() -> Response {
    tracing::warn!("console form refused: missing or wrong CSRF token");
    (
        StatusCode::FORBIDDEN,
        "missing or wrong form token: reload the page",
    )
        .into_response()
}

fn cookie_session(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

async fn console_enabled(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.settings.admin_token.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    next.run(request).await
}

async fn require_session(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.settings.admin_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|presented| token.matches(presented.trim()));
    let cookie = cookie_session(headers)
        .is_some_and(|value| Secret::new(session_value(token)).matches(&value));
    if bearer || cookie {
        next.run(request).await
    } else {
        Redirect::to("/console/login").into_response()
    }
}

async fn login_form(headers: HeaderMap) -> Html<String> {
    pages::login_page(None, insecure_host(&headers).as_deref())
}

/// The host, when the console was reached over plain http on a name browsers do not treat as secure
/// (anything but loopback): they drop a `Secure` cookie there.
fn insecure_host(headers: &HeaderMap) -> Option<String> {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!https && !loopback).then(|| host.to_string())
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Response {
    let Some(token) = &state.settings.admin_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !token.matches(form.token.trim()) {
        tracing::warn!("console login refused: wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            pages::login_page(
                Some("That is not the admin token."),
                insecure_host(&headers).as_deref(),
            ),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/console; HttpOnly; Secure; SameSite=Strict; Max-Age=43200",
        session_value(token)
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str, proto: Option<&str>) -> Option<String> {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, value.parse().unwrap());
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", p.parse().unwrap());
        }
        insecure_host(&h)
    }

    #[test]
    fn plain_http_is_flagged_except_on_loopback_or_behind_https() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "app.localhost",
            "127.0.0.2",
        ] {
            assert_eq!(host(ok, None), None, "{ok}");
        }
        assert_eq!(
            host("192.168.1.20:8080", None).as_deref(),
            Some("192.168.1.20:8080")
        );
        assert_eq!(
            host("triggers.internal", None).as_deref(),
            Some("triggers.internal")
        );
        assert_eq!(host("abc.ngrok.app", Some("https")), None);
    }
}

#[derive(Deserialize)]
struct Replay {
    csrf: String,
    /// One job, or every dead letter when absent.
    id: Option<u64>,
    /// The console page to go back to.
    back: Option<String>,
}

/// Replays one job or every dead letter, through the same durable path as `jobs replay`.
async fn replay(State(state): State<AppState>, Form(form): Form<Replay>) -> Response {
    if !csrf_ok(&state, &form.csrf) {
        return csrf_refused();
    }
    let ids = match form.id {
        Some(id) => vec![id],
        None => match state
            .jobs
            .store
            .list(Some(crate::jobs::JobState::Dead), 100_000)
            .await
        {
            Ok(jobs) => jobs.iter().map(|j| j.id).collect(),
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        },
    };
    for id in &ids {
        if state.jobs.replay(*id).await.is_err() {
            return pages::not_found(&format!("There is no job {id}."));
        }
    }
    tracing::info!(count = ids.len(), "jobs replayed from the console");
    // Only back to a console page: never an open redirect.
    let back = form
        .back
        .filter(|b| b.starts_with("/console/") && !b.contains("//") && !b.contains('\\'))
        .unwrap_or_else(|| "/console/dead".into());
    Redirect::to(&back).into_response()
}
