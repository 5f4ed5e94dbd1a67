//! Customer.io's `X-CIO-Signature` (PROTOCOLS.md §2.1): hex HMAC-SHA256 of `"v0:" + X-CIO-Timestamp + ":" +
//! raw body`. A timestamp outside the tolerance is refused so that a captured request cannot be replayed later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::{
    config::Secret,
    sources::{
        signature::sha256_matches,
        verify::{authenticate, signature_digest, SignatureHeader},
        Authenticity, RejectReason, Verified,
    },
};

const X_CIO_SIGNATURE: SignatureHeader = SignatureHeader {
    name: SIGNATURE_HEADER,
    bytes: 32,
    missing: "missing X-CIO-Signature",
    malformed: "malformed X-CIO-Signature",
    mismatch: "X-CIO-Signature mismatch",
};

/// Checks `X-CIO-Signature` over `v0:<X-CIO-Timestamp>:<raw body>` and the timestamp's freshness.
/// A `tolerance` of zero turns the freshness check off.
pub fn verify<'a>(
    headers: &axum::http::HeaderMap,
    body: &'a [u8],
    secrets: &[Secret],
    unsigned_ok: bool,
    tolerance: Duration,
    now: SystemTime,
) -> Result<Verified<'a>, RejectReason> {
    let Some(digest) = signature_digest(headers, &X_CIO_SIGNATURE, secrets, unsigned_ok)? else {
        return Ok(Verified::whole(body, Authenticity::UnsignedDevMode));
    };
    let mut stamps = headers.get_all(TIMESTAMP_HEADER).iter();
    let (Some(stamp), None) = (stamps.next(), stamps.next()) else {
        return Err(RejectReason::Unauthorized(
            "missing or repeated X-CIO-Timestamp",
        ));
    };
    let stamp = stamp.to_str().unwrap_or("").trim();
    let Some(seconds) = stamp
        .parse::<u64>()
        .ok()
        .filter(|_| stamp.bytes().all(|b| b.is_ascii_digit()))
    else {
        return Err(RejectReason::Unauthorized("malformed X-CIO-Timestamp"));
    };
    let signed = authenticate(Some(&digest), &X_CIO_SIGNATURE, |d| {
        sha256_matches(secrets, &[b"v0:", stamp.as_bytes(), b":", body], d)
    })?;
    if !tolerance.is_zero() {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now.abs_diff(seconds) > tolerance.as_secs() {
            return Err(RejectReason::Unauthorized(
                "X-CIO-Timestamp outside the tolerance",
            ));
        }
    }
    Ok(Verified::whole(body, signed))
}
