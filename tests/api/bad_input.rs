//! The bad-input corpus (`tests/fixtures/bad/cases.toml`): every case is sent to the running server and must
//! get its documented status, the server must stay up (`GET /healthz` 200 after every case), and no case may
//! cause a call to Mavera or Customer.io.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use mavera_triggers::{
    config::Secret,
    sources::{
        customerio,
        signature::{sign_sha1, sign_sha256},
    },
};
use serde::Deserialize;
use serde_json::{value::RawValue, Value};
use wiremock::{matchers::any, Mock, ResponseTemplate};

use crate::helpers::*;

/// Keyed with this instead of the route's secret: the `wrong_secret` variant.
const WRONG_SECRET: &str = "not-the-configured-secret";
/// How far from now the `stale_timestamp` / `future_timestamp` variants are (the tolerance is 300 s).
const CLOCK_SKEW_SECS: u64 = 600;
/// The longest a case may take to be answered before it counts as a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// The corpus must stay at least this big.
const MIN_CASES: usize = 40;

#[derive(Debug, Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    route: String,
    body_file: Option<String>,
    generate: Option<String>,
    sign: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    expect: u16,
    /// For a 200: how many parts of the request were not usable events (the answer's `refused`); 0 unless given.
    #[serde(default)]
    refused: u64,
    /// For a 4xx: a phrase the `error` reason must hold (it names the real problem).
    error_contains: Option<String>,
    why: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad")
}

fn load_manifest() -> Vec<Case> {
    let path = corpus_dir().join("cases.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let manifest: Manifest = toml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut names = BTreeSet::new();
    for case in &manifest.cases {
        assert!(
            names.insert(case.name.as_str()),
            "duplicate case name {}",
            case.name
        );
        assert!(
            case.route == "/segment" || case.route == "/customerio",
            "{}: route must be /segment or /customerio, not {}",
            case.name,
            case.route
        );
        assert!(
            case.body_file.is_some() != case.generate.is_some(),
            "{}: give exactly one of body_file and generate",
            case.name
        );
        assert!(!case.why.trim().is_empty(), "{}: `why` is empty", case.name);
        assert!(
            (200..600).contains(&case.expect),
            "{}: expect {} is not an HTTP status",
            case.name,
            case.expect
        );
    }
    assert!(
        manifest.cases.len() >= MIN_CASES,
        "the corpus has {} cases, fewer than {MIN_CASES}",
        manifest.cases.len()
    );
    manifest.cases
}

/// The body of a case: a fixture file as bytes (it may be invalid UTF-8), or a big input built here.
fn body_of(case: &Case) -> Vec<u8> {
    if let Some(file) = &case.body_file {
        let path = corpus_dir().join(file);
        return std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {path:?}: {e}", case.name));
    }
    let spec = case.generate.as_deref().expect("checked by load_manifest");
    let (kind, n) = spec
        .split_once(':')
        .and_then(|(k, n)| Some((k, n.parse::<usize>().ok()?)))
        .unwrap_or_else(|| panic!("{}: generate `{spec}` is not `kind:N`", case.name));
    let segment = case.route == "/segment";
    match kind {
        // [[[[…]]]]: N arrays deep.
        "deep_array" => {
            let mut body = "[".repeat(n);
            body.push_str(&"]".repeat(n));
            body.into_bytes()
        }
        // An otherwise valid unmatched event whose properties (or data) nest N objects deep.
        "deep_object" => {
            let head = if segment {
                r#"{"type":"track","event":"bad_input_probe","messageId":"bi-deep-object","properties":"#
            } else {
                r#"{"metric":"bad_input_probe","event_id":"bi-deep-object","data":"#
            };
            let mut body = String::from(head);
            body.push_str(&r#"{"a":"#.repeat(n - 1));
            body.push_str("{}");
            body.push_str(&"}".repeat(n - 1));
            body.push('}');
            body.into_bytes()
        }
        // An otherwise valid unmatched event padded with one long string to exactly N bytes.
        "big_body" => {
            let head = if segment {
                r#"{"type":"track","event":"bad_input_probe","messageId":"bi-big-body","properties":{"padding":""#
            } else {
                r#"{"metric":"bad_input_probe","event_id":"bi-big-body","data":{"padding":""#
            };
            let tail = r#""}}"#;
            let pad = n
                .checked_sub(head.len() + tail.len())
                .unwrap_or_else(|| panic!("{}: big_body:{n} is too small", case.name));
            let mut body = String::with_capacity(n);
            body.push_str(head);
            body.push_str(&"x".repeat(pad));
            body.push_str(tail);
            assert_eq!(body.len(), n);
            body.into_bytes()
        }
        // A Segment batch of N small unmatched track events.
        "segment_batch" => {
            assert!(segment, "{}: segment_batch is for /segment", case.name);
            let events: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        r#"{{"type":"track","event":"bad_input_probe","messageId":"bi-batch-{i}","userId":"u{i}"}}"#
                    )
                })
                .collect();
            format!("[{}]", events.join(",")).into_bytes()
        }
        other => panic!("{}: unknown generator `{other}`", case.name),
    }
}

