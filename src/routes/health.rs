//! `GET /healthz` (alive), `GET /readyz` (able to take webhooks), `GET /metrics` (Prometheus). Counts and
//! states only: no secrets, no payloads.

use std::sync::atomic::Ordering;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    Json,
};
use serde_json::{json, Value};

use crate::{jobs::now_ms, metrics::UpstreamHealth, state::AppState};

pub async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let c = &state.intake.counters;
    let jobs = state.jobs.store.counts().await.ok();
    Json(json!({
        "status": "ok",
        "uptime_secs": state.started.elapsed().as_secs(),
        "webhooks": {
            "received": c.received.load(Ordering::Relaxed),
            "duplicates": c.duplicates.load(Ordering::Relaxed),
            "ignored": c.ignored.load(Ordering::Relaxed),
            "triggered": c.triggered.load(Ordering::Relaxed),
            "rejected": c.rejected.load(Ordering::Relaxed),
            "refused": c.refused.load(Ordering::Relaxed),
        },
        "jobs": jobs,
        "backlog": {
            "pending": state.intake.backlog.load(Ordering::Relaxed),
            "bound": state.intake.max_backlog,
            "accepting": state.intake.backlog.load(Ordering::Relaxed) <= state.intake.max_backlog,
        },
    }))
}

fn upstream(health: &UpstreamHealth) -> Value {
    let last = health.last_success_ms.load(Ordering::Relaxed);
    json!({
        "circuit": health.state(),
        "consecutive_failures": health.consecutive_failures.load(Ordering::Relaxed),
        "last_success_secs_ago": (last > 0).then(|| now_ms().saturating_sub(last) / 1000),
    })
}

/// 200 when the server can take webhooks now (the store takes writes, the backlog is under its bound);
/// 503 with the reasons otherwise. Upstream trouble is reported but does not make it unready: events are
/// queued durably and sent when Mavera is back.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    let store = match state.jobs.store.ping(now_ms()).await {
        Ok(()) => "writable".to_string(),
        Err(e) => {
            tracing::error!(error = %e, "readiness: the store does not take writes");
            reasons.push("the job store does not take writes".to_string());
            "failing".to_string()
        }
    };
    let pending = state.intake.backlog.load(Ordering::Relaxed);
    if pending > state.intake.max_backlog {
        reasons.push(format!(
            "backlog of {pending} pending jobs is over MAX_BACKLOG ({})",
            state.intake.max_backlog
        ));
    }
    let ready = reasons.is_empty();
    let body = json!({
        "ready": ready,
        "reasons": reasons,
        "store": store,
        "backlog": { "pending": pending, "bound": state.intake.max_backlog },
        "upstream": {
            "mavera": upstream(&state.metrics.mavera_health),
            "customerio": upstream(&state.metrics.customerio_health),
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
