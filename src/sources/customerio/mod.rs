//! Customer.io reporting webhooks: the `v0:<timestamp>:<body>` HMAC-SHA256 scheme and the event envelope.
//!
//! Customer.io holds back every later webhook for an hour after a 4xx, so a genuine (signed, in-window) body
//! is never refused for its content: fields of an unexpected type are read leniently, and a body that is not
//! an event we can use (not JSON, too deep, not an event we know) is acknowledged and kept as "unprocessable".

mod parse;
mod sample;
#[cfg(test)]
mod tests;
mod verify;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use serde_json::{Map, Value};

pub use parse::{parse, unprocessable, Parsed};
pub use sample::sample;
pub use verify::verify;

use super::{
    provider::{Description, Header},
    signature::sign_sha256,
    Provider, RejectReason, Source, SourceSettings, Verified,
};
use crate::config::Secret;

pub const SIGNATURE_HEADER: &str = "x-cio-signature";
pub const TIMESTAMP_HEADER: &str = "x-cio-timestamp";

/// The object types Customer.io sends, longest first so that `in_app_clicked` splits as (`in_app`, `clicked`).
pub const OBJECT_TYPES: [&str; 8] = [
    "whatsapp", "customer", "webhook", "in_app", "email", "slack", "push", "sms",
];

/// Signs a body the way Customer.io does, for `mavera-triggers send` and tests.
pub fn sign(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    sign_sha256(
        secret,
        &[b"v0:", timestamp.to_string().as_bytes(), b":", body],
    )
}

/// The headers Customer.io would send with `body` at `now`.
fn sign_now(secret: &Secret, body: &[u8], now: SystemTime) -> Vec<Header> {
    let ts = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    vec![
        (TIMESTAMP_HEADER, ts.to_string()),
        (SIGNATURE_HEADER, sign(secret, ts, body)),
    ]
}

/// Customer.io as a [`Provider`]: one event per request, and nothing genuine answered with a 4xx.
pub struct CustomerIo;

impl Provider for CustomerIo {
    fn source(&self) -> Source {
        Source::CustomerIo
    }

    fn describe(&self) -> &'static Description {
        &Description {
            title: "Customer.io",
            secret_variable: "CIO_WEBHOOK_SECRET",
            console_sample: sample::CONSOLE_SAMPLE,
            sample,
            sign: sign_now,
            signed_with: "X-CIO-Signature v0 (HMAC-SHA256, CIO_WEBHOOK_SECRET)",
            kept_answer: "Customer.io would get a 200, but the body is kept as unprocessable",
        }
    }

    fn verify<'a>(
        &self,
        settings: &SourceSettings,
        headers: &HeaderMap,
        body: &'a [u8],
        now: SystemTime,
    ) -> Result<Verified<'a>, RejectReason> {
        verify(
            headers,
            body,
            &settings.secrets,
            settings.unsigned_ok,
            settings.timestamp_tolerance,
            now,
        )
    }

    fn signature_note(&self, headers: &HeaderMap) -> String {
        let stamp = headers
            .get(TIMESTAMP_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim();
        format!("verified: X-CIO-Signature, HMAC-SHA256 of v0:{stamp}:<body>")
    }

    fn full_context(&self, raw: &str) -> Map<String, Value> {
        parse::full_context(raw)
    }

    /// A body too deep or too long to read is acknowledged and kept as unprocessable, like one that is not
    /// an event: never refused.
    fn parse(
        &self,
        _settings: &SourceSettings,
        verified: &Verified<'_>,
        shape: Result<(), RejectReason>,
    ) -> Result<super::Parsed, RejectReason> {
        let parsed = match shape {
            Ok(()) => parse(verified),
            Err(e) => unprocessable(verified.body, e.to_string()),
        };
        Ok(match parsed {
            Parsed::Event(event) => super::Parsed {
                events: vec![*event],
                unusable: Vec::new(),
            },
            Parsed::Unprocessable(part) => super::Parsed {
                events: Vec::new(),
                unusable: vec![*part],
            },
        })
    }
}
