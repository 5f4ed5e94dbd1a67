//! Property-based fuzzing of the Segment and Customer.io parsers, the signature checks and the dedupe memory.
//!
//! The issue asks for `cargo fuzz` targets. `cargo fuzz` (libFuzzer) needs a nightly compiler (it passes `-Z`
//! flags to rustc for the coverage instrumentation and the sanitizers), and only stable Rust is installed on
//! this project's machines, where CI runs too. So the same functions are fuzzed here with `proptest`: random
//! and structured inputs (arbitrary bytes, JSON-ish token soup, 20 000-deep nesting, 4 000-digit numbers,
//! mutated valid events, random header values) are thrown at the public API exactly as a route calls it, and
//! a panic or a wrong answer fails the test with a shrunk, minimal input.
//!
//! What is checked:
//! 1. No body and no header value makes `segment::{verify, parse}` or `customerio::{verify, parse}` panic;
//!    every refusal is a `BadRequest` or an `Unauthorized`.
//! 2. Valid Segment events (single or batch) signed like Segment signs them verify and parse into the right
//!    events, in order.
//! 3. A single flipped byte of a signed body, of its hex signature, or a changed Customer.io timestamp is never
//!    accepted.
//! 4. A signed Customer.io JSON object is never refused (Customer.io pauses webhooks for an hour after a 4xx);
//!    only a body that is not a JSON object is.
//! 5. `DedupeMemory` says "first sighting" exactly once per key while it has room, and never holds more than
//!    its capacity, also when keys are forgotten.
//!
//! Run: `cargo test --test properties` (a few hundred to a few thousand cases per property, seconds in debug).
//! A longer run: `PROPTEST_CASES=100000 cargo test --release --test properties` (`PROPTEST_CASES` overrides
//! every property's case count). Failures are not persisted to a regressions file: when one is found, pin the
//! minimal input proptest prints as an ordinary unit test next to the code it breaks.

use std::{
    collections::{HashSet, VecDeque},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::http::{HeaderMap, HeaderValue};
use mavera_triggers::{
    config::Secret,
    dedupe::DedupeMemory,
    sources::{
        customerio, segment,
        signature::{
            read_hex_header, sha1_matches, sha256_matches, sign_sha1, sign_sha256, HeaderSignature,
        },
        Authenticity, Event, RejectReason, Source,
    },
};
use proptest::{
    collection::{btree_map, vec},
    option,
    prelude::*,
    sample::{select, Index},
    test_runner::TestCaseError,
};
use serde_json::{value::RawValue, Map, Value};

/// `cases` unless `PROPTEST_CASES` is set, which then wins (for long runs).
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// The kind of refusal `verify` must give for a Segment body, where the body alone decides it: the signature
/// is checked first, so a well-formed body with a secret set can only fail its signature (401). `None` where
/// either may come (a malformed body: 401 unsigned, 400 once its signature holds).
fn expected_segment_refusal(body: &[u8], secrets: &[Secret]) -> Option<&'static str> {
    (!secrets.is_empty() && segment_json_ok(body)).then_some("unauthorized")
}

fn refusal_kind(e: &RejectReason) -> &'static str {
    match e {
        RejectReason::BadRequest(why) if !why.trim().is_empty() => "bad request",
        RejectReason::Unauthorized(why) if !why.trim().is_empty() => "unauthorized",
        _ => "a refusal without a reason",
    }
}

fn looks_like_batch(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Whether Segment's verify may accept `body` at all: one JSON value, or a non-empty JSON array (a batch).
fn segment_json_ok(body: &[u8]) -> bool {
    if looks_like_batch(body) {
        serde_json::from_slice::<Vec<&RawValue>>(body).is_ok_and(|v| !v.is_empty())
    } else {
        serde_json::from_slice::<&RawValue>(body).is_ok()
    }
}

const FAR_PAST: u64 = 0;
/// Any `now` the tests pass stays below this, so that `UNIX_EPOCH + now` cannot overflow.
const FAR_FUTURE: u64 = 8_000_000_000;

// ---------------------------------------------------------------------------------------------------------
// JSON values and events
// ---------------------------------------------------------------------------------------------------------

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-z_]{0,8}",
        any::<String>(),
        select(vec![
            "type",
            "event",
            "traits",
            "id",
            "email",
            "metric",
            "data",
            "identifiers",
            "",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

/// Numbers that survive a JSON round trip exactly (quarters of an `i32` are exact and print short).
fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 4.0)),
        any::<String>().prop_map(Value::from),
    ]
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..5).prop_map(Value::Array),
                btree_map(key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

fn json_map() -> BoxedStrategy<Map<String, Value>> {
    btree_map(key(), json_value(), 0..6)
        .prop_map(|m| m.into_iter().collect())
        .boxed()
}

/// A JSON id as Segment or Customer.io may send one: a string (possibly empty) or an integer.
fn id_value() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<String>().prop_map(Value::from),
        "[a-zA-Z0-9-]{1,36}".prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ]
    .boxed()
}

/// The server's reading of an id: a non-empty string or a number, else absent.
fn expected_id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A valid Segment event and what the parser must make of it.
#[derive(Debug, Clone)]
struct SegmentEvent {
    value: Value,
    name: String,
    kind: String,
    id: String,
    user_id: Option<String>,
    properties: Option<Map<String, Value>>,
}

fn message_id() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-f0-9-]{1,36}",
        any::<String>().prop_filter("messageId is not empty", |s| !s.is_empty()),
    ]
    .boxed()
}