/// What Segment signs: the raw bytes of the first element of a JSON array, else the whole body. The first
/// element is read on its own, so a batch that breaks after it still has one.
fn segment_signed_bytes(body: &[u8]) -> &[u8] {
    let trimmed = body.trim_ascii_start();
    if let Some(rest) = trimmed.strip_prefix(b"[") {
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<&RawValue>();
        if let Some(Ok(first)) = stream.next() {
            return first.get().as_bytes();
        }
    }
    body
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The same digest in another dress, for the variants both routes share; `None` if `sign` is not one.
fn common_variant(sign: &str, header: &str, good: &str) -> Option<Vec<(String, String)>> {
    let one = |v: String| vec![(header.to_string(), v)];
    Some(match sign {
        "valid" => one(good.to_string()),
        "none" => vec![],
        "uppercase_hex" => one(good.to_uppercase()),
        "base64" => one(base64(&hex::decode(good).expect("hex"))),
        "whitespace_around" => one(format!("  {good} \t")),
        "two_headers" => vec![
            (header.to_string(), good.to_string()),
            (header.to_string(), good.to_string()),
        ],
        "truncated_hex" => one(good[..good.len() - 1].to_string()),
        _ => return None,
    })
}

/// The signature headers of a case.
fn signature_headers(case: &Case, body: &[u8]) -> Vec<(String, String)> {
    let unknown = || -> ! {
        panic!(
            "{}: sign `{}` is not a variant for {}",
            case.name, case.sign, case.route
        )
    };
    if case.route == "/segment" {
        let signed = segment_signed_bytes(body);
        let good = sign_sha1(&Secret::new(SEGMENT_SECRET), signed);
        let header = "x-signature";
        if let Some(headers) = common_variant(&case.sign, header, &good) {
            return headers;
        }
        let value = match case.sign.as_str() {
            "sha256_instead_of_sha1" => sign_sha256(&Secret::new(SEGMENT_SECRET), &[signed]),
            "prefix_sha1=" => format!("sha1={good}"),
            "wrong_secret" => sign_sha1(&Secret::new(WRONG_SECRET), signed),
            _ => unknown(),
        };
        return vec![(header.to_string(), value)];
    }
    let now = unix_now();
    let secret = Secret::new(CIO_SECRET);
    let header = "x-cio-signature";
    let stamp = |ts: u64| ("x-cio-timestamp".to_string(), ts.to_string());
    let good = customerio::sign(&secret, now, body);
    if let Some(mut headers) = common_variant(&case.sign, header, &good) {
        headers.push(stamp(now));
        return headers;
    }
    let signed_at = |ts: u64| {
        vec![
            (header.to_string(), customerio::sign(&secret, ts, body)),
            stamp(ts),
        ]
    };
    match case.sign.as_str() {
        "wrong_secret" => vec![
            (
                header.to_string(),
                customerio::sign(&Secret::new(WRONG_SECRET), now, body),
            ),
            stamp(now),
        ],
        "body_only_cio" => vec![
            (header.to_string(), sign_sha256(&secret, &[body])),
            stamp(now),
        ],
        "stale_timestamp" => signed_at(now - CLOCK_SKEW_SECS),
        "future_timestamp" => signed_at(now + CLOCK_SKEW_SECS),
        "missing_timestamp" => vec![(header.to_string(), good)],
        _ => unknown(),
    }
}

/// Sends one case; `Err` when the server gives no answer (reset, hang).
async fn send(app: &TestApp, case: &Case, body: Vec<u8>) -> Result<(u16, Value), String> {
    let mut request = app
        .http
        .post(format!("{}{}", app.address, case.route))
        .timeout(CASE_TIMEOUT);
    if !case
        .headers
        .keys()
        .any(|k| k.eq_ignore_ascii_case("content-type"))
    {
        request = request.header("content-type", "application/json");
    }
    for (k, v) in &case.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    for (k, v) in signature_headers(case, &body) {
        request = request.header(k, v);
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| format!("no answer: {e:?}"))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| format!("answer {status} with an unreadable body: {e}"))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// What is wrong with an answer, if anything.
fn check_answer(case: &Case, status: u16, body: &Value) -> Option<String> {
    let shown = {
        let s = body.to_string();
        if s.chars().count() > 200 {
            format!("{}…", s.chars().take(200).collect::<String>())
        } else {
            s
        }
    };
    if status != case.expect {
        return Some(format!("expected {}, got {status} {shown}", case.expect));
    }
    if status == 200 {
        if body["triggered"] != 0 || !body["received"].is_u64() {
            return Some(format!(
                "200 but not `{{received, duplicates, triggered: 0, refused}}`: {shown}"
            ));
        }
        if body["refused"] != case.refused {
            return Some(format!("expected refused: {}, got {shown}", case.refused));
        }
    } else if body["error"].as_str().is_none_or(|e| e.trim().is_empty()) {
        return Some(format!(
            "{status} without a non-empty `error` string: {shown}"
        ));
    }
    if let Some(phrase) = &case.error_contains {
        if !body["error"]
            .as_str()
            .is_some_and(|e| e.contains(phrase.as_str()))
        {
            return Some(format!("the reason does not say `{phrase}`: {shown}"));
        }
    }
    None
}

async fn healthy(app: &TestApp) -> Result<(), String> {
    let response = app
        .http
        .get(format!("{}/healthz", app.address))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("GET /healthz: no answer: {e:?}"))?;
    match response.status().as_u16() {
        200 => Ok(()),
        other => Err(format!("GET /healthz answered {other}")),
    }
}

