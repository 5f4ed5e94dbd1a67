//! `/admin/...`: see and fix jobs over HTTP. Needs `ADMIN_TOKEN` (`Authorization: Bearer <token>`, compared
//! in constant time); with no token set these routes do not exist (404).

use axum::{
    extract::{Path, Query, Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    jobs::{Job, JobId, JobState, StoreError},
    state::AppState,
};

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

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.settings.admin_token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !token.matches(presented.trim()) {
        tracing::warn!(path = %request.uri().path(), "admin request refused: missing or wrong ADMIN_TOKEN");
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong admin token"})),
        )
            .into_response();
    }
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

async fn replay_one(State(state): State<AppState>, Path(id): Path<JobId>) -> Response {
    match state.jobs.replay(id).await {
        Ok(()) => {
            tracing::info!(job = id, "job replayed by an operator");
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
async fn replay_state(State(state): State<AppState>, Query(q): Query<ReplayQuery>) -> Response {
    let filter = match parse_state(Some(q.state.as_deref().unwrap_or("dead"))) {
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
    tracing::info!(count = replayed.len(), "jobs replayed by an operator");
    (StatusCode::ACCEPTED, Json(json!({ "replayed": replayed }))).into_response()
}

/// Reloads the trigger table (as SIGHUP does); a bad file keeps the running table and says why.
async fn reload(State(state): State<AppState>) -> Response {
    match state.reload_and_log() {
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
        Ok(removed) => Json(json!({ "user_id": user, "removed": removed })).into_response(),
        Err(e) => store_error(e),
    }
}

fn bad_request(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": why }))).into_response()
}
