//! `POST /segment`: Segment Webhooks destinations, one event or an Actions batch.

use axum::{
    extract::{rejection::BytesRejection, ConnectInfo, State},
    http::HeaderMap,
    Json,
};
use bytes::Bytes;

use super::{body_bytes, check_shape, hand_over, record_outcome, warn_unsigned};
use crate::{
    config::Mode,
    error::ApiError,
    intake::Summary,
    limits::RemoteAddr,
    sources::{segment, RejectReason, Source},
    state::AppState,
};

pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<RemoteAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Summary>, ApiError> {
    let result = handle(&state, &headers, body).await;
    record_outcome(&state, Source::Segment, remote, &headers, &result);
    result.map(Json)
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Summary, ApiError> {
    let settings = &state.settings;
    let body = body_bytes(body, settings.segment_max_body_bytes)?;
    let unsigned_ok = settings.mode == Mode::Dev;
    let verified = segment::verify(headers, &body, &settings.segment_secrets, unsigned_ok)?;
    let unsigned = verified.authenticity == segment::Authenticity::UnsignedDevMode;
    if unsigned {
        warn_unsigned(Source::Segment, "SEGMENT_SHARED_SECRET");
    }
    let signature = move || {
        if unsigned {
            "not checked: dev mode and SEGMENT_SHARED_SECRET is not set".to_string()
        } else {
            "verified: X-Signature, HMAC-SHA1 of the raw body".to_string()
        }
    };
    check_shape(state, &body)?;
    if verified.event_count() > settings.max_batch_events {
        return Err(ApiError::Rejected(RejectReason::BadRequest(format!(
            "a batch of {} events is over the limit of {} (MAX_BATCH_EVENTS)",
            verified.event_count(),
            settings.max_batch_events
        ))));
    }
    let parsed = segment::parse(&verified)?;
    hand_over(
        state,
        Source::Segment,
        parsed.events,
        parsed.unusable,
        headers,
        &signature,
    )
    .await
}