fn segment_event() -> BoxedStrategy<SegmentEvent> {
    let who = (
        option::of(id_value()),
        option::of(id_value()),
        option::of(id_value()),
    );
    let maps = (
        option::of(json_map()),
        option::of(json_map()),
        option::of(json_map()),
        option::of(option::of(json_map())),
    );
    let extra = (
        option::of(any::<String>()),
        btree_map("x_[a-z]{0,6}", json_value(), 0..3),
    );
    (
        select(segment::SPEC_TYPES.to_vec()),
        any::<bool>(),
        option::of(any::<String>()),
        message_id(),
        who,
        maps,
        extra,
    )
        .prop_map(
            |(
                kind,
                omit_type,
                event,
                message_id,
                (user_id, user_id_alias, anonymous_id),
                (properties, traits, context, context_traits),
                (timestamp, extra),
            )| {
                let event = match (kind, event) {
                    ("track", None) => Some("Order Completed".to_string()),
                    (_, event) => event,
                };
                let mut obj: Map<String, Value> = extra.into_iter().collect();
                // An Actions mapping may drop `type` when there is an `event` name.
                let kind = if omit_type && event.is_some() {
                    "track".to_string()
                } else {
                    obj.insert("type".into(), Value::from(kind));
                    kind.to_string()
                };
                if let Some(e) = &event {
                    obj.insert("event".into(), Value::from(e.clone()));
                }
                obj.insert("messageId".into(), Value::from(message_id.clone()));
                for (k, v) in [
                    ("userId", &user_id),
                    ("User ID", &user_id_alias),
                    ("anonymousId", &anonymous_id),
                ] {
                    if let Some(v) = v {
                        obj.insert(k.into(), v.clone());
                    }
                }
                if let Some(p) = &properties {
                    obj.insert("properties".into(), Value::Object(p.clone()));
                }
                if let Some(t) = traits {
                    obj.insert("traits".into(), Value::Object(t));
                }
                if let Some(mut c) = context {
                    match context_traits {
                        Some(Some(t)) => {
                            c.insert("traits".into(), Value::Object(t));
                        }
                        Some(None) => {
                            c.insert("traits".into(), Value::Null);
                        }
                        None => {
                            c.remove("traits");
                        }
                    }
                    obj.insert("context".into(), Value::Object(c));
                }
                if let Some(t) = timestamp {
                    obj.insert("timestamp".into(), Value::from(t));
                }
                let who = expected_id(user_id.as_ref())
                    .or_else(|| expected_id(user_id_alias.as_ref()))
                    .or_else(|| expected_id(anonymous_id.as_ref()));
                SegmentEvent {
                    value: Value::Object(obj),
                    name: event.unwrap_or_else(|| kind.clone()),
                    kind,
                    id: message_id,
                    user_id: who,
                    properties,
                }
            },
        )
        .boxed()
}

/// A Customer.io-shaped JSON object: the envelope's fields with values of any type, plus anything else.
fn customerio_object() -> BoxedStrategy<Map<String, Value>> {
    let text = prop_oneof![
        select(vec![
            "",
            "sent",
            "delivered",
            "email_bounced",
            "in_app_clicked",
            "whatsapp_sent",
            "customer_subscribed",
            "email",
            "customer",
            "push_",
            "_sent",
        ])
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    let identifiers = btree_map(
        select(vec!["id", "email", "cio_id"]).prop_map(str::to_string),
        prop_oneof![id_value(), json_value()],
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    let data_field = prop_oneof![
        (
            Just("identifiers".to_string()),
            prop_oneof![identifiers, json_value()]
        ),
        (
            select(vec![
                "customer_id",
                "email_address",
                "recipient",
                "delivery_id",
            ])
            .prop_map(str::to_string),
            prop_oneof![id_value(), json_value()],
        ),
        (key(), json_value()),
    ];
    let data = vec(data_field, 0..6).prop_map(|fields| Value::Object(fields.into_iter().collect()));
    let envelope_field = prop_oneof![
        (
            select(vec![
                "metric",
                "object_type",
                "object_type_type",
                "event_type",
            ])
            .prop_map(str::to_string),
            prop_oneof![3 => text, 1 => json_value()],
        ),
        (
            select(vec!["event_id", "timestamp"]).prop_map(str::to_string),
            prop_oneof![id_value(), json_value()],
        ),
        (
            Just("data".to_string()),
            prop_oneof![3 => data, 1 => json_value()]
        ),
        (key(), json_value()),
    ];
    vec(envelope_field, 0..8)
        .prop_map(|fields| fields.into_iter().collect())
        .boxed()
}

// ---------------------------------------------------------------------------------------------------------
// Hostile bodies
// ---------------------------------------------------------------------------------------------------------

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b" ",
    b"\n",
    b"\r",
    b"\t",
    b"\x0c",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\\udc00",
    b"\\u0000",
    b"\\\"",
    b"\"type\"",
    b"\"track\"",
    b"\"identify\"",
    b"\"event\"",
    b"\"messageId\"",
    b"\"userId\"",
    b"\"User ID\"",
    b"\"anonymousId\"",
    b"\"properties\"",
    b"\"traits\"",
    b"\"context\"",
    b"\"timestamp\"",
    b"\"metric\"",
    b"\"object_type\"",
    b"\"object_type_type\"",
    b"\"event_type\"",
    b"\"email_bounced\"",
    b"\"in_app_clicked\"",
    b"\"event_id\"",
    b"\"data\"",
    b"\"identifiers\"",
    b"\"id\"",
    b"\"email\"",
    b"\"customer_id\"",
    b"\"email_address\"",
    b"\"cio_id\"",
    b"\"\"",
    b"null",
    b"nul",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"1",
    b"-1",
    b"01",
    b"1.5",
    b"1.",
    b"1e999",
    b"-1e999",
    b"1e-999",
    b"1E+2",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"NaN",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\"\xff\xfe\"",
];

fn token_soup() -> BoxedStrategy<Vec<u8>> {
    vec(select(TOKENS), 0..80)
        .prop_map(|tokens| tokens.concat())
        .boxed()
}

/// `[[[[…` (or objects) up to 20 000 deep, closed or not, bare or inside an event.
fn deep_nesting() -> BoxedStrategy<Vec<u8>> {
    let open: Vec<(&[u8], &[u8])> = vec![
        (b"[", b"]"),
        (b"{\"a\":", b"}"),
        (b"[1,", b"]"),
        (b"{\"properties\":", b"}"),
        (b"{\"data\":", b"}"),
    ];
    let prefix: Vec<&[u8]> = vec![
        b"",
        b" ",
        b"[",
        b"{\"type\":\"track\",\"event\":\"e\",\"properties\":",
        b"{\"metric\":\"sent\",\"data\":",
    ];
    (select(open), 1usize..=20_000, any::<bool>(), select(prefix))
        .prop_map(|((open, close), depth, closed, prefix)| {
            let mut body = prefix.to_vec();
            body.extend(open.repeat(depth));
            body.extend_from_slice(b"0");
            if closed {
                body.extend(close.repeat(depth));
                if prefix.starts_with(b"{") {
                    body.push(b'}');
                } else if prefix == b"[" {
                    body.push(b']');
                }
            }
            body
        })
        .boxed()
}

/// Numbers of up to ~4 000 digits, with exponents far out of range, in the fields that hold ids and values.
fn huge_numbers() -> BoxedStrategy<Vec<u8>> {
    let number = (
        any::<bool>(),
        "[1-9][0-9]{0,4000}",
        option::of("[0-9]{1,300}"),
        option::of("[eE][+-]?[0-9]{1,8}"),
    )
        .prop_map(|(neg, int, frac, exp)| {
            format!(
                "{}{int}{}{}",
                if neg { "-" } else { "" },
                frac.map(|f| format!(".{f}")).unwrap_or_default(),
                exp.unwrap_or_default()
            )
        });
    let template = select(vec![
        r#"{"type":"track","event":"e","messageId":"m","properties":{"n":N}}"#,
        r#"{"type":"identify","userId":N}"#,
        r#"{"type":"alias","User ID":N,"anonymousId":N}"#,
        r#"{"event":"e","messageId":N}"#,
        r#"[{"type":"page","timestamp":N},N]"#,
        r#"{"metric":"sent","event_id":N,"data":{"customer_id":N,"identifiers":{"id":N,"cio_id":N}}}"#,
        r#"{"event_type":"email_sent","timestamp":N,"data":{"identifiers":{"email":N}}}"#,
        "N",
        "[N]",
    ]);
    (template, number)
        .prop_map(|(t, n)| t.replace('N', &n).into_bytes())
        .boxed()
}

#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Duplicate(Index, Index),
}

