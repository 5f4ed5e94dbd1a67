//! Segment Webhooks destinations (Classic and Actions): `X-Signature` HMAC-SHA1 and the Segment spec's events.
//!
//! Signature (PROTOCOLS.md §1.3): lowercase hex HMAC-SHA1 of the raw body. For an Actions batch (a JSON array)
//! Segment signs only the raw bytes of the first element; a signature over the whole array is accepted too.
//! Only the first element of a batch is covered by the signature: that is Segment's scheme, not ours to fix.

mod head;
mod parse;
mod sample;
#[cfg(test)]
mod tests;
mod verify;

use std::time::SystemTime;

use axum::http::HeaderMap;
use serde_json::{Map, Value};

pub use parse::parse;
pub use sample::sample;
pub use verify::verify;

use super::{
    provider::Description, signature::sign_sha1, Parsed, Provider, RejectReason, Source,
    SourceSettings, Verified,
};

/// The header Segment puts its signature in.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// The Segment spec types. Anything else is still accepted (and matched by its `type`), never refused.
pub const SPEC_TYPES: [&str; 7] = [
    "track", "identify", "page", "screen", "group", "alias", "delete",
];

/// Segment as a [`Provider`]. A body over the JSON shape limits, or a batch over `MAX_BATCH_EVENTS`, is
/// refused whole (400): Segment reports it and does not re-send it.
pub struct Segment;

impl Provider for Segment {
    fn source(&self) -> Source {
        Source::Segment
    }

    fn describe(&self) -> &'static Description {
        &Description {
            title: "Segment",
            secret_variable: "SEGMENT_SHARED_SECRET",
            console_sample: sample::CONSOLE_SAMPLE,
            sample,
            sign: |secret, body, _now| vec![(SIGNATURE_HEADER, sign_sha1(secret, body))],
            signed_with: "X-Signature (HMAC-SHA1, SEGMENT_SHARED_SECRET)",
            kept_answer:
                "Segment would get a 200, but this part is refused and kept on the events page",
        }
    }

    fn verify<'a>(
        &self,
        settings: &SourceSettings,
        headers: &HeaderMap,
        body: &'a [u8],
        _now: SystemTime,
    ) -> Result<Verified<'a>, RejectReason> {
        verify(headers, body, &settings.secrets, settings.unsigned_ok)
    }

    fn signature_note(&self, _headers: &HeaderMap) -> String {
        "verified: X-Signature, HMAC-SHA1 of the raw body".into()
    }

    fn parse(
        &self,
        settings: &SourceSettings,
        verified: &Verified<'_>,
        shape: Result<(), RejectReason>,
    ) -> Result<Parsed, RejectReason> {
        shape?;
        if verified.event_count() > settings.max_batch_events {
            return Err(RejectReason::BadRequest(format!(
                "a batch of {} events is over the limit of {} (MAX_BATCH_EVENTS)",
                verified.event_count(),
                settings.max_batch_events
            )));
        }
        parse(verified)
    }

    fn full_context(&self, raw: &str) -> Map<String, Value> {
        parse::full_context(raw)
    }
}
