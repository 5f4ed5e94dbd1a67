//! HTTP routes: one file per endpoint group, and the bits they share.

pub mod admin;
pub mod health;
pub mod webhook;

use axum::{
    extract::{rejection::BytesRejection, ConnectInfo, DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use std::sync::Arc;
use tower_http::{
    timeout::TimeoutLayer,
    trace::{DefaultOnFailure, TraceLayer},
};
use tracing::{field, Level, Span};

use crate::{
    error::ApiError,
    intake::{IntakeError, Summary},
    jobs::events::{masked_headers, RequestMeta},
    limits::{self, BodyBudget, RemoteAddr},
    sources::{RejectReason, Source},
    state::AppState,
};

pub fn router(state: AppState) -> Router {
    let limit = state.settings.intake.max_body_bytes;
    let header_limit = state.settings.server.max_header_bytes;
    let deadline = state.settings.server.request_timeout;
    let budget = BodyBudget::new(state.settings.intake.max_body_bytes_in_flight);
    let webhooks = Source::all().iter().fold(Router::new(), |router, &source| {
        let settings = Arc::new(webhook::source_settings(&state.settings, source));
        let max_body = settings.max_body_bytes;
        let (state, budget) = (state.clone(), budget.clone());
        let admit = axum::middleware::from_fn(move |request: Request, next: Next| {
            admit_body(
                state.clone(),
                budget.clone(),
                source,
                max_body,
                request,
                next,
            )
        });
        let provider = source.provider();
        let receive = move |state, remote, headers, body| {
            webhook::receive(provider, settings.clone(), state, remote, headers, body)
        };
        router.route(
            &format!("/{source}"),
            post(receive)
                .layer(DefaultBodyLimit::max(max_body))
                .layer(admit),
        )
    });
    webhooks
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(admin::routes(state.clone()))
        .merge(crate::console::routes(state.clone()))
        .layer(axum::middleware::from_fn(
            crate::console::protective_headers,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            deadline,
        ))
        .layer(axum::middleware::from_fn(move |request, next| {
            limits::limit_header_bytes(header_limit, request, next)
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// One span per request: its method and matched route; a webhook handler records its source and (once
/// parsed) the first event's id, so every line logged while answering it says which request it is.
fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        source = field::Empty,
        event_id = field::Empty,
    )
}

/// Lets a webhook request in only when its body fits in the [`BodyBudget`] now; else 503 + `Retry-After`,
/// before a byte of the body is read. The room is held until the answer is sent.
async fn admit_body(
    state: AppState,
    budget: BodyBudget,
    source: Source,
    max_body: usize,
    request: Request,
    next: Next,
) -> Response {
    let Some(_room) = budget.try_take(request.headers(), max_body) else {
        let refused = ApiError::BodiesInFlight {
            budget: budget.total(),
        };
        let refused: Result<Summary, ApiError> = Err(refused);
        if let Some(ConnectInfo(remote)) = request.extensions().get::<ConnectInfo<RemoteAddr>>() {
            record_outcome(&state, source, *remote, request.headers(), &refused);
        }
        return refused.map(axum::Json).into_response();
    };
    next.run(request).await
}

/// The raw body, or 413 past the limit.
pub(crate) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::UnreadableBody
        }
    })
}

/// Hands events to the intake; a store that cannot take them is a 503 the sender will retry.
pub(crate) async fn hand_over(
    state: &AppState,
    source: Source,
    events: Vec<crate::sources::Event>,
    unusable: Vec<crate::sources::Unusable>,
    headers: &HeaderMap,
    signature: &(dyn Fn() -> String + Sync),
) -> Result<Summary, ApiError> {
    let meta = || RequestMeta {
        headers: masked_headers(headers).into(),
        signature: signature().into(),
    };
    state.intake.accept(source, events, unusable, &meta).await.map_err(|e| {
        match &e {
            IntakeError::Store(_) => tracing::error!(source = %source, error = %e, "cannot record events: answering 503 so the sender retries"),
            IntakeError::Backlog { .. } => tracing::warn!(source = %source, error = %e, "backpressure: answering 503 so the sender retries later"),
        }
        ApiError::Unavailable {
            retry_after_secs: match e {
                IntakeError::Store(_) => 5,
                IntakeError::Backlog { .. } => 30,
            },
        }
    })
}

/// Logs every answer, and counts refusals by source and reason; a refusal's log line carries the source,
/// the reason and the remote address (and the forwarding proxy's view).
pub(crate) fn record_outcome(
    state: &AppState,
    source: Source,
    remote: RemoteAddr,
    headers: &HeaderMap,
    result: &Result<Summary, ApiError>,
) {
    if let Err(e) = result {
        state
            .intake
            .counters
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state
            .metrics
            .webhooks_rejected
            .get_or_create(&crate::metrics::RejectLabel {
                source: source.to_string(),
                reason: e.kind().to_string(),
            })
            .inc();
    }
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    match result {
        Ok(s) => {
            tracing::info!(source = %source, remote = %remote, received = s.received, duplicates = s.duplicates, triggered = s.triggered, refused = s.refused, "webhook accepted")
        }
        Err(e) => {
            tracing::warn!(source = %source, remote = %remote, forwarded_for = forwarded, status = e.status().as_u16(), reason = %e.reason(), "webhook rejected")
        }
    }
}

/// Refuses JSON too deep or with arrays too long, before any parser recurses into it.
pub(crate) fn check_shape(state: &AppState, body: &[u8]) -> Result<(), RejectReason> {
    limits::check_json_shape(
        body,
        state.settings.intake.max_json_depth,
        state.settings.intake.max_array_items,
    )
}

/// The loud, per-request warning of `dev` mode.
pub(crate) fn warn_unsigned(source: Source, variable: &str) {
    tracing::warn!(source = %source, "UNSIGNED request accepted: dev mode and {variable} is not set — `serve` would answer 401");
}
