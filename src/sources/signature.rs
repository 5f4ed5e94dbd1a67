//! HMAC checks on raw bytes, in constant time, against one or more secrets (rotation).

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::config::Secret;

/// Outcome of reading a signature header.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderSignature {
    Missing,
    /// More than one header of the name, or a value that is not hex of the right length.
    Malformed,
    Digest(Vec<u8>),
}

/// Reads a hex signature header: exactly one header, surrounding whitespace ignored, hex of `len` bytes.
/// Hex case does not matter (the same bits either way); prefixes such as `sha1=` are malformed.
pub fn read_hex_header(headers: &axum::http::HeaderMap, name: &str, len: usize) -> HeaderSignature {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return HeaderSignature::Missing;
    };
    if values.next().is_some() {
        return HeaderSignature::Malformed;
    }
    let Ok(text) = first.to_str() else {
        return HeaderSignature::Malformed;
    };
    let text = text.trim();
    if text.len() != len * 2 {
        return HeaderSignature::Malformed;
    }
    match hex::decode(text) {
        Ok(bytes) => HeaderSignature::Digest(bytes),
        Err(_) => HeaderSignature::Malformed,
    }
}

/// True when `digest` is HMAC-SHA1 of `message` under any of `secrets`. Constant time per secret.
pub fn sha1_matches(secrets: &[Secret], message: &[u8], digest: &[u8]) -> bool {
    secrets.iter().any(|secret| {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(message);
        mac.verify_slice(digest).is_ok()
    })
}

/// True when `digest` is HMAC-SHA256 of the concatenated `parts` under any of `secrets`. Constant time.
pub fn sha256_matches(secrets: &[Secret], parts: &[&[u8]], digest: &[u8]) -> bool {
    secrets.iter().any(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(digest).is_ok()
    })
}

/// Lowercase hex HMAC-SHA1, as Segment sends it in `X-Signature`.
pub fn sign_sha1(secret: &Secret, message: &[u8]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Lowercase hex HMAC-SHA256 of the concatenated parts.
pub fn sign_sha256(secret: &Secret, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}
