//! What every provider's signature check shares: reading the signature header, the verdict, and the body type
//! only a check can make. The HMAC arithmetic is in [`super::signature`].

use axum::http::HeaderMap;
use serde_json::value::RawValue;

use super::{
    signature::{read_hex_header, HeaderSignature},
    RejectReason,
};
use crate::config::Secret;

/// Whether a verified body carried a signature, or was let through unsigned by `dev` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authenticity {
    Signed,
    UnsignedDevMode,
}

/// A body whose signature has been checked: only a provider's `verify` makes one.
#[derive(Debug)]
pub struct Verified<'a> {
    pub authenticity: Authenticity,
    pub(crate) body: &'a [u8],
    /// The JSON values the body was split into to find the signed bytes (a Segment batch's elements, or its
    /// one event); empty when the provider signs the bytes whole.
    pub(crate) parts: Vec<&'a RawValue>,
    /// The body is a JSON array (an Actions batch, even of one event), not a single event.
    pub(crate) batch: bool,
}

impl<'a> Verified<'a> {
    /// A body checked as a whole, not split.
    pub(crate) fn whole(body: &'a [u8], authenticity: Authenticity) -> Self {
        Verified {
            authenticity,
            body,
            parts: Vec::new(),
            batch: false,
        }
    }

    /// Events in the body: 1, or the length of a batch.
    pub fn event_count(&self) -> usize {
        self.parts.len().max(1)
    }
}

/// A provider's signature header and how each way of getting it wrong is logged.
pub(crate) struct SignatureHeader {
    /// The header's name, lowercase.
    pub name: &'static str,
    /// The digest's length in bytes (it is sent as hex).
    pub bytes: usize,
    pub missing: &'static str,
    pub malformed: &'static str,
    pub mismatch: &'static str,
}

/// The digest the request says it is signed with, or `None` when `dev` mode lets it through unsigned
/// (`unsigned_ok` and no secret set). A missing or malformed header is refused before the body is read.
pub(crate) fn signature_digest(
    headers: &HeaderMap,
    header: &SignatureHeader,
    secrets: &[Secret],
    unsigned_ok: bool,
) -> Result<Option<Vec<u8>>, RejectReason> {
    if secrets.is_empty() {
        return if unsigned_ok {
            Ok(None)
        } else {
            Err(RejectReason::Unauthorized("no secret configured"))
        };
    }
    match read_hex_header(headers, header.name, header.bytes) {
        HeaderSignature::Missing => Err(RejectReason::Unauthorized(header.missing)),
        HeaderSignature::Malformed => Err(RejectReason::Unauthorized(header.malformed)),
        HeaderSignature::Digest(digest) => Ok(Some(digest)),
    }
}

/// The verdict on a digest read by [`signature_digest`]: `matches` says whether it signs what it should.
pub(crate) fn authenticate(
    digest: Option<&[u8]>,
    header: &SignatureHeader,
    matches: impl FnOnce(&[u8]) -> bool,
) -> Result<Authenticity, RejectReason> {
    match digest {
        None => Ok(Authenticity::UnsignedDevMode),
        Some(digest) if matches(digest) => Ok(Authenticity::Signed),
        Some(_) => Err(RejectReason::Unauthorized(header.mismatch)),
    }
}

/// A body that is not JSON, refused with `serde_json`'s account of where.
pub(crate) fn malformed(e: serde_json::Error) -> RejectReason {
    RejectReason::BadRequest(format!("malformed JSON: {e}"))
}
