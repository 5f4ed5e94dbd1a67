//! `POST /customerio`: Customer.io reporting webhooks. Anything genuine gets a 2xx, fast: Customer.io holds
//! back every later webhook for an hour after a 4xx.

use std::time::SystemTime;

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
    sources::{
        customerio::{self, Parsed},
        segment::Authenticity,
        Source,
    },
    state::AppState,
};

pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<RemoteAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Summary>, ApiError> {
    let result = handle(&state, &headers, body).await;
    record_outcome(&state, Source::CustomerIo, remote, &headers, &result);
    result.map(Json)
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Summary, ApiError> {
    let settings = &state.settings;
    let body = body_bytes(body, settings.max_body_bytes)?;
    let verified = customerio::verify(
        headers,
        &body,
        &settings.cio_webhook_secrets,
        settings.mode == Mode::Dev,
        settings.cio_timestamp_tolerance,
        SystemTime::now(),
    )?;
    let unsigned = verified.authenticity == Authenticity::UnsignedDevMode;
    if unsigned {
        warn_unsigned(Source::CustomerIo, "CIO_WEBHOOK_SECRET");
    }
    let signature = move || {
        if unsigned {
            return "not checked: dev mode and CIO_WEBHOOK_SECRET is not set".to_string();
        }
        let stamp = headers
            .get(customerio::TIMESTAMP_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim();
        format!("verified: X-CIO-Signature, HMAC-SHA256 of v0:{stamp}:<body>")
    };
    // A genuine body is never refused for its content (a 4xx stalls Customer.io's queue for an hour): one too
    // deep or too long to read, not JSON, or not an event we know is acknowledged and kept as unprocessable.
    let parsed = match check_shape(state, &body) {
        Ok(()) => customerio::parse(&verified),
        Err(e) => customerio::unprocessable(&body, e.reason()),
    };
    let (events, unusable) = match parsed {
        Parsed::Event(event) => (vec![*event], Vec::new()),
        Parsed::Unprocessable(part) => (Vec::new(), vec![*part]),
    };
    hand_over(
        state,
        Source::CustomerIo,
        events,
        unusable,
        headers,
        &signature,
    )
    .await
}
