//! Customer.io's signature scheme and envelope against the shared vector and the samples.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::*;
use crate::sources::{Authenticity, Event, RejectReason};

/// A request checked against one secret.
fn signed<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    secret: &Secret,
    tolerance: Duration,
    now: SystemTime,
) -> Result<Verified<'a>, RejectReason> {
    verify(
        headers,
        body,
        std::slice::from_ref(secret),
        false,
        tolerance,
        now,
    )
}

/// A body let through unsigned, as `dev` mode with no secret does.
fn unsigned(body: &[u8]) -> Verified<'_> {
    verify(
        &HeaderMap::new(),
        body,
        &[],
        true,
        Duration::ZERO,
        SystemTime::now(),
    )
    .unwrap()
}

const VECTOR_TS: u64 = 1613063089;

fn vector(name: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/signature-test-vectors.json"
    ))
    .unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["vectors"][name].clone()
}

fn headers(sig: &str, ts: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
    h.insert(TIMESTAMP_HEADER, HeaderValue::from_str(ts).unwrap());
    h
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn the_v0_vector_verifies_and_the_body_only_scheme_does_not() {
    let v = vector("customerio_reporting_webhook");
    let secret = Secret::new(v["secret"].as_str().unwrap());
    let body = v["raw_body"].as_str().unwrap().as_bytes();
    let expected = v["expected"].as_str().unwrap();
    assert_eq!(sign(&secret, VECTOR_TS, body), expected);
    let tol = Duration::from_secs(300);
    let ok = signed(
        &headers(expected, "1613063089"),
        body,
        &secret,
        tol,
        at(VECTOR_TS + 10),
    );
    assert_eq!(ok.unwrap().authenticity, Authenticity::Signed);
    // Uppercase hex carries the same bits.
    assert!(signed(
        &headers(&expected.to_uppercase(), "1613063089"),
        body,
        &secret,
        tol,
        at(VECTOR_TS)
    )
    .is_ok());

    let wrong = vector("customerio_wrong_scheme_body_only");
    let err = signed(
        &headers(wrong["value"].as_str().unwrap(), "1613063089"),
        body,
        &secret,
        tol,
        at(VECTOR_TS),
    )
    .unwrap_err();
    assert_eq!(err, RejectReason::Unauthorized("X-CIO-Signature mismatch"));
}

#[test]
fn stale_future_and_missing_timestamps_are_refused() {
    let secret = Secret::new("k");
    let body = br#"{"metric":"sent"}"#;
    let tol = Duration::from_secs(300);
    let sig = sign(&secret, 1000, body);
    for now in [1000 + 301, 1000 - 301] {
        let err = signed(&headers(&sig, "1000"), body, &secret, tol, at(now)).unwrap_err();
        assert!(matches!(err, RejectReason::Unauthorized(_)));
    }
    // Tolerance 0 turns the check off.
    assert!(signed(
        &headers(&sig, "1000"),
        body,
        &secret,
        Duration::ZERO,
        at(99_999)
    )
    .is_ok());
    let mut no_ts = HeaderMap::new();
    no_ts.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).unwrap());
    assert!(signed(&no_ts, body, &secret, tol, at(1000)).is_err());
    assert!(signed(&headers(&sig, "+1000"), body, &secret, tol, at(1000)).is_err());
}

fn parse_file(name: &str) -> Parsed {
    let body = std::fs::read(format!(
        "{}/tests/fixtures/customerio/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let v = unsigned(&body);
    parse(&v)
}

#[test]
fn every_customerio_sample_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/customerio");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Parsed::Event(e) = parse_file(&name) else {
            panic!("{name} did not parse into an event")
        };
        assert!(!e.name.is_empty() && e.kind != "unknown", "{name}: {e:?}");
        assert!(e.user_id.is_some(), "{name} has a person to look up");
    }
}

#[test]
fn the_current_envelope_prefers_identifiers_id() {
    let Parsed::Event(e) = parse_file("customerio-customer-unsubscribed.json") else {
        panic!()
    };
    assert_eq!(
        (e.kind.as_str(), e.name.as_str()),
        ("customer", "unsubscribed")
    );
    assert_eq!(e.dedupe_key(), "customerio:01E4C4CT6YDC7Y5M7FE1GWWPQJ");
    assert_eq!(
        e.context()["lookup"],
        serde_json::json!({"id": "42", "id_type": "id"})
    );
    assert_eq!(e.context()["email"], "test@example.com");
}

#[test]
fn the_legacy_event_type_maps_to_object_and_metric() {
    let Parsed::Event(e) = parse_file("customerio-legacy-email-delivered.json") else {
        panic!()
    };
    assert_eq!((e.kind.as_str(), e.name.as_str()), ("email", "delivered"));
    assert_eq!(e.context()["lookup"]["id"], "568");
    let body = br#"{"event_type":"in_app_clicked","event_id":"x","data":{}}"#;
    let v = unsigned(body);
    let Parsed::Event(e) = parse(&v) else {
        panic!()
    };
    assert_eq!((e.kind.as_str(), e.name.as_str()), ("in_app", "clicked"));
}

