//! The web console at `/console`: served by the binary itself, no front-end build. Off (404) without
//! `ADMIN_TOKEN`; a login form sets a session cookie (HttpOnly, Secure, SameSite=Strict) derived from the
//! token, and `Authorization: Bearer <token>` works too, for scripts.
//!
//! So far: the login, the overview and the research briefs (Markdown rendered, then sanitised: briefs are
//! third-party text). Events, dead letters and triggers pages are still to come.

mod pages;

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
        .route("/console/briefs", get(pages::briefs))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/console/login", get(login_form).post(login))
        .merge(guarded)
        .route_layer(axum::middleware::from_fn_with_state(state, console_enabled))
}

/// The session value: an HMAC of a fixed label under the admin token. Changing the token ends every session.
fn session_value(token: &Secret) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.expose().as_bytes()).expect("any key length");
    mac.update(b"mavera-triggers console session v1");
    hex::encode(mac.finalize().into_bytes())
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

async fn login_form() -> Html<String> {
    pages::login_page(None)
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(state): State<AppState>, Form(form): Form<Login>) -> Response {
    let Some(token) = &state.settings.admin_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !token.matches(form.token.trim()) {
        tracing::warn!("console login refused: wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            pages::login_page(Some("That is not the admin token.")),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/console; HttpOnly; Secure; SameSite=Strict; Max-Age=43200",
        session_value(token)
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}
