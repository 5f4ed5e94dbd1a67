//! `GET /healthz`: the process is up. Counts only: no secrets, no payloads.

use std::sync::atomic::Ordering;

use axum::{extract::State, Json};
use serde_json::{json, Value};

use crate::state::AppState;

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
        },
        "jobs": jobs,
        "backlog": {
            "pending": state.intake.backlog.load(Ordering::Relaxed),
            "bound": state.intake.max_backlog,
            "accepting": state.intake.backlog.load(Ordering::Relaxed) <= state.intake.max_backlog,
        },
    }))
}