fn edit() -> BoxedStrategy<Edit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<Index>(), select(b"{}[]\":,\\ 0-e.".to_vec())).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Duplicate(a, b)),
    ]
    .boxed()
}

fn apply(mut body: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if body.is_empty() {
            body.push(b'{');
        }
        match e {
            Edit::Replace(i, b) => {
                let i = i.index(body.len());
                body[i] = *b;
            }
            Edit::Insert(i, b) => body.insert(i.index(body.len() + 1), *b),
            Edit::Delete(i) => {
                body.remove(i.index(body.len()));
            }
            Edit::Duplicate(a, b) => {
                let (a, b) = (a.index(body.len()), b.index(body.len()));
                let (lo, hi) = (a.min(b), a.max(b) + 1);
                let slice = body[lo..hi].to_vec();
                body.splice(hi..hi, slice);
            }
        }
    }
    body
}

/// Valid events of either source, a batch of them, or arbitrary JSON, with a few random edits.
fn mutated_json() -> BoxedStrategy<Vec<u8>> {
    let valid = prop_oneof![
        segment_event().prop_map(|e| e.value),
        vec(segment_event(), 1..4)
            .prop_map(|es| Value::Array(es.into_iter().map(|e| e.value).collect())),
        customerio_object().prop_map(Value::Object),
        json_value(),
    ];
    (
        valid,
        any::<bool>(),
        prop_oneof![1 => Just(Vec::new()), 2 => vec(edit(), 1..5)],
    )
        .prop_map(|(v, pretty, edits)| {
            let text = if pretty {
                serde_json::to_vec_pretty(&v)
            } else {
                serde_json::to_vec(&v)
            };
            apply(text.expect("a Value serializes"), &edits)
        })
        .boxed()
}

fn hostile_body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..512),
        3 => token_soup(),
        1 => deep_nesting(),
        1 => huge_numbers(),
        3 => mutated_json(),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------------------
// Hostile headers
// ---------------------------------------------------------------------------------------------------------

/// What to put in a signature header.
#[derive(Debug, Clone)]
enum Sig {
    Absent,
    /// Any bytes a client can send as a header value.
    Raw(Vec<u8>),
    /// Hex of a random digest, of the length the scheme expects, or of another length.
    Hex(Vec<u8>),
    /// The right signature, possibly in upper case and padded with whitespace, possibly sent twice.
    Correct {
        upper: bool,
        padded: bool,
        twice: bool,
    },
}

fn sig() -> BoxedStrategy<Sig> {
    prop_oneof![
        Just(Sig::Absent),
        vec(any::<u8>(), 0..80).prop_map(Sig::Raw),
        prop_oneof![
            vec(any::<u8>(), 20),
            vec(any::<u8>(), 32),
            vec(any::<u8>(), 0..40)
        ]
        .prop_map(Sig::Hex),
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(upper, padded, twice)| {
            Sig::Correct {
                upper,
                padded,
                twice,
            }
        }),
    ]
    .boxed()
}

/// What to put in `X-CIO-Timestamp`.
#[derive(Debug, Clone)]
enum Stamp {
    Absent,
    Raw(Vec<u8>),
    Number(String),
    Correct { twice: bool },
}

fn stamp() -> BoxedStrategy<Stamp> {
    prop_oneof![
        Just(Stamp::Absent),
        vec(any::<u8>(), 0..30).prop_map(Stamp::Raw),
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            "[+-]?[0-9]{0,30}",
            " ?[0-9]{1,10} ?",
        ]
        .prop_map(Stamp::Number),
        any::<bool>().prop_map(|twice| Stamp::Correct { twice }),
    ]
    .boxed()
}

