//! `POST /<source>`: one handler for every webhook provider. The provider verifies and parses; the answer,
//! its log line and its metrics are the same for all of them.

use std::{sync::Arc, time::SystemTime};

use axum::{
    extract::{rejection::BytesRejection, ConnectInfo, State},
    http::HeaderMap,
    Json,
};
use bytes::Bytes;

use super::{body_bytes, check_shape, hand_over, record_outcome, warn_unsigned};
use crate::{
    config::{Mode, Settings},
    error::ApiError,
    intake::Summary,
    limits::RemoteAddr,
    sources::{Authenticity, Provider, Source, SourceSettings},
    state::AppState,
};

/// What the settings give `source`'s provider: its secrets and its limits. A new provider's secret is a
/// setting (`config.rs`), handed to it here.
pub(crate) fn source_settings(settings: &Settings, source: Source) -> SourceSettings {
    let (secrets, max_body_bytes) = match source {
        Source::Segment => (&settings.segment.secrets, settings.segment.max_body_bytes),
        Source::CustomerIo => (
            &settings.customerio.webhook_secrets,
            settings.intake.max_body_bytes,
        ),
    };
    SourceSettings {
        secrets: secrets.clone(),
        unsigned_ok: settings.mode == Mode::Dev,
        max_body_bytes,
        max_batch_events: settings.intake.max_batch_events,
        timestamp_tolerance: settings.customerio.timestamp_tolerance,
    }
}

pub async fn receive(
    provider: &'static dyn Provider,
    settings: Arc<SourceSettings>,
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<RemoteAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Summary>, ApiError> {
    let source = provider.source();
    tracing::Span::current().record("source", tracing::field::display(source));
    let result = handle(provider, &settings, &state, &headers, body).await;
    record_outcome(&state, source, remote, &headers, &result);
    result.map(Json)
}

async fn handle(
    provider: &'static dyn Provider,
    settings: &SourceSettings,
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Summary, ApiError> {
    let source = provider.source();
    let body = body_bytes(body, settings.max_body_bytes)?;
    let verified = provider.verify(settings, headers, &body, SystemTime::now())?;
    let unsigned = verified.authenticity == Authenticity::UnsignedDevMode;
    if unsigned {
        warn_unsigned(source, provider.describe().secret_variable);
    }
    let signature = move || {
        if unsigned {
            format!(
                "not checked: dev mode and {} is not set",
                provider.describe().secret_variable
            )
        } else {
            provider.signature_note(headers)
        }
    };
    let parsed = provider.parse(settings, &verified, check_shape(state, &body))?;
    if let Some(first) = parsed.events.first() {
        tracing::Span::current().record("event_id", tracing::field::display(&first.id));
    }
    hand_over(
        state,
        source,
        parsed.events,
        parsed.unusable,
        headers,
        &signature,
    )
    .await
}
