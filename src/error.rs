//! The one error type at the HTTP edge, and the answer each variant gives. Nothing internal reaches a caller.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::sources::RejectReason;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Rejected(#[from] RejectReason),
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body could not be read")]
    UnreadableBody,
    /// The store cannot take the event now: the sender should retry.
    #[error("temporarily unavailable")]
    Unavailable { retry_after_secs: u64 },
    /// Too many body bytes are arriving at once: the sender should retry.
    #[error("too many request bodies arriving at once (over MAX_BODY_BYTES_IN_FLIGHT, {budget} bytes): retry later")]
    BodiesInFlight { budget: usize },
}

/// Seconds a sender is asked to wait after a 503 for bodies in flight: a large body takes about that long.
const BODIES_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Rejected(RejectReason::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            ApiError::Rejected(RejectReason::BadRequest(_)) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnreadableBody => StatusCode::BAD_REQUEST,
            ApiError::Unavailable { .. } | ApiError::BodiesInFlight { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// A reason category for metrics labels (bounded, unlike the reasons themselves).
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Rejected(RejectReason::Unauthorized(_)) => "signature",
            ApiError::Rejected(RejectReason::BadRequest(_)) => "bad_request",
            ApiError::PayloadTooLarge { .. } => "too_large",
            ApiError::UnreadableBody => "unreadable_body",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::BodiesInFlight { .. } => "bodies_in_flight",
        }
    }

    /// A short reason for logs.
    pub fn reason(&self) -> String {
        match self {
            ApiError::Rejected(r) => r.to_string(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // Which check failed helps an attacker, not a sender: one answer for all of them.
            ApiError::Rejected(RejectReason::Unauthorized(_)) => {
                "invalid or missing signature".to_string()
            }
            other => other.reason(),
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        let retry_after = match self {
            ApiError::Unavailable { retry_after_secs } => Some(retry_after_secs),
            ApiError::BodiesInFlight { .. } => Some(BODIES_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(retry_after_secs) = retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after_secs.to_string().parse().expect("digits"),
            );
        }
        response
    }
}