fn append(headers: &mut HeaderMap, name: &'static str, value: &[u8]) {
    // A value no client could send (control bytes) is simply not sent.
    if let Ok(v) = HeaderValue::from_bytes(value) {
        headers.append(name, v);
    }
}

/// Adds the signature header; true when it carries the right signature (`good`) exactly once.
fn add_sig(headers: &mut HeaderMap, name: &'static str, spec: &Sig, good: &str) -> bool {
    match spec {
        Sig::Absent => false,
        Sig::Raw(bytes) => {
            append(headers, name, bytes);
            false
        }
        Sig::Hex(bytes) => {
            append(headers, name, hex::encode(bytes).as_bytes());
            false
        }
        Sig::Correct {
            upper,
            padded,
            twice,
        } => {
            let mut value = if *upper {
                good.to_uppercase()
            } else {
                good.to_string()
            };
            if *padded {
                value = format!(" \t{value} ");
            }
            append(headers, name, value.as_bytes());
            if *twice {
                append(headers, name, value.as_bytes());
            }
            !twice
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Shared checks
// ---------------------------------------------------------------------------------------------------------

/// Segment verify + parse on `body`; every answer must be well-formed. Returns whether verify accepted it.
fn check_segment(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[Secret],
    unsigned_ok: bool,
) -> Result<bool, TestCaseError> {
    let verified = match segment::verify(headers, body, secrets, unsigned_ok) {
        Ok(v) => v,
        Err(e) => {
            let kind = refusal_kind(&e);
            prop_assert_ne!(
                kind,
                "a refusal without a reason",
                "segment verify: {:?}",
                e
            );
            if let Some(expected) = expected_segment_refusal(body, secrets) {
                prop_assert_eq!(kind, expected, "segment verify: {:?}", e);
            }
            if secrets.is_empty() && unsigned_ok {
                prop_assert!(
                    matches!(e, RejectReason::BadRequest(_)),
                    "dev mode has no signature to refuse: {e:?}"
                );
            }
            return Ok(false);
        }
    };
    let expected_authenticity = if secrets.is_empty() {
        Authenticity::UnsignedDevMode
    } else {
        Authenticity::Signed
    };
    prop_assert_eq!(verified.authenticity, expected_authenticity);
    match segment::parse(&verified) {
        Ok(parsed) => {
            // Whatever parsed is JSON: one event, or one per element of a batch (an event or set aside). JSON
            // text, read without `Value`'s nesting limit: a batch element nested too deep to read is set aside
            // alone, not the batch (the route refuses such nesting earlier, at MAX_JSON_DEPTH).
            let raw: &RawValue = serde_json::from_slice(body)
                .map_err(|e| TestCaseError::fail(format!("parsed a body that is not JSON: {e}")))?;
            let expected = match serde_json::from_str::<Vec<&RawValue>>(raw.get()) {
                Ok(elements) => elements.len(),
                Err(_) => 1,
            };
            prop_assert_eq!(parsed.events.len() + parsed.unusable.len(), expected);
            for part in &parsed.unusable {
                prop_assert!(!part.refusal.reason().is_empty());
                prop_assert!(part.id.starts_with("content:"));
            }
            for e in &parsed.events {
                prop_assert_eq!(e.source, Source::Segment);
                prop_assert!(!e.id.is_empty());
                prop_assert!(e.context().contains_key("payload"));
            }
        }
        Err(e) => prop_assert!(
            matches!(e, RejectReason::BadRequest(_)),
            "segment parse: {e:?}"
        ),
    }
    Ok(true)
}

/// Customer.io verify + parse on `body`; every answer must be well-formed. Returns whether verify accepted it.
fn check_customerio(
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[Secret],
    unsigned_ok: bool,
    tolerance: Duration,
    now: u64,
) -> Result<bool, TestCaseError> {
    let now = UNIX_EPOCH + Duration::from_secs(now);
    let verified = match customerio::verify(headers, body, secrets, unsigned_ok, tolerance, now) {
        Ok(v) => v,
        Err(e) => {
            prop_assert!(
                matches!(e, RejectReason::Unauthorized(_)),
                "customerio verify refuses only as unauthorized: {e:?}"
            );
            prop_assert!(!(secrets.is_empty() && unsigned_ok));
            return Ok(false);
        }
    };
    // Nothing verified is refused, whatever it holds: an event comes only from a JSON object, and anything
    // else is kept, as received, as unprocessable.
    let is_object = matches!(serde_json::from_slice::<Value>(body), Ok(Value::Object(_)));
    match customerio::parse(&verified) {
        customerio::Parsed::Event(e) => {
            prop_assert!(is_object, "an event from a body that is not an object");
            prop_assert_eq!(e.source, Source::CustomerIo);
            prop_assert!(!e.id.is_empty());
        }
        customerio::Parsed::Unprocessable(part) => {
            prop_assert_eq!(&part.raw, &String::from_utf8_lossy(body));
            prop_assert!(!part.refusal.reason().is_empty());
        }
    }
    Ok(true)
}

fn secret() -> BoxedStrategy<Secret> {
    prop_oneof!["[a-zA-Z0-9]{1,40}", any::<String>()]
        .prop_map(Secret::new)
        .boxed()
}

/// The signing secret among others (rotation), at any position.
fn secrets() -> BoxedStrategy<(Secret, Vec<Secret>)> {
    (secret(), vec(secret(), 0..3), any::<Index>())
        .prop_map(|(signing, mut others, at)| {
            others.insert(at.index(others.len() + 1), Secret::new(signing.expose()));
            (signing, others)
        })
        .boxed()
}

fn seg_headers(sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        segment::SIGNATURE_HEADER,
        HeaderValue::from_str(sig).expect("a valid header value"),
    );
    h
}

fn cio_headers(sig: &[u8], stamp: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        customerio::SIGNATURE_HEADER,
        HeaderValue::from_bytes(sig).expect("a valid header value"),
    );
    h.insert(
        customerio::TIMESTAMP_HEADER,
        HeaderValue::from_bytes(stamp).expect("a valid header value"),
    );
    h
}

/// A byte a client can put in a header value (`HeaderValue::from_bytes` accepts it).
fn header_byte() -> BoxedStrategy<u8> {
    prop_oneof![0x20u8..=0x7e, 0x80u8..=0xff, Just(b'\t')].boxed()
}

/// Replaces `sig[i]` with `b`, unless `b` is the same hex digit (in either case): then it is no change.
fn flip_hex(sig: &str, i: Index, b: u8) -> Option<Vec<u8>> {
    let mut bytes = sig.as_bytes().to_vec();
    let i = i.index(bytes.len());
    if bytes[i].eq_ignore_ascii_case(&b) {
        return None;
    }
    bytes[i] = b;
    Some(bytes)
}

// ---------------------------------------------------------------------------------------------------------
// 1. Nothing panics
// ---------------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1500))]

    /// Any body, unsigned (dev mode): both sources answer with an event or a 400, never a panic.
    #[test]
    fn any_body_is_answered_in_dev_mode(body in hostile_body(), now in FAR_PAST..FAR_FUTURE) {
        let accepted = check_segment(&HeaderMap::new(), &body, &[], true)?;
        prop_assert_eq!(accepted, segment_json_ok(&body));
        let accepted = check_customerio(&HeaderMap::new(), &body, &[], true, Duration::ZERO, now)?;
        prop_assert!(accepted);
        // With no secret outside dev mode, nothing gets in.
        prop_assert_eq!(
            segment::verify(&HeaderMap::new(), &body, &[], false).err(),
            Some(RejectReason::Unauthorized("no secret configured"))
        );
        prop_assert_eq!(
            customerio::verify(&HeaderMap::new(), &body, &[], false, Duration::ZERO, SystemTime::now()).err(),
            Some(RejectReason::Unauthorized("no secret configured"))
        );
    }

    /// Any body with a secret set and any headers: verified only with the right signature (and for
    /// Customer.io the right, fresh timestamp), and whatever gets through is parsed without a panic.
    #[test]
    fn any_body_with_any_headers_is_answered(
        body in hostile_body(),
        (signing, secrets) in secrets(),
        seg_sig in sig(),
        cio_sig in sig(),
        stamp in stamp(),
        ts in FAR_PAST..FAR_FUTURE,
        skew in -1000i64..1000,
        tolerance in prop_oneof![Just(0u64), 1u64..600],
    ) {
        let mut headers = HeaderMap::new();
        let right = add_sig(&mut headers, segment::SIGNATURE_HEADER, &seg_sig, &sign_sha1(&signing, &body));
        let accepted = check_segment(&headers, &body, &secrets, false)?;
        if accepted {
            prop_assert!(right, "a Segment body verified without its signature");
        }
        // Signed as a whole, any JSON gets through verify; unsigned or wrongly signed, nothing does.
        prop_assert_eq!(accepted, right && segment_json_ok(&body));

        let mut headers = HeaderMap::new();
        let mut right = add_sig(&mut headers, customerio::SIGNATURE_HEADER, &cio_sig, &customerio::sign(&signing, ts, &body));
        match &stamp {
            Stamp::Absent => right = false,
            Stamp::Raw(bytes) => {
                append(&mut headers, customerio::TIMESTAMP_HEADER, bytes);
                right &= bytes.trim_ascii() == ts.to_string().as_bytes()
                    && HeaderValue::from_bytes(bytes).is_ok();
            }
            Stamp::Number(n) => {
                append(&mut headers, customerio::TIMESTAMP_HEADER, n.as_bytes());
                right &= n.trim() == ts.to_string();
            }
            Stamp::Correct { twice } => {
                append(&mut headers, customerio::TIMESTAMP_HEADER, ts.to_string().as_bytes());
                if *twice {
                    append(&mut headers, customerio::TIMESTAMP_HEADER, ts.to_string().as_bytes());
                }
                right &= !twice;
            }
        }
        let now = ts.saturating_add_signed(skew).min(FAR_FUTURE);
        let fresh = tolerance == 0 || now.abs_diff(ts) <= tolerance;
        let accepted = check_customerio(&headers, &body, &secrets, false, Duration::from_secs(tolerance), now)?;
        prop_assert_eq!(accepted, right && fresh, "right signature: {}, fresh: {}", right, fresh);
    }
}