#[tokio::test]
async fn every_bad_input_gets_its_documented_answer_and_no_upstream_call() {
    let cases = load_manifest();
    let app = spawn_app().await;
    for upstream in [&app.mavera, &app.cio] {
        Mock::given(any())
            .respond_with(ResponseTemplate::new(500))
            .expect(0)
            .named("no upstream call for bad input")
            .mount(upstream)
            .await;
    }

    // BAD_INPUT_VERBOSE=1 prints every answer (run with --nocapture).
    let verbose = std::env::var_os("BAD_INPUT_VERBOSE").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let body = body_of(case);
        match send(&app, case, body).await {
            Ok((status, answer)) => {
                if verbose {
                    println!("{:<32} {} → {status} {answer}", case.name, case.route);
                }
                if let Some(problem) = check_answer(case, status, &answer) {
                    failures.push(format!("{}: {problem}\n    rule: {}", case.name, case.why));
                }
            }
            Err(problem) => {
                failures.push(format!("{}: {problem}\n    rule: {}", case.name, case.why))
            }
        }
        if let Err(problem) = healthy(&app).await {
            failures.push(format!(
                "{}: server down after this case: {problem}",
                case.name
            ));
            break;
        }
    }

    // Anything a case queued would show up as a job (recorded before the answer), then as an upstream
    // request once drained.
    app.settle().await;
    let jobs = app.jobs().await;
    if !jobs.is_empty() {
        failures.push(format!("{} job(s) were queued by bad input", jobs.len()));
    }
    let mut upstream_calls = 0;
    for (name, server) in [("Mavera", &app.mavera), ("Customer.io", &app.cio)] {
        let requests = server.received_requests().await.unwrap_or_default();
        for r in &requests {
            failures.push(format!("{name} was called: {} {}", r.method, r.url.path()));
        }
        upstream_calls += requests.len();
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad-input cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    app.mavera.verify().await;
    app.cio.verify().await;
    println!(
        "bad input: {} cases, all answered as documented, server up, {upstream_calls} upstream calls",
        cases.len()
    );
}
