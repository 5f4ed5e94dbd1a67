//! The webhook sink: the outcome as a JSON POST, signed so the receiver can check it came from us.
//!
//! Headers: `X-Mavera-Triggers-Delivery` (the delivery job's id: stable across retries, for the receiver's
//! dedupe), `X-Mavera-Triggers-Timestamp` (unix seconds) and, when a secret is set,
//! `X-Mavera-Triggers-Signature: v1=<hex HMAC-SHA256 of "v1:" + timestamp + ":" + body>`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{send, SinkError};
use crate::{config::Secret, sources::signature::sign_sha256};

pub const SIGNATURE_HEADER: &str = "x-mavera-triggers-signature";
pub const TIMESTAMP_HEADER: &str = "x-mavera-triggers-timestamp";
pub const DELIVERY_HEADER: &str = "x-mavera-triggers-delivery";

/// The signature a receiver should compute: `v1=` and hex HMAC-SHA256 over `v1:<timestamp>:<body>`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let hex = sign_sha256(
        &Secret::new(secret),
        &[b"v1:", timestamp.to_string().as_bytes(), b":", body],
    );
    format!("v1={hex}")
}

pub async fn post(
    http: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    delivery_id: u64,
    delivery: &Value,
) -> Result<Value, SinkError> {
    let body = serde_json::to_vec(delivery).map_err(|e| SinkError::Final(e.to_string()))?;
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header(DELIVERY_HEADER, delivery_id.to_string())
        .header(TIMESTAMP_HEADER, ts.to_string());
    if let Some(secret) = secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, ts, &body));
    }
    let status = send("the webhook sink", request.body(body)).await?;
    Ok(json!({ "sink": "webhook", "status": status }))
}