// ---------------------------------------------------------------------------------------------------------
// 2. Signed valid Segment events verify and parse into the right events
// ---------------------------------------------------------------------------------------------------------

fn check_event(got: &Event, want: &SegmentEvent, raw: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.source, Source::Segment);
    prop_assert_eq!(&got.name, &want.name);
    prop_assert_eq!(&got.kind, &want.kind);
    prop_assert_eq!(&got.id, &want.id);
    prop_assert_eq!(got.dedupe_key(), format!("segment:{}", want.id));
    prop_assert_eq!(&got.user_id, &want.user_id);
    prop_assert_eq!(&got.raw, raw);
    prop_assert_eq!(&got.context()["payload"], &want.value);
    prop_assert_eq!(
        &got.context()["properties"],
        &Value::Object(want.properties.clone().unwrap_or_default())
    );
    prop_assert_eq!(&got.context()["event"], &Value::from(want.name.clone()));
    prop_assert_eq!(&got.context()["message_id"], &Value::from(want.id.clone()));
    Ok(())
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn a_signed_segment_event_verifies_and_parses(
        event in segment_event(),
        (signing, secrets) in secrets(),
        pretty in any::<bool>(),
        lead in "[ \t\r\n]{0,3}",
        trail in "[ \t\r\n]{0,3}",
    ) {
        let json = if pretty {
            serde_json::to_string_pretty(&event.value)
        } else {
            serde_json::to_string(&event.value)
        }.unwrap();
        let body = format!("{lead}{json}{trail}");
        let sig = sign_sha1(&signing, body.as_bytes());
        prop_assert_eq!(sig.len(), 40);
        prop_assert!(sig.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

        let verified = segment::verify(&seg_headers(&sig), body.as_bytes(), &secrets, false)
            .map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
        prop_assert_eq!(verified.authenticity, Authenticity::Signed);
        let events = segment::parse(&verified).map_err(|e| TestCaseError::fail(format!("parse: {e}")))?.events;
        prop_assert_eq!(events.len(), 1);
        check_event(&events[0], &event, &json)?;

        // The same bytes, unsigned in dev mode, give the same event.
        let dev = segment::parse(&segment::verify(&HeaderMap::new(), body.as_bytes(), &[], true).unwrap()).unwrap().events;
        prop_assert_eq!(&dev[0].id, &events[0].id);
        prop_assert_eq!(&dev[0].context(), &events[0].context());
    }

}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn a_signed_segment_batch_yields_its_events_in_order(
        events in vec(segment_event(), 1..8),
        (signing, secrets) in secrets(),
        over_whole_body in any::<bool>(),
    ) {
        let values: Vec<Value> = events.iter().map(|e| e.value.clone()).collect();
        let body = serde_json::to_string(&values).unwrap();
        let first = serde_json::to_string(&values[0]).unwrap();
        // Segment signs the first element's bytes; a signature over the whole array is accepted too.
        let signed = if over_whole_body { &body } else { &first };
        let sig = sign_sha1(&signing, signed.as_bytes());

        let verified = segment::verify(&seg_headers(&sig), body.as_bytes(), &secrets, false)
            .map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
        prop_assert_eq!(verified.authenticity, Authenticity::Signed);
        let parsed = segment::parse(&verified).map_err(|e| TestCaseError::fail(format!("parse: {e}")))?;
        prop_assert!(parsed.unusable.is_empty());
        prop_assert_eq!(parsed.events.len(), events.len());
        for (i, (got, want)) in parsed.events.iter().zip(&events).enumerate() {
            let raw = serde_json::to_string(&values[i]).unwrap();
            check_event(got, want, &raw)?;
        }
    }

}

