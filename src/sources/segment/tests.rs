//! Segment's signature scheme, parsers and fast path against the shared vectors and the samples.

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{value::RawValue, Value};

use super::{head::from_head, parse::to_event, *};
use crate::{
    config::Secret,
    sources::{signature::sign_sha1, Authenticity, Refusal},
};

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/signature-test-vectors.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn headers(sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
    h
}

#[test]
fn the_shared_signature_vectors_verify() {
    let v = vectors();
    for name in [
        "segment_actions_single",
        "segment_actions_batch",
        "segment_classic_track",
    ] {
        let vec = &v["vectors"][name];
        let secret = Secret::new(vec["secret"].as_str().unwrap());
        let body = vec["raw_body"].as_str().unwrap().as_bytes();
        let expected = vec["expected"].as_str().unwrap();
        assert_eq!(
            sign_sha1(&secret, vec["signed_bytes"].as_str().unwrap().as_bytes()),
            expected,
            "{name}"
        );
        let verified = verify(&headers(expected), body, &[secret], false)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(verified.authenticity, Authenticity::Signed);
    }
}

#[test]
fn a_wrong_missing_or_prefixed_signature_is_refused() {
    let secret = Secret::new("abc123");
    let body = br#"{"cool":true}"#;
    let good = "5099cab379b3be52908387457007040cc934ef86";
    for bad in [
        "5099cab379b3be52908387457007040cc934ef87".to_string(),
        format!("sha1={good}"),
        good[..39].to_string(),
        "not hex at all, not hex at all, not hex!".to_string(),
    ] {
        let err = verify(&headers(&bad), body, std::slice::from_ref(&secret), false).unwrap_err();
        assert!(matches!(err, RejectReason::Unauthorized(_)), "{bad}: {err}");
    }
    let err = verify(
        &HeaderMap::new(),
        body,
        std::slice::from_ref(&secret),
        false,
    )
    .unwrap_err();
    assert_eq!(err, RejectReason::Unauthorized("missing X-Signature"));
    // A batch signed over any element but the first does not verify.
    let batch = br#"[{"cool":false},{"cool":true}]"#;
    assert!(verify(&headers(good), batch, &[secret], false).is_err());
}

#[test]
fn a_rotated_secret_still_verifies() {
    let body = br#"{"cool":true}"#;
    let secrets = [Secret::new("new-secret"), Secret::new("abc123")];
    assert!(verify(
        &headers("5099cab379b3be52908387457007040cc934ef86"),
        body,
        &secrets,
        false
    )
    .is_ok());
}

#[test]
fn every_segment_sample_parses_into_an_event() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/segment");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        let verified = verify(&HeaderMap::new(), &body, &[], true).unwrap();
        let events = parse(&verified)
            .unwrap_or_else(|e| panic!("{path:?}: {e}"))
            .events;
        assert_eq!(events.len(), 1, "{path:?}");
        let kind = &events[0].kind;
        assert!(SPEC_TYPES.contains(&kind.as_str()), "{path:?}: {kind}");
        seen += 1;
    }
    assert!(seen >= 14, "expected every Segment sample, saw {seen}");
}

#[test]
fn track_events_carry_their_name_traits_and_user() {
    let body = br#"{"type":"track","event":"trial_started","messageId":"m1","anonymousId":"anon",
        "properties":{"plan":"pro"},"context":{"traits":{"plan":"team","company":"Acme"}},"traits":{"seat":3}}"#;
    let verified = verify(&HeaderMap::new(), body, &[], true).unwrap();
    let e = parse(&verified).unwrap().events.remove(0);
    assert_eq!(e.name, "trial_started");
    assert_eq!(e.id, "m1");
    assert_eq!(e.dedupe_key(), "segment:m1");
    assert_eq!(e.user_id.as_deref(), Some("anon"));
    assert_eq!(e.context()["traits"]["company"], "Acme");
    assert_eq!(e.context()["traits"]["seat"], 3);
    // Traits win over properties at the top level, as in the seed.
    assert_eq!(e.context()["plan"], "team");
    assert_eq!(e.context()["properties"]["plan"], "pro");
}

#[test]
fn an_event_without_message_id_gets_a_stable_content_key() {
    let body = br#"{"type":"identify","userId":"u1"}"#;
    let a = parse(&verify(&HeaderMap::new(), body, &[], true).unwrap())
        .unwrap()
        .events;
    let b = parse(&verify(&HeaderMap::new(), body, &[], true).unwrap())
        .unwrap()
        .events;
    assert!(a[0].id.starts_with("content:"));
    assert_eq!(a[0].id, b[0].id);
}

