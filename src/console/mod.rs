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
    extract::{ConnectInfo, Query, Request, State},
    http::{header, HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Form, Router,
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::{
    access::{
        self,
        session::{self, SessionCheck},
    },
    jobs::audit::{self, AuditAction, Via},
    limits::RemoteAddr,
    secret::Secret,
    state::AppState,
};

pub fn routes(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/console", get(pages::overview))
        .route("/console/events", get(events::list))
        .route("/console/events/{id}", get(events::detail))
        .route("/console/briefs", get(pages::briefs))
        .route("/console/briefs/{id}", get(pages::brief))
        .route("/console/dead", get(pages::dead))
        .route("/console/dead/replay", axum::routing::post(replay))
        .route("/console/audit", get(pages::audit))
        .route("/console/logout", axum::routing::post(logout))
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
        .route("/console/style.css", get(layout::stylesheet))
        .merge(guarded)
        .route_layer(axum::middleware::from_fn_with_state(state, console_enabled))
}

/// What every answer under `/console` carries, its 404s included: no scripts and no framing at all (the
/// pages have none), no sniffing, no referrer to follow a link out of a brief. Layered on the whole router.
pub async fn protective_headers(request: Request, next: Next) -> Response {
    let console = request.uri().path().starts_with("/console");
    let mut response = next.run(request).await;
    if !console {
        return response;
    }
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        response
            .headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// Scripts: none. Styles: the console's own stylesheet. Forms: back to this server. Framing: nobody.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn derived(token: &Secret, label: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.expose().as_bytes()).expect("any key length");
    mac.update(label);
    hex::encode(mac.finalize().into_bytes())
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
        .access
        .admin_token
        .as_ref()
        .map(csrf_value)
        .unwrap_or_default()
}

fn csrf_ok(state: &AppState, presented: &str) -> bool {
    state
        .settings
        .access
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
        .find(|(name, _)| *name == session::COOKIE)
        .map(|(_, value)| value.to_string())
}

async fn console_enabled(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.settings.access.admin_token.is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    next.run(request).await
}

/// The peer address axum recorded for this connection, if any.
fn peer(request: &Request) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<RemoteAddr>>()
        .map(|c| c.0 .0)
}

fn now_secs() -> u64 {
    crate::jobs::now_ms() / 1000
}

/// 429 for a client that guessed too often: the page says how long to wait.
fn locked_out(wait: std::time::Duration) -> Response {
    let secs = access::retry_after_secs(wait);
    (
        [(header::RETRY_AFTER, secs.to_string())],
        pages::locked_page(StatusCode::TOO_MANY_REQUESTS, secs),
    )
        .into_response()
}

/// Lets through a valid session cookie (renewing it while used) or the admin token as Bearer. A wrong
/// Bearer token counts against the client; a locked-out client gets 429 unless its session is valid.
async fn require_session(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.settings.access.admin_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let client = state.door.client(peer(&request), request.headers());
    let ttl = state.settings.access.session_ttl.as_secs();
    let now = now_secs();
    let session =
        cookie_session(request.headers()).map(|value| session::check(token, &value, now, ttl));
    if let Some(SessionCheck::Valid { renew }) = session {
        let mut response = next.run(request).await;
        if renew {
            if let Ok(v) = session::set_cookie(token, now, ttl).parse() {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        return response;
    }
    if let Some(wait) = state.door.locked(client) {
        return locked_out(wait);
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer {
        Some(presented) if token.matches(presented) => {
            state.door.succeeded(client);
            next.run(request).await
        }
        Some(_) => {
            let path = request.uri().path().to_string();
            tracing::warn!(client = %client, path, "console request refused: wrong Bearer token");
            wrong_token(&state, client, format!("wrong Bearer token for {path}")).await;
            Redirect::to("/console/login").into_response()
        }
        None if session == Some(SessionCheck::Expired) => (
            [(header::SET_COOKIE, session::clear_cookie())],
            Redirect::to("/console/login?expired=1"),
        )
            .into_response(),
        None => Redirect::to("/console/login").into_response(),
    }
}

/// A wrong token from `client`: it counts toward a lockout and goes into the audit trail (without the token).
async fn wrong_token(state: &AppState, client: std::net::IpAddr, detail: String) {
    state.door.failed(client);
    state
        .audit(
            AuditAction::SignInFailed,
            Via::Console,
            &client.to_string(),
            detail,
        )
        .await;
}

#[derive(Deserialize)]
struct LoginQuery {
    expired: Option<String>,
}

async fn login_form(
    State(state): State<AppState>,
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let client = state.door.client(Some(peer), &headers);
    if let Some(wait) = state.door.locked(client) {
        return locked_out(wait);
    }
    let note = q.expired.is_some().then(|| {
        format!(
            "Your session ended: sessions last {} after their last use. Sign in again.",
            humantime::format_duration(state.settings.access.session_ttl)
        )
    });
    pages::login_page(
        StatusCode::OK,
        note.as_deref(),
        insecure_host(&headers).as_deref(),
    )
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
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Response {
    let Some(token) = &state.settings.access.admin_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let client = state.door.client(Some(peer), &headers);
    if let Some(wait) = state.door.locked(client) {
        return locked_out(wait);
    }
    if !token.matches(form.token.trim()) {
        tracing::warn!(client = %client, "console login refused: wrong token");
        wrong_token(&state, client, "wrong token on the sign-in form".into()).await;
        return pages::login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
            insecure_host(&headers).as_deref(),
        );
    }
    state.door.succeeded(client);
    state
        .audit(
            AuditAction::SignIn,
            Via::Console,
            &client.to_string(),
            format!(
                "session for {}",
                humantime::format_duration(state.settings.access.session_ttl)
            ),
        )
        .await;
    let cookie = session::set_cookie(
        token,
        now_secs(),
        state.settings.access.session_ttl.as_secs(),
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}

/// Ends the session in this browser. It needs a valid session like every console page, and the cookie is
/// `SameSite=Strict`, so another site cannot sign anybody out.
async fn logout(
    State(state): State<AppState>,
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    headers: HeaderMap,
) -> Response {
    let client = state.door.client(Some(peer), &headers);
    state
        .audit(
            AuditAction::SignOut,
            Via::Console,
            &client.to_string(),
            String::new(),
        )
        .await;
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/console/login"),
    )
        .into_response()
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
async fn replay(
    State(state): State<AppState>,
    ConnectInfo(RemoteAddr(peer)): ConnectInfo<RemoteAddr>,
    headers: HeaderMap,
    Form(form): Form<Replay>,
) -> Response {
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
    let (action, detail) = match form.id {
        Some(id) => (AuditAction::Replay, format!("job {id}")),
        None => (AuditAction::ReplayAll, audit::replayed_detail("dead", &ids)),
    };
    let client = state.door.client(Some(peer), &headers);
    state
        .audit(action, Via::Console, &client.to_string(), detail)
        .await;
    // Only back to a console page: never an open redirect.
    let back = form
        .back
        .filter(|b| b.starts_with("/console/") && !b.contains("//") && !b.contains('\\'))
        .unwrap_or_else(|| "/console/dead".into());
    Redirect::to(&back).into_response()
}