#[test]
fn the_lookup_falls_back_from_id_to_email_to_cio_id() {
    let cases = [
        (
            r#"{"identifiers":{"id":null,"email":"a@b.co","cio_id":"c1"},"customer_id":""}"#,
            ("a@b.co", "email"),
        ),
        (
            r#"{"identifiers":{"id":null,"email":null,"cio_id":"c1"}}"#,
            ("c1", "cio_id"),
        ),
        (r#"{"identifiers":{"id":7},"customer_id":"9"}"#, ("7", "id")),
        (
            r#"{"customer_id":"9","email_address":"a@b.co"}"#,
            ("9", "id"),
        ),
    ];
    for (data, (id, id_type)) in cases {
        let body = format!(
            r#"{{"metric":"unsubscribed","object_type":"customer","event_id":"e","data":{data}}}"#
        );
        let v = unsigned(body.as_bytes());
        let Parsed::Event(e) = parse(&v) else {
            panic!()
        };
        assert_eq!(
            e.context()["lookup"],
            serde_json::json!({"id": id, "id_type": id_type}),
            "{data}"
        );
    }
}

#[test]
fn a_genuine_body_we_cannot_use_is_unprocessable_not_refused() {
    for (body, why) in [
        (&br#"{"hello":1}"#[..], "no `metric` or `event_type`"),
        (br#"{"metric":5,"data":"x"}"#, "no `metric` or `event_type`"),
        (b"[1]", "expected one JSON object"),
        (b"not json", "malformed JSON"),
        (b"  ", "empty body"),
    ] {
        let v = unsigned(body);
        let Parsed::Unprocessable(u) = parse(&v) else {
            panic!("{body:?} should be unprocessable")
        };
        assert!(u.refusal.reason().contains(why), "{:?}", u.refusal);
        assert_eq!(u.raw.as_bytes(), body);
    }
}

fn event(object_type: &str, data: &str) -> Event {
    let body = format!(
        r#"{{"metric":"sent","object_type":"{object_type}","event_id":"e-{object_type}","data":{data}}}"#
    );
    let v = unsigned(body.as_bytes());
    let Parsed::Event(e) = parse(&v) else {
        panic!("{body}")
    };
    *e
}

#[test]
fn a_recipient_is_an_email_only_for_an_email_message() {
    let email = event(
        "email",
        r#"{"identifiers":{"id":"7"},"recipient":"jane@acme.example"}"#,
    );
    assert_eq!(email.context()["email"], "jane@acme.example");
    assert_eq!(email.context()["recipient"], "jane@acme.example");
    for (object_type, recipient) in [
        ("sms", "+15551234567"),
        ("whatsapp", "+447700900123"),
        ("slack", "#general"),
        ("webhook", "https://hooks.example/x"),
        ("in_app", "7"),
    ] {
        let e = event(
            object_type,
            &format!(r#"{{"identifiers":{{"id":"7"}},"recipient":"{recipient}"}}"#),
        );
        assert_eq!(e.context()["email"], Value::Null, "{object_type}");
        assert_eq!(e.context()["recipient"], recipient, "{object_type}");
    }
    // The person's own address still counts, whatever the channel.
    let sms = event(
        "sms",
        r#"{"identifiers":{"id":"7","email":"jane@acme.example"},"recipient":"+15551234567"}"#,
    );
    assert_eq!(sms.context()["email"], "jane@acme.example");
}

#[test]
fn an_event_says_whom_it_is_about_with_the_email_masked() {
    let e = event(
        "email",
        r#"{"identifiers":{"id":"42","email":"jane@acme.example","cio_id":"d9c1"}}"#,
    );
    assert_eq!(
        e.who,
        "id=42 cio_id=d9c1 email=j***@acme.example object_type=email"
    );
    assert_eq!(event("push", "{}").who, "object_type=push");
}

#[test]
fn the_context_is_built_when_asked_for_and_holds_every_field() {
    let body = br#"{"data":{"action_id":36,"customer_id":"c1","delivery_id":"RAEC==","identifiers":{"cio_id":"a3000001","email":"c1@acme.example","id":"c1"},"recipient":"c1@acme.example","subject":"Bye"},"event_id":"ev1","metric":"unsubscribed","object_type":"email","timestamp":1732541458}"#;
    let v = unsigned(body);
    let Parsed::Event(e) = parse(&v) else {
        panic!()
    };
    assert!(
        e.context.get().is_none(),
        "an event no trigger asks about is never given a context"
    );
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        Value::Object(e.context().clone()),
        serde_json::json!({
            "provider": "customerio",
            "event": "unsubscribed",
            "metric": "unsubscribed",
            "object_type": "email",
            "event_id": "ev1",
            "timestamp": 1732541458,
            "user_id": "c1",
            "customer_id": "c1",
            "email": "c1@acme.example",
            "recipient": "c1@acme.example",
            "cio_id": "a3000001",
            "delivery_id": "RAEC==",
            "lookup": {"id": "c1", "id_type": "id"},
            "identifiers": payload["data"]["identifiers"],
            "data": payload["data"],
            "payload": payload,
        })
    );
    assert_eq!((e.user_id.as_deref(), e.id.as_str()), (Some("c1"), "ev1"));
}