#[test]
fn bodies_that_are_not_segment_events_get_a_reason() {
    for (body, why) in [
        (&b"{\"type\":\"track\""[..], "malformed JSON"),
        (b"[]", "empty batch"),
        (b"   ", "empty body"),
        (b"42", "expected a JSON object"),
        (br#"{"hello":"world"}"#, "neither `type` nor `event`"),
        (br#"{"type":"track"}"#, "needs an `event` name"),
        (
            br#"{"type":"track","event":"x","properties":[1]}"#,
            "`properties` must be an object",
        ),
        (br#"{"type":"track","event":5}"#, "`event` must be a string"),
        (b"[7, [1]]", "not a Segment batch"),
    ] {
        let err = verify(&HeaderMap::new(), body, &[], true)
            .and_then(|v| parse(&v))
            .unwrap_err();
        let RejectReason::BadRequest(reason) = err else {
            panic!("{body:?}: expected 400, got {err:?}")
        };
        assert!(reason.contains(why), "{reason} should mention {why}");
    }
}

#[test]
fn a_batch_keeps_its_good_events_and_sets_the_bad_ones_aside_with_why() {
    let body = br#"[{"type":"page","userId":"u1"},7,{"type":"track","userId":"u2"},{"type":"track","event":"x","anonymousId":"a3"}]"#;
    let parsed = parse(&verify(&HeaderMap::new(), body, &[], true).unwrap()).unwrap();
    let names: Vec<&str> = parsed.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["page", "x"]);
    let why: Vec<(&str, &str, Option<&str>)> = parsed
        .unusable
        .iter()
        .map(|u| (u.refusal.reason(), u.name.as_str(), u.user_id.as_deref()))
        .collect();
    assert_eq!(
        why,
        [
            (
                "batch element 1: not a Segment event: expected a JSON object",
                "-",
                None
            ),
            (
                "batch element 2: a track event needs an `event` name",
                "track",
                Some("u2")
            ),
        ]
    );
    assert_eq!(parsed.unusable[0].raw, "7");
    assert!(matches!(parsed.unusable[1].refusal, Refusal::Refused(_)));
}

#[test]
fn a_lone_surrogate_is_read_as_the_replacement_character_under_the_signature() {
    let secret = Secret::new("abc123");
    let first = r#"{"type":"track","event":"Emoji \ud83d","userId":"u1","properties":{"note":"half \udE00 of a pair"}}"#;
    let body = format!(
        r#"[{first},{{"type":"identify","userId":"u2","traits":{{"name":"\ud83d\ude00"}}}}]"#
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        SIGNATURE_HEADER,
        sign_sha1(&secret, first.as_bytes()).parse().unwrap(),
    );
    let verified = verify(&headers, body.as_bytes(), &[secret], false).unwrap();
    let parsed = parse(&verified).unwrap();
    assert!(parsed.unusable.is_empty());
    let e = &parsed.events[0];
    assert_eq!(e.name, "Emoji \u{FFFD}");
    assert_eq!(e.context()["properties"]["note"], "half \u{FFFD} of a pair");
    assert_eq!(parsed.events[1].context()["traits"]["name"], "😀");
}

#[test]
fn the_head_gives_the_same_event_as_reading_it_all() {
    let raw = r#"{"type":"track","event":"Signed Up","messageId":"m-1","userId":42,"anonymousId":"a",
        "properties":{"plan":"pro"},"context":{"traits":{"company":"Acme"},"ip":"1.2.3.4"},"timestamp":"2026-11-25T00:00:00Z"}"#;
    let raw: &RawValue = serde_json::from_str(raw).unwrap();
    let fast = from_head(raw.get()).expect("the fast path takes it");
    let Value::Object(obj) = serde_json::from_str(raw.get()).unwrap() else {
        panic!()
    };
    let slow = to_event(obj, raw.get().as_bytes()).unwrap();
    assert_eq!(
        (&fast.id, &fast.name, &fast.kind, &fast.user_id),
        (&slow.id, &slow.name, &slow.kind, &slow.user_id)
    );
    assert_eq!(fast.context(), slow.context());
    assert_eq!(fast.raw, slow.raw);
}

/// Found by `tests/properties.rs` (`[{},[""]]`): the fast path read an array as a struct's fields in order,
/// so a batch element `[""]` became an event with an empty name and no context.
#[test]
fn a_batch_element_that_is_an_array_is_set_aside_not_read_as_an_event() {
    let body = br#"[{"type":"identify","userId":"u1"},[""],["track","x"]]"#;
    let parsed = parse(&verify(&HeaderMap::new(), body, &[], true).unwrap()).unwrap();
    assert_eq!(parsed.events.len(), 1);
    let why: Vec<&str> = parsed.unusable.iter().map(|u| u.refusal.reason()).collect();
    assert_eq!(
        why,
        [
            "batch element 1: not a Segment event: expected a JSON object",
            "batch element 2: not a Segment event: expected a JSON object"
        ]
    );
}

/// `context` is read in the head's own pass: an odd one (not an object, its `traits` not an object, `traits`
/// twice) still leaves the event to the full read, which names what is wrong; a `null` one does not.
#[test]
fn an_odd_context_goes_the_full_way() {
    let with = |context: &str| {
        format!(
            r#"{{"type":"track","event":"E","messageId":"m-1","userId":"u","context":{context}}}"#
        )
    };
    for odd in [
        r#"["traits"]"#,
        r#""text""#,
        "7",
        r#"{"traits":"vip"}"#,
        r#"{"traits":[1]}"#,
        r#"{"traits":{},"traits":{}}"#,
    ] {
        assert!(from_head(&with(odd)).is_none(), "{odd}");
    }
    for fine in [
        "null",
        "{}",
        r#"{"traits":null}"#,
        r#"{"ip":"1.2.3.4","traits":{"a":1},"x":[{"traits":1}]}"#,
    ] {
        let event = from_head(&with(fine)).unwrap_or_else(|| panic!("{fine}"));
        assert_eq!(event.name, "E");
    }
}
