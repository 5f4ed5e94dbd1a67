//! Segment's `X-Signature`: lowercase hex HMAC-SHA1 of the raw body, or of a batch's first element.

use serde_json::value::RawValue;

use super::SIGNATURE_HEADER;
use crate::{
    config::Secret,
    sources::{
        signature::sha1_matches,
        verify::{authenticate, malformed, signature_digest, SignatureHeader},
        RejectReason, Verified,
    },
};

const X_SIGNATURE: SignatureHeader = SignatureHeader {
    name: SIGNATURE_HEADER,
    bytes: 20,
    missing: "missing X-Signature",
    malformed: "malformed X-Signature",
    mismatch: "X-Signature mismatch",
};

/// Checks the signature of a Segment request on its raw bytes, before anything is read from it.
///
/// `unsigned_ok` is `dev` mode with no secret set: the body is accepted without a signature.
pub fn verify<'a>(
    headers: &axum::http::HeaderMap,
    body: &'a [u8],
    secrets: &[Secret],
    unsigned_ok: bool,
) -> Result<Verified<'a>, RejectReason> {
    let digest = signature_digest(headers, &X_SIGNATURE, secrets, unsigned_ok)?;
    let signs = |signed: Option<&[u8]>, digest: &[u8]| {
        signed.is_some_and(|first| sha1_matches(secrets, first, digest))
            || sha1_matches(secrets, body, digest)
    };
    let is_batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_batch {
        let authenticity = authenticate(digest.as_deref(), &X_SIGNATURE, |d| signs(None, d))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(RejectReason::BadRequest(
                "empty body: send a Segment event as JSON".into(),
            ));
        }
        let raw: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
        return Ok(Verified {
            authenticity,
            body,
            parts: vec![raw],
            batch: false,
        });
    }
    // A batch has to be split before its first element can be checked: this reads the array's structure only.
    // An array that cannot be split can still carry a signature over the whole body; without one it is 401.
    let elements: Vec<&RawValue> = match serde_json::from_slice(body) {
        Ok(elements) => elements,
        Err(e) => {
            let first = first_element(body).map(|f| f.get().as_bytes());
            authenticate(digest.as_deref(), &X_SIGNATURE, |d| signs(first, d))?;
            return Err(malformed(e));
        }
    };
    let first = elements.first().map(|f| f.get().as_bytes());
    let authenticity = authenticate(digest.as_deref(), &X_SIGNATURE, |d| signs(first, d))?;
    if elements.is_empty() {
        return Err(RejectReason::BadRequest(
            "empty batch: the array holds no events".into(),
        ));
    }
    Ok(Verified {
        authenticity,
        body,
        parts: elements,
        batch: true,
    })
}

/// The raw first element of a JSON array whose later part may be broken: what Segment signed.
fn first_element(body: &[u8]) -> Option<&RawValue> {
    struct First<'a, 'de>(&'a mut Option<&'de RawValue>);
    impl<'de> serde::de::Visitor<'de> for First<'_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            *self.0 = seq.next_element()?;
            Err(serde::de::Error::custom("only the first element is read"))
        }
    }
    let mut first = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = serde::Deserializer::deserialize_seq(&mut de, First(&mut first));
    first
}
