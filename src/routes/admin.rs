//! `/admin/...`: see and fix jobs over HTTP. Needs `ADMIN_TOKEN` (`Authorization: Bearer <token>`, compared
//! in constant time); with no token set these routes do not exist (404).

use std::net::IpAddr;

use axum::{
    extract::{ConnectInfo, Path, Query, Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    access,
    jobs::{
        audit::{AuditAction, Via},
        Job, JobId, JobState, StoreError,
    },
    limits::RemoteAddr,
    state::AppState,
};

/// What a reload did, for the audit trail.
pub fn reload_detail(result: &Result<usize, String>) -> String {
    match result {
        Ok(count) => format!("{count} triggers loaded"),
        Err(why) => format!("refused, the running table stays: {why}"),
    }
}

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/jobs", get(list))
        .route("/admin/jobs/replay", post(replay_state))
        .route("/admin/jobs/{id}", get(show))
        .route("/admin/jobs/{id}/replay", post(replay_one))
        .route("/admin/reload", post(reload))
        .route("/admin/forget", post(forget))
        .route_layer(axum::middleware::from_fn_with_state(state, require_token))
}

/// The client an admin request came from (after trusted proxies), as handlers record it.
#[derive(Clone, Copy)]
struct Client(IpAddr);

/// 429 with `Retry-After` for a client locked out after too many wrong tokens.
fn locked_out(wait: std::time::Duration) -> Response {
    let secs = access::retry_after_secs(wait);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        Json(json!({"error": format!("too many wrong admin tokens from this address: try again in {secs} s")})),
    )
        .into_response()
}

async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.settings.access.admin_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<RemoteAddr>>()
        .map(|c| c.0 .0);
    let client = state.door.client(peer, request.headers());
    if let Some(wait) = state.door.locked(client) {
        return locked_out(wait);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !token.matches(presented.trim()) {
        let path = request.uri().path().to_string();
        tracing::warn!(client = %client, path, "admin request refused: missing or wrong ADMIN_TOKEN");
        state.door.failed(client);
        state
            .audit(
                AuditAction::SignInFailed,
                Via::Api,
                &client.to_string(),
                format!("missing or wrong Bearer token for {path}"),
            )
            .await;
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong admin token"})),
        )
            .into_response();
    }
    state.door.succeeded(client);
    request.extensions_mut().insert(Client(client));
    next.run(request).await
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

fn parse_state(s: Option<&str>) -> Result<Option<JobState>, Box<Response>> {
    s.map(str::parse::<JobState>).transpose().map_err(|why| {
        Box::new((StatusCode::BAD_REQUEST, Json(json!({ "error": why }))).into_response())
    })
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(id) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no job {id}")})),
        )
            .into_response(),
        other => {
            tracing::error!(error = %other, "admin: store error");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "the job store is unavailable"})),
            )
                .into_response()
        }
    }
}

/// One line per job: what an operator scans for.
pub fn summary(job: &Job) -> Value {
    json!({
        "id": job.id,
        "state": job.state,
        "trigger": job.new.trigger,
        "action": job.new.action,
        "source": job.new.source,
        "event_id": job.new.event_id,
        "user_id": job.new.user_id,
        "attempts": job.attempts,
        "created_ms": job.created_ms,
        "last_error": job.last_error,
    })
}

async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let filter = match parse_state(q.state.as_deref()) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    match state
        .jobs
        .store
        .list(filter, q.limit.unwrap_or(100).min(1000))
        .await
    {
        Ok(jobs) => {
            Json(json!({ "jobs": jobs.iter().map(summary).collect::<Vec<_>>() })).into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn show(State(state): State<AppState>, Path(id): Path<JobId>) -> Response {
    match state.jobs.store.get(id).await {
        Ok(Some(job)) => Json(job).into_response(),
        Ok(None) => store_error(StoreError::NotFound(id)),
        Err(e) => store_error(e),
    }
}

async fn replay_one(
    State(state): State<AppState>,
    Extension(Client(client)): Extension<Client>,
    Path(id): Path<JobId>,
) -> Response {
    match state.jobs.replay(id).await {
        Ok(()) => {
            state
                .audit(
                    AuditAction::Replay,
                    Via::Api,
                    &client.to_string(),
                    format!("job {id}"),
                )
                .await;
            (StatusCode::ACCEPTED, Json(json!({ "replayed": [id] }))).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct ReplayQuery {
    state: Option<String>,
}

/// Replays every job in a state (default `dead`).
async fn replay_state(
    State(state): State<AppState>,
    Extension(Client(client)): Extension<Client>,
    Query(q): Query<ReplayQuery>,
) -> Response {
    let named = q.state.as_deref().unwrap_or("dead");
    let filter = match parse_state(Some(named)) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let jobs = match state.jobs.store.list(filter, 100_000).await {
        Ok(j) => j,
        Err(e) => return store_error(e),
    };
    let mut replayed = Vec::new();
    for job in jobs {
        if let Err(e) = state.jobs.replay(job.id).await {
            return store_error(e);
        }
        replayed.push(job.id);
    }
    state
        .audit(
            AuditAction::ReplayAll,
            Via::Api,
            &client.to_string(),
            crate::jobs::audit::replayed_detail(named, &replayed),
        )
        .await;
    (StatusCode::ACCEPTED, Json(json!({ "replayed": replayed }))).into_response()
}

/// Reloads the trigger table (as SIGHUP does); a bad file keeps the running table and says why.
async fn reload(
    State(state): State<AppState>,
    Extension(Client(client)): Extension<Client>,
) -> Response {
    let result = state.reload_and_log();
    state
        .audit(
            AuditAction::Reload,
            Via::Api,
            &client.to_string(),
            reload_detail(&result),
        )
        .await;
    match result {
        Ok(count) => Json(json!({ "reloaded": true, "triggers": count })).into_response(),
        Err(why) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "reloaded": false, "error": why })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetRequest {
    user_id: String,
}

/// Erases one person: everything the store holds about `user_id`. Idempotent: a second call removes nothing.
async fn forget(
    State(state): State<AppState>,
    Extension(Client(client)): Extension<Client>,
    body: Result<Json<ForgetRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let user = match body {
        Ok(Json(ForgetRequest { user_id })) if !user_id.trim().is_empty() => user_id,
        Ok(_) => return bad_request("`user_id` is empty"),
        Err(e) => {
            return bad_request(&format!(
                "expected {{\"user_id\": \"…\"}}: {}",
                e.body_text()
            ))
        }
    };
    match crate::jobs::upkeep::forget(state.jobs.store.upkeep().as_ref(), &user).await {
        Ok(removed) => {
            // The trail names the erasure, not the person: a fingerprint tells two requests apart.
            state
                .audit(
                    AuditAction::Forget,
                    Via::Api,
                    &client.to_string(),
                    format!(
                        "user {}: {} events, {} jobs, {} personas, {} cooldowns, {} digest events",
                        crate::config::Secret::new(&user).fingerprint(),
                        removed.events,
                        removed.jobs,
                        removed.personas,
                        removed.cooldowns,
                        removed.digest_events
                    ),
                )
                .await;
            Json(json!({ "user_id": user, "removed": removed })).into_response()
        }
        Err(e) => store_error(e),
    }
}

fn bad_request(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": why }))).into_response()
}