proptest! {
    #![proptest_config(config(1000))]

    /// The signature helpers agree with each other: what `sign_*` makes, `read_hex_header` reads and
    /// `sha*_matches` accepts, under any secret of a rotation list and for any split of the message.
    #[test]
    fn the_signature_helpers_agree(
        message in vec(any::<u8>(), 0..256),
        split in any::<Index>(),
        (signing, secrets) in secrets(),
        other in secret(),
    ) {
        let sha1 = sign_sha1(&signing, &message);
        let digest = match read_hex_header(&seg_headers(&sha1.to_uppercase()), "x-signature", 20) {
            HeaderSignature::Digest(d) => d,
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert!(sha1_matches(&secrets, &message, &digest));
        prop_assert_eq!(sha1_matches(&[Secret::new(other.expose())], &message, &digest), other.expose() == signing.expose());

        let at = split.index(message.len() + 1);
        let (a, b) = message.split_at(at);
        let sha256 = sign_sha256(&signing, &[a, b]);
        prop_assert_eq!(&sha256, &sign_sha256(&signing, &[&message]));
        let digest = hex::decode(&sha256).unwrap();
        prop_assert!(sha256_matches(&secrets, &[a, b], &digest));
        prop_assert!(sha256_matches(&secrets, &[&message], &digest));
        prop_assert_eq!(
            read_hex_header(&seg_headers(&sha256), "x-signature", 20),
            HeaderSignature::Malformed
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// 3. One flipped byte is never accepted
// ---------------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn a_flipped_byte_of_a_signed_segment_body_is_refused(
        event in segment_event(),
        secret in secret(),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        let body = serde_json::to_vec(&event.value).unwrap();
        let sig = sign_sha1(&secret, &body);
        let headers = seg_headers(&sig);
        prop_assert!(segment::verify(&headers, &body, std::slice::from_ref(&secret), false).is_ok());

        let mut forged = body.clone();
        let i = at.index(forged.len());
        forged[i] ^= mask;
        let err = segment::verify(&headers, &forged, std::slice::from_ref(&secret), false)
            .err()
            .ok_or_else(|| TestCaseError::fail("a forged body verified"))?;
        // Also when the flip turned it into a batch (`{` to `[`): the signature is checked before the
        // structure is read, and neither the whole body nor a first element carries it.
        prop_assert_eq!(err, RejectReason::Unauthorized("X-Signature mismatch"));
    }

    #[test]
    fn a_flipped_byte_in_the_first_element_of_a_signed_batch_is_refused(
        events in vec(segment_event(), 1..4),
        secret in secret(),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        let values: Vec<Value> = events.into_iter().map(|e| e.value).collect();
        let body = serde_json::to_vec(&values).unwrap();
        let first = serde_json::to_vec(&values[0]).unwrap();
        let headers = seg_headers(&sign_sha1(&secret, &first));
        prop_assert!(segment::verify(&headers, &body, std::slice::from_ref(&secret), false).is_ok());

        let mut forged = body.clone();
        // The first element is body[1..1 + first.len()].
        let i = 1 + at.index(first.len());
        forged[i] ^= mask;
        let err = segment::verify(&headers, &forged, std::slice::from_ref(&secret), false)
            .err()
            .ok_or_else(|| TestCaseError::fail("a forged batch verified"))?;
        // Malformed or not, the changed first element no longer carries the signature.
        prop_assert_eq!(err, RejectReason::Unauthorized("X-Signature mismatch"));
    }

    #[test]
    fn a_flipped_digit_of_a_segment_signature_is_refused(
        batch in any::<bool>(),
        events in vec(segment_event(), 1..3),
        secret in secret(),
        at in any::<Index>(),
        b in header_byte(),
    ) {
        let values: Vec<Value> = events.into_iter().map(|e| e.value).collect();
        let body = if batch {
            serde_json::to_vec(&values).unwrap()
        } else {
            serde_json::to_vec(&values[0]).unwrap()
        };
        let sig = sign_sha1(&secret, &serde_json::to_vec(&values[0]).unwrap());
        let Some(forged) = flip_hex(&sig, at, b) else {
            return Ok(()); // the same hex digit in the other case carries the same bits
        };
        let mut headers = HeaderMap::new();
        headers.insert(segment::SIGNATURE_HEADER, HeaderValue::from_bytes(&forged).unwrap());
        let err = segment::verify(&headers, &body, std::slice::from_ref(&secret), false)
            .err()
            .ok_or_else(|| TestCaseError::fail("a forged signature verified"))?;
        prop_assert!(matches!(err, RejectReason::Unauthorized(_)), "{err:?}");
    }

}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn a_changed_customerio_body_signature_or_timestamp_is_refused(
        body in prop_oneof![
            customerio_object().prop_map(|o| serde_json::to_vec(&o).unwrap()),
            vec(any::<u8>(), 0..256),
        ],
        secret in secret(),
        ts in FAR_PAST..FAR_FUTURE,
        tolerance in prop_oneof![Just(0u64), 1u64..600],
        at in any::<Index>(),
        mask in 1u8..=255,
        b in header_byte(),
        other_stamp in prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            "[+-]?0?[0-9]{1,20}",
            vec(header_byte(), 0..24).prop_map(|b| b.into_iter().map(char::from).collect::<String>()),
        ],
    ) {
        let secrets = std::slice::from_ref(&secret);
        let tol = Duration::from_secs(tolerance);
        let now = UNIX_EPOCH + Duration::from_secs(ts);
        let sig = customerio::sign(&secret, ts, &body);
        let stamp = ts.to_string();
        prop_assert!(customerio::verify(&cio_headers(sig.as_bytes(), stamp.as_bytes()), &body, secrets, false, tol, now).is_ok());

        if !body.is_empty() {
            let mut forged = body.clone();
            let i = at.index(forged.len());
            forged[i] ^= mask;
            let got = customerio::verify(&cio_headers(sig.as_bytes(), stamp.as_bytes()), &forged, secrets, false, tol, now);
            prop_assert_eq!(
                got.err(),
                Some(RejectReason::Unauthorized("X-CIO-Signature mismatch")),
                "body byte {} flipped",
                i
            );
        }

        if let Some(forged) = flip_hex(&sig, at, b) {
            let got = customerio::verify(&cio_headers(&forged, stamp.as_bytes()), &body, secrets, false, tol, now);
            let err = got.err().ok_or_else(|| TestCaseError::fail("a forged signature verified"))?;
            prop_assert!(matches!(err, RejectReason::Unauthorized(_)), "{err:?}");
        }

        // Any other timestamp (a leading zero or a sign included) breaks the signature, fresh or not.
        if other_stamp.trim() != stamp && HeaderValue::from_str(&other_stamp).is_ok() {
            let got = customerio::verify(&cio_headers(sig.as_bytes(), other_stamp.as_bytes()), &body, secrets, false, tol, now);
            let err = got.err().ok_or_else(|| TestCaseError::fail("a changed timestamp verified"))?;
            prop_assert!(matches!(err, RejectReason::Unauthorized(_)), "{err:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// 4. A signed Customer.io JSON object is never refused
// ---------------------------------------------------------------------------------------------------------

/// What the Customer.io parser must make of `obj`: (object type, metric), when it is an event.
fn expected_cio_kind(obj: &Map<String, Value>) -> Option<(String, String)> {
    let text = |k: &str| match obj.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    if let Some(metric) = text("metric") {
        let kind = text("object_type")
            .or_else(|| text("object_type_type"))
            .unwrap_or_else(|| "unknown".into());
        return Some((kind, metric));
    }
    let legacy = text("event_type")?;
    Some(
        customerio::OBJECT_TYPES
            .iter()
            .find_map(|t| {
                legacy
                    .strip_prefix(t)
                    .and_then(|r| r.strip_prefix('_'))
                    .map(|m| (t.to_string(), m.to_string()))
            })
            .unwrap_or_else(|| ("unknown".into(), legacy)),
    )
}

/// Whom the parser must look the person up as: `identifiers.id`, `customer_id`, an email, `cio_id`.
fn expected_cio_user(obj: &Map<String, Value>) -> Option<String> {
    let data = obj.get("data").and_then(Value::as_object);
    let field = |k: &str| data.and_then(|d| d.get(k));
    let ident = |k: &str| {
        expected_id(
            field("identifiers")
                .and_then(Value::as_object)
                .and_then(|i| i.get(k)),
        )
    };
    let text = |k: &str| match field(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    ident("id")
        .or_else(|| expected_id(field("customer_id")))
        .or_else(|| ident("email"))
        .or_else(|| text("email_address"))
        .or_else(|| ident("cio_id"))
}

proptest! {
    #![proptest_config(config(800))]

    #[test]
    fn a_signed_customerio_object_is_never_refused(
        obj in customerio_object(),
        (signing, secrets) in secrets(),
        ts in 1_000_000_000u64..4_000_000_000,
        pretty in any::<bool>(),
    ) {
        let body = if pretty { serde_json::to_vec_pretty(&obj) } else { serde_json::to_vec(&obj) }.unwrap();
        let headers = cio_headers(customerio::sign(&signing, ts, &body).as_bytes(), ts.to_string().as_bytes());
        let now = UNIX_EPOCH + Duration::from_secs(ts + 10);
        let verified = customerio::verify(&headers, &body, &secrets, false, Duration::from_secs(300), now)
            .map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
        prop_assert_eq!(verified.authenticity, Authenticity::Signed);
        let parsed = customerio::parse(&verified);
        match (parsed, expected_cio_kind(&obj)) {
            (customerio::Parsed::Event(e), Some((kind, metric))) => {
                prop_assert_eq!(&e.kind, &kind);
                prop_assert_eq!(&e.name, &metric);
                prop_assert_eq!(&e.context()["metric"], &Value::from(metric));
                match expected_id(obj.get("event_id")) {
                    Some(id) => prop_assert_eq!(&e.id, &id),
                    None => prop_assert!(e.id.starts_with("content:"), "{}", e.id),
                }
                prop_assert_eq!(&e.user_id, &expected_cio_user(&obj));
                prop_assert_eq!(&e.context()["payload"], &Value::Object(obj.clone()));
                prop_assert_eq!(e.raw.as_bytes(), &body[..]);
            }
            (customerio::Parsed::Unprocessable(_), None) => {}
            (got, want) => return Err(TestCaseError::fail(format!("got {got:?}, expected {want:?}"))),
        }
    }

}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn a_signed_customerio_body_that_is_not_an_object_is_kept_as_unprocessable(
        value in json_value().prop_filter("not an object", |v| !v.is_object()),
        secret in secret(),
        ts in 1_000_000_000u64..4_000_000_000,
    ) {
        let body = serde_json::to_vec(&value).unwrap();
        let headers = cio_headers(customerio::sign(&secret, ts, &body).as_bytes(), ts.to_string().as_bytes());
        let verified = customerio::verify(&headers, &body, std::slice::from_ref(&secret), false, Duration::ZERO, SystemTime::now())
            .map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
        let customerio::Parsed::Unprocessable(part) = customerio::parse(&verified) else {
            return Err(TestCaseError::fail("a non-object parsed into an event"));
        };
        prop_assert_eq!(part.raw.as_bytes(), &body[..]);
        prop_assert!(part.refusal.reason().contains("expected one JSON object"), "{:?}", part.refusal);
    }
}

// ---------------------------------------------------------------------------------------------------------
// 5. The dedupe memory
// ---------------------------------------------------------------------------------------------------------

fn dedupe_keys() -> BoxedStrategy<Vec<String>> {
    prop_oneof![
        vec("[a-d]{0,2}", 0..300),
        vec("(segment|customerio):[a-z0-9]{0,3}", 0..300),
        vec(any::<String>(), 0..100),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(200))]

    /// With room for every key: true exactly once per distinct key, and every key remembered.
    #[test]
    fn dedupe_says_first_exactly_once_per_key(keys in dedupe_keys(), spare in 1usize..50) {
        let distinct: HashSet<&String> = keys.iter().collect();
        let memory = DedupeMemory::new(Duration::from_secs(3600), distinct.len() + spare);
        let mut seen = HashSet::new();
        for k in &keys {
            prop_assert_eq!(memory.first_sighting(k), seen.insert(k), "key {:?}", k);
        }
        prop_assert_eq!(memory.len(), distinct.len());
        for k in &distinct {
            prop_assert!(!memory.first_sighting(k));
        }
    }

    /// With less room than keys: never more than the capacity, and the oldest are forgotten first (a FIFO
    /// of first sightings, checked call by call).
    #[test]
    fn dedupe_never_holds_more_than_its_capacity(keys in dedupe_keys(), capacity in 1usize..40) {
        let memory = DedupeMemory::new(Duration::from_secs(3600), capacity);
        let mut model: VecDeque<&String> = VecDeque::new();
        for k in &keys {
            let first = !model.contains(&k);
            prop_assert_eq!(memory.first_sighting(k), first, "key {:?}, remembered {:?}", k, model);
            if first {
                model.push_back(k);
                if model.len() > capacity {
                    model.pop_front();
                }
            }
            prop_assert!(memory.len() <= capacity, "{} > {}", memory.len(), capacity);
            prop_assert_eq!(memory.len(), model.len());
        }
    }

    /// `forget` mixed in: still never more than the capacity, and never a duplicate claimed for a key that
    /// has not been sighted as new since it was last forgotten (that would drop a real event).
    #[test]
    fn dedupe_with_forgets_never_claims_a_false_duplicate(
        ops in vec((any::<bool>(), "[a-f]"), 0..300),
        capacity in 1usize..10,
    ) {
        let memory = DedupeMemory::new(Duration::from_secs(3600), capacity);
        let mut owned: HashSet<&String> = HashSet::new();
        for (forget, k) in &ops {
            if *forget {
                memory.forget(k);
                owned.remove(k);
            } else if memory.first_sighting(k) {
                owned.insert(k);
            } else {
                prop_assert!(owned.contains(k), "{:?} claimed a duplicate", k);
            }
            prop_assert!(memory.len() <= capacity, "{} > {}", memory.len(), capacity);
        }
    }
}

/// With keys forgotten along the way, the memory still holds exactly the most recent keys up to its
/// capacity (first in, first out). Once failed: a forgotten key's stale queue slot counted against the
/// capacity (minimal case, capacity 4: `a`, `e`, forget `e`, `c`, `d`, `b` evicted `a`).
#[test]
fn dedupe_with_forgets_evicts_only_past_the_capacity() {
    // The smallest known case, then the property.
    let d = DedupeMemory::new(Duration::from_secs(3600), 4);
    for k in ["a", "e"] {
        assert!(d.first_sighting(k));
    }
    d.forget("e");
    for k in ["c", "d", "b"] {
        assert!(d.first_sighting(k));
    }
    assert_eq!(d.len(), 4, "a, c, d, b fit in a capacity of 4");
    assert!(
        !d.first_sighting("a"),
        "a re-delivery of `a` is a duplicate"
    );

    let mut runner = proptest::test_runner::TestRunner::new(config(256));
    let strategy = (vec((any::<bool>(), "[a-f]"), 0..300), 1usize..10);
    let result = runner.run(&strategy, |(ops, capacity)| {
        let memory = DedupeMemory::new(Duration::from_secs(3600), capacity);
        let mut model: VecDeque<&String> = VecDeque::new();
        for (forget, k) in &ops {
            if *forget {
                memory.forget(k);
                model.retain(|m| *m != k);
                continue;
            }
            let first = !model.contains(&k);
            prop_assert_eq!(
                memory.first_sighting(k),
                first,
                "key {:?}, remembered {:?}",
                k,
                model
            );
            if first {
                model.push_back(k);
                if model.len() > capacity {
                    model.pop_front();
                }
            }
            prop_assert_eq!(memory.len(), model.len());
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
