//! Every genuine event accepted, exactly as Segment and Customer.io send it (issue #13): Segment's documented
//! batch sizes, partial batches, lone surrogates, Customer.io bodies that are not events, identities, and the
//! memory bound on large bodies that arrive before any signature is checked.

use std::time::Duration;

use mavera_triggers::{
    config::Secret,
    jobs::events::{EventFilter, EventRow, StatusFilter},
    sources::{signature::sign_sha1, Source},
};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use wiremock::{
    matchers::{method, path},
    Mock, ResponseTemplate,
};

use crate::helpers::*;

const TOKEN: &str = "fidelity-admin-token";

/// The shipped triggers, with the console on.
async fn app_with_console() -> TestApp {
    spawn_with(Options {
        tweak: Box::new(|s| s.access.admin_token = Some(Secret::new(TOKEN))),
        ..Options::default()
    })
    .await
}

/// A console page's HTML, as a script reads it (`Authorization: Bearer`).
async fn console_page(app: &TestApp, page: &str) -> String {
    let response = app.get_as(page, TOKEN).await;
    assert_eq!(response.status(), 200, "{page}");
    response.text().await.unwrap()
}

/// The event log's rows for a filter, once it holds at least `count` of them (events no trigger matched are
/// written to it just after the answer).
async fn rows(app: &TestApp, filter: EventFilter, count: usize) -> Vec<EventRow> {
    let listed = || async {
        app.state
            .jobs
            .store
            .events(&filter, 500)
            .await
            .unwrap()
            .rows
    };
    wait_until(
        &format!("{count} rows in the event log for {filter:?}"),
        || async { listed().await.len() >= count },
    )
    .await;
    listed().await
}

fn fixture(dir: &str, file: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{dir}/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A Segment batch of `count` copies of a sample, each with its own `messageId` and the event renamed so that
/// no shipped trigger matches it.
fn batch_of(sample: &str, count: usize) -> String {
    let template: Value = serde_json::from_str(&fixture("segment", sample)).unwrap();
    let events: Vec<Value> = (0..count)
        .map(|i| {
            let mut e = template.clone();
            e["messageId"] = json!(format!("{sample}-{i}"));
            e["event"] = json!("doc_sample_event");
            e
        })
        .collect();
    serde_json::to_string(&events).unwrap()
}

/// Starts a Segment request whose headers promise `length` body bytes and sends only the first of them: the
/// server holds room for the whole body until the request ends.
async fn open_half_sent_body(app: &TestApp, length: usize) -> tokio::net::TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /segment HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nx-signature: 0000000000000000000000000000000000000000\r\n\r\n["
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn bodies_past_the_in_flight_budget_get_503_with_retry_after_and_room_comes_back() {
    let app = spawn_with(Options {
        tweak: Box::new(|s| {
            s.segment.max_body_bytes = 64 * 1024;
            s.intake.max_body_bytes_in_flight = 100 * 1024;
        }),
        ..Options::default()
    })
    .await;
    let event = json!({"type": "track", "event": "bad_input_probe", "messageId": "budget-1", "userId": "u-1"})
        .to_string();
    let held = open_half_sent_body(&app, 64 * 1024).await;
    // The server takes the half-sent body's room as soon as it has read its headers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let response = app
            .post(
                "/segment",
                "x".repeat(40 * 1024),
                &[("x-signature", "00".repeat(20))],
            )
            .await;
        if response.status() == 503 {
            break response;
        }
        assert_eq!(
            response.status(),
            401,
            "room for 40 KiB: the signature decides"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held body never took its room"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(refused.headers()["retry-after"], "5");
    let (_, body) = answer(refused).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("MAX_BODY_BYTES_IN_FLIGHT"),
        "{body}"
    );
    // A small body still fits beside the held one.
    let (status, _) = answer(app.post_segment(&event).await).await;
    assert_eq!(status, 200);
    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let response = app
            .post(
                "/segment",
                "x".repeat(40 * 1024),
                &[("x-signature", "00".repeat(20))],
            )
            .await;
        if response.status() == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed request never gave its room back"
        );
        tokio::task::yield_now().await;
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"webhooks_rejected_total{source="segment",reason="bodies_in_flight"}"#),
        "{metrics}"
    );
}

/// Resident memory of this process, and its peak, in KiB (Linux).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One client of the measurement below: sends the headers and half the body, waits until every client has, then
/// sends the rest. Returns the answer's status (0 when there was none).
async fn half_then_all(
    address: String,
    body: bytes::Bytes,
    everyone_half_sent: std::sync::Arc<tokio::sync::Barrier>,
) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /segment HTTP/1.1\r\nhost: {address}\r\ncontent-length: {}\r\nx-signature: {}\r\nconnection: close\r\n\r\n",
        body.len(),
        "00".repeat(20)
    );
    let half = body.len() / 2;
    let sent = stream.write_all(head.as_bytes()).await.is_ok()
        && stream.write_all(&body[..half]).await.is_ok();
    let mut answer = Vec::new();
    // A request turned away is answered at once, before its body is read.
    let early = tokio::time::timeout(Duration::from_secs(2), stream.read_buf(&mut answer)).await;
    everyone_half_sent.wait().await;
    if sent && !matches!(early, Ok(Ok(n)) if n > 0) {
        let _ = stream.write_all(&body[half..]).await;
        let _ = stream.read_to_end(&mut answer).await;
    }
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The memory bound, measured: 64 clients each send half of a maximum-size unsigned body, so that all 64 are in
/// flight at once, then the rest, with the default limits. Run alone, so that no other test's memory is counted:
/// `cargo test --test api -- --ignored --nocapture rss_while_64_maximum_size_unsigned_bodies_arrive`.
/// `RSS_BUDGET_BYTES` sets another `MAX_BODY_BYTES_IN_FLIGHT`, for comparison (e.g. 1073741824: no bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run alone (see its doc comment); figures go in benches/README.md"]
async fn rss_while_64_maximum_size_unsigned_bodies_arrive() {
    let budget = std::env::var("RSS_BUDGET_BYTES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let app = spawn_with(Options {
        tweak: Box::new(move |s| {
            if let Some(budget) = budget {
                s.intake.max_body_bytes_in_flight = budget;
            }
        }),
        ..Options::default()
    })
    .await;
    let limit = app.state.settings.segment.max_body_bytes;
    let budget = app.state.settings.intake.max_body_bytes_in_flight;
    // One body shared by every client (a `Bytes` is not copied per request): what grows is the server's.
    let body = bytes::Bytes::from(vec![b' '; limit]);
    // Warm up: the allocator's arenas and the store, so that the peak below is the bodies'.
    let _ = app
        .post_segment(r#"{"type":"track","event":"warm","messageId":"w"}"#)
        .await;
    std::fs::write("/proc/self/clear_refs", "5").ok();
    let (before, _) = rss_kib();
    let started = std::time::Instant::now();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let address = app.address.trim_start_matches("http://").to_string();
    let sends: Vec<_> = (0..64)
        .map(|_| {
            tokio::spawn(half_then_all(
                address.clone(),
                body.clone(),
                barrier.clone(),
            ))
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for send in sends {
        *statuses.entry(send.await.unwrap()).or_default() += 1;
    }
    let elapsed = started.elapsed();
    let (after, peak) = rss_kib();
    println!(
        "64 × {limit} B unsigned bodies in flight at once, MAX_BODY_BYTES_IN_FLIGHT = {budget} B: answers {statuses:?} in {elapsed:?}; \
         RSS before {before} KiB, after {after} KiB, peak {peak} KiB (peak growth {} KiB; 64 whole bodies would be {} KiB)",
        peak.saturating_sub(before),
        64 * limit / 1024
    );
    let read = (budget / limit).min(64);
    assert_eq!(
        statuses.get(&401).copied().unwrap_or(0),
        read,
        "as many bodies as the budget holds are read, and refused for their signature: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&503).copied().unwrap_or(0),
        64 - read,
        "the others are turned away before they are read: {statuses:?}"
    );
    let growth = peak.saturating_sub(before) * 1024;
    assert!(
        growth < (3 * budget) as u64,
        "peak RSS grew by {growth} B, more than 3 × the {budget} B budget"
    );
}

// ─── Segment ─────────────────────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn every_spec_type_from_segments_docs_is_accepted_and_read_as_the_spec_says() {
    let app = spawn_app().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/segment");
    let mut expected = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        // The spec's examples share their messageIds: each gets its own, or they would be duplicates.
        let mut sent: Value = serde_json::from_str(&fixture("segment", &file)).unwrap();
        sent["messageId"] = json!(file);
        let body = sent.to_string();
        let (status, answer_body) = answer(app.post_segment(&body).await).await;
        assert_eq!(
            (status, answer_body),
            (
                200,
                json!({"received": 1, "duplicates": 0, "triggered": 0, "refused": 0})
            ),
            "{file}"
        );
        let name = sent["event"].as_str().or(sent["type"].as_str()).unwrap();
        let user = ["userId", "User ID", "anonymousId"]
            .iter()
            .find_map(|k| sent[*k].as_str());
        expected.push((name.to_string(), user.map(str::to_string)));
    }
    let kinds: std::collections::BTreeSet<&str> =
        expected.iter().map(|(name, _)| name.as_str()).collect();
    for kind in ["alias", "delete", "group", "identify", "page", "screen"] {
        assert!(kinds.contains(kind), "a sample of every spec type: {kind}");
    }
    let filter = EventFilter {
        source: Some(Source::Segment),
        ..Default::default()
    };
    let listed = rows(&app, filter, expected.len()).await;
    let mut got: Vec<(String, Option<String>)> = listed
        .iter()
        .map(|r| (r.name.clone(), r.user_id.clone()))
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "each event's name and person, as read");
    assert!(listed.iter().all(|r| r.status == "ignored"));
}

#[tokio::test]
async fn segments_documented_batch_sizes_are_taken_whole() {
    let app = spawn_app().await;
    // 1,000 events carrying every common field (the spec's common-fields example), and 4,000 typical events
    // (the spec's track example): Segment's default and largest Actions batch sizes.
    for (sample, count) in [
        ("segment-common-track.json", 1000),
        ("segment-track.json", 4000),
    ] {
        let batch = batch_of(sample, count);
        assert!(
            batch.len() > 1024 * 1024,
            "{sample}: {} bytes, over the old 1 MiB limit",
            batch.len()
        );
        let (status, body) = answer(app.post_segment(&batch).await).await;
        assert_eq!(
            (status, body),
            (
                200,
                json!({"received": count, "duplicates": 0, "triggered": 0, "refused": 0})
            ),
            "{sample} × {count}"
        );
        // Every event was read with its own id: the same batch again is all duplicates.
        let (status, body) = answer(app.post_segment(&batch).await).await;
        assert_eq!(
            (status, body),
            (
                200,
                json!({"received": count, "duplicates": count, "triggered": 0, "refused": 0})
            ),
            "{sample} × {count}, re-delivered"
        );
    }
}

fn trial(message_id: &str, user: &str) -> Value {
    json!({"type": "track", "event": "trial_started", "messageId": message_id, "userId": user,
           "properties": {"plan": "pro", "source": "google_ads"}})
}

#[tokio::test]
async fn a_batch_with_two_bad_elements_of_ten_runs_the_eight_and_keeps_the_two_with_their_reason() {
    let app = app_with_console().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "per_1", "name": "x"})))
        .expect(8)
        .mount(&app.mavera)
        .await;
    let mut elements: Vec<Value> = (0..10)
        .map(|i| trial(&format!("partial-{i}"), &format!("u-partial-{i}")))
        .collect();
    elements[3] = json!({"type": "track", "messageId": "partial-3", "userId": "u-partial-3"});
    elements[7] = json!({"type": "track", "event": "trial_started", "properties": [1, 2]});
    let batch = serde_json::to_string(&elements).unwrap();

    // A wrong signature still refuses the whole request, before anything is read.
    let first = serde_json::to_string(&elements[0]).unwrap();
    let forged = sign_sha1(&Secret::new("not-the-secret"), first.as_bytes());
    let (status, _) = answer(
        app.post("/segment", batch.clone(), &[("x-signature", forged)])
            .await,
    )
    .await;
    assert_eq!(status, 401);
    assert!(app.jobs().await.is_empty());

    let (status, body) = answer(app.post_segment(&batch).await).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"received": 10, "duplicates": 0, "triggered": 8, "refused": 2})
        )
    );
    let counts = app.settle().await;
    assert_eq!(counts.done, 8);
    app.mavera.verify().await;

    let refused = app
        .state
        .jobs
        .store
        .events(
            &EventFilter {
                status: Some(StatusFilter::Refused),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap()
        .rows;
    let mut seen: Vec<(&str, Option<&str>)> = refused
        .iter()
        .map(|r| (r.name.as_str(), r.user_id.as_deref()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("track", Some("u-partial-3")), ("trial_started", None)]
    );

    // The console lists them as refused, and each one's page says why.
    let list = console_page(&app, "/console/events?status=refused").await;
    assert_eq!(list.matches("badge refused").count(), 2, "{list}");
    for row in &refused {
        let page = console_page(&app, &format!("/console/events/{}", row.id)).await;
        let (element, why) = if row.name == "track" {
            ("batch element 3: a track event needs an ", "event")
        } else {
            ("batch element 7: ", "properties")
        };
        assert!(
            page.contains(element) && page.contains(why),
            "{element}{why}: {page}"
        );
        assert!(page.contains("not a usable event"), "{page}");
    }
    assert!(
        app.logs().lines().any(|l| l.contains("not a usable event")
            && l.contains("who=userId=u-partial-3")
            && l.contains("batch element 3")),
        "the refused element's log line names whom it is about and why"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"webhooks_unusable_total{source="segment",status="refused"} 2"#),
        "{metrics}"
    );
    // Re-sent, the good events are duplicates and nothing runs twice; the bad ones are refused again.
    let (_, body) = answer(app.post_segment(&batch).await).await;
    assert_eq!(
        body,
        json!({"received": 10, "duplicates": 8, "triggered": 0, "refused": 2})
    );
}

#[tokio::test]
async fn a_lone_surrogate_from_json_stringify_is_read_as_the_replacement_character() {
    let app = spawn_with(Options {
        config: r#"
[[triggers]]
name = "echo"
source = "segment"
events = ["Emoji Sent"]
[triggers.research]
message = "{{ properties.text }}"
"#
        .into(),
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "m", "content": "ok", "sources": []})),
        )
        .expect(2)
        .mount(&app.mavera)
        .await;
    // What `JSON.stringify({text: "hi \ud83d"})` writes: the escape of a lone high surrogate.
    let single = r#"{"type":"track","event":"Emoji Sent","messageId":"sur-1","userId":"u-1","properties":{"text":"hi \ud83d"}}"#;
    let (status, body) = answer(app.post_segment(single).await).await;
    assert_eq!((status, body["triggered"].clone()), (200, json!(1)));
    // In a batch, the first (signed) element holding one.
    let batch = format!(
        "[{},{}]",
        r#"{"type":"track","event":"Emoji Sent","messageId":"sur-2","userId":"u-2","properties":{"text":"\udc00 bye"}}"#,
        r#"{"type":"identify","messageId":"sur-3","userId":"u-3"}"#
    );
    let (status, body) = answer(app.post_segment(&batch).await).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"received": 2, "duplicates": 0, "triggered": 1, "refused": 0})
        )
    );
    app.settle().await;
    let mut texts: Vec<String> = app
        .jobs()
        .await
        .iter()
        .map(|j| {
            j.new.context["properties"]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    texts.sort();
    assert_eq!(texts, ["hi \u{FFFD}", "\u{FFFD} bye"]);
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_segment_body_that_is_not_an_event_gets_400_naming_the_real_problem() {
    let app = spawn_app().await;
    for (body, reason) in [
        (
            r#"[1, "two", null]"#,
            "not a Segment batch: none of the array's 3 elements is a JSON object",
        ),
        (
            r#"{"type":"track","event":"x","properties":{"a":"\x41"}}"#,
            "malformed JSON: invalid escape",
        ),
        (
            r#"{"type":"track","event":"x","n":1e400}"#,
            "malformed JSON: number out of range",
        ),
        (
            r#"{"type":"track""#,
            "malformed JSON: EOF while parsing an object",
        ),
    ] {
        let (status, answer_body) = answer(app.post_segment(body).await).await;
        assert_eq!(status, 400, "{body}");
        let error = answer_body["error"].as_str().unwrap();
        assert!(error.starts_with(reason), "{body}: {error}");
    }
}

// ─── Customer.io ─────────────────────────────────────────────────────────────────────────────────────────

fn cio(object_type: &str, metric: &str, event_id: &str, data: Value) -> String {
    json!({"event_id": event_id, "object_type": object_type, "metric": metric, "timestamp": unix_now(), "data": data})
        .to_string()
}

#[tokio::test]
async fn every_customerio_object_type_and_identifier_variant_is_accepted_and_read() {
    let app = spawn_app().await;
    let cases = [
        // (object type, metric, data, the person as read)
        (
            "customer",
            "subscribed",
            json!({"identifiers": {"id": "42"}}),
            "42",
        ),
        (
            "email",
            "opened",
            json!({"identifiers": {"email": "jane@acme.example"}, "recipient": "jane@acme.example"}),
            "jane@acme.example",
        ),
        (
            "sms",
            "delivered",
            json!({"identifiers": {"cio_id": "d9c106000001"}, "recipient": "+15551234567"}),
            "d9c106000001",
        ),
        (
            "push",
            "opened",
            json!({"identifiers": {"id": "43"}, "recipients": [{"device_id": "dev-1", "device_platform": "ios"}]}),
            "43",
        ),
        (
            "in_app",
            "clicked",
            json!({"identifiers": {"id": "44"}, "href": "https://a.example", "link_id": 1}),
            "44",
        ),
        (
            "slack",
            "sent",
            json!({"identifiers": {"id": "45"}, "recipient": "#general"}),
            "45",
        ),
        (
            "webhook",
            "sent",
            json!({"identifiers": {"id": "46"}, "recipient": "https://hooks.example/x"}),
            "46",
        ),
        (
            "whatsapp",
            "sent",
            json!({"identifiers": {"cio_id": "d9c106000002"}, "recipient": "+447700900123"}),
            "d9c106000002",
        ),
    ];
    for (i, (object_type, metric, data, _)) in cases.iter().enumerate() {
        let body = cio(object_type, metric, &format!("ev-kind-{i}"), data.clone());
        let (status, answer_body) = answer(app.post_customerio(&body).await).await;
        assert_eq!(
            (status, answer_body),
            (
                200,
                json!({"received": 1, "duplicates": 0, "triggered": 0, "refused": 0})
            ),
            "{object_type}"
        );
    }
    let filter = EventFilter {
        source: Some(Source::CustomerIo),
        ..Default::default()
    };
    let listed = rows(&app, filter, cases.len()).await;
    for (i, (object_type, metric, _, person)) in cases.iter().enumerate() {
        let row = listed
            .iter()
            .find(|r| r.event_id == format!("ev-kind-{i}"))
            .unwrap_or_else(|| panic!("{object_type} is listed"));
        assert_eq!(
            (row.name.as_str(), row.user_id.as_deref()),
            (*metric, Some(*person)),
            "{object_type}"
        );
    }
    // The log names whom each event is about and its object type, and masks the email.
    let logs = app.logs();
    for who in [
        "who=id=42 object_type=customer",
        "who=email=j***@acme.example object_type=email",
        "who=cio_id=d9c106000001 object_type=sms",
        "who=id=45 object_type=slack",
        "who=cio_id=d9c106000002 object_type=whatsapp",
    ] {
        assert!(logs.contains(who), "no log line with {who}");
    }
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("who=") && l.contains("jane@acme.example")),
        "an email in a log line is masked"
    );
}

#[tokio::test]
async fn a_bounced_sms_alert_shows_no_phone_number_as_the_email_and_offers_it_as_recipient() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/42/attributes"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "customer": {"id": "42", "attributes": {"plan_type": "pro", "mrr": "850", "industry": "fintech"}}
        })))
        .expect(1)
        .mount(&app.cio)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "m", "content": "brief", "sources": []})),
        )
        .expect(1)
        .mount(&app.mavera)
        .await;
    let body = cio(
        "sms",
        "bounced",
        "ev-sms-bounce",
        json!({"identifiers": {"id": "42"}, "recipient": "+15551234567", "failure_message": "unreachable"}),
    );
    let (status, _) = answer(app.post_customerio(&body).await).await;
    assert_eq!(status, 200);
    app.settle().await;
    let job = app
        .jobs()
        .await
        .into_iter()
        .find(|j| j.new.trigger == "cio_churn_alert")
        .unwrap();
    assert_eq!(job.new.context["email"], Value::Null);
    assert_eq!(job.new.context["recipient"], "+15551234567");
    let outcome = job.outcome.expect("the brief was written");
    assert_eq!(
        outcome["title"], "CHURN ALERT: bounced | no email | High-MRR Fintech (Pro plan)",
        "{outcome}"
    );
    assert_eq!(
        outcome["summary"], "MRR: $850 | Tenure: N/A | Plan: pro",
        "{outcome}"
    );
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_genuine_customerio_body_that_is_not_an_event_gets_2xx_and_is_kept_as_unprocessable() {
    let app = app_with_console().await;
    let bodies = [
        ("not json at all", "malformed JSON"),
        ("[1,2]", "expected one JSON object"),
        (r#"{"hello":"world"}"#, "no `metric` or `event_type`"),
    ];
    for (body, _) in bodies {
        let (status, answer_body) = answer(app.post_customerio(body).await).await;
        assert_eq!(
            (status, answer_body),
            (
                200,
                json!({"received": 1, "duplicates": 0, "triggered": 0, "refused": 1})
            ),
            "{body}"
        );
    }
    let kept = app
        .state
        .jobs
        .store
        .events(
            &EventFilter {
                status: Some(StatusFilter::Unprocessable),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(kept.len(), 3);
    for row in &kept {
        let (detail, jobs) = app.state.jobs.store.event(row.id).await.unwrap().unwrap();
        let (body, why) = bodies
            .iter()
            .find(|(b, _)| *b == detail.raw)
            .expect("the raw body is kept as received");
        assert!(
            detail.reason.as_deref().unwrap().contains(why),
            "{body}: {detail:?}"
        );
        assert!(jobs.is_empty());
        let page = console_page(&app, &format!("/console/events/{}", row.id)).await;
        assert!(page.contains("badge unprocessable"), "{page}");
        assert!(page.contains("not a usable event"), "{page}");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics
            .contains(r#"webhooks_unusable_total{source="customerio",status="unprocessable"} 3"#),
        "{metrics}"
    );
    // Only the signature and the timestamp are refused.
    let wrong = [
        ("x-cio-timestamp", unix_now().to_string()),
        ("x-cio-signature", "00".repeat(32)),
    ];
    let (status, _) = answer(app.post("/customerio", "not json at all", &wrong).await).await;
    assert_eq!(status, 401);
    let stale = unix_now() - 3600;
    let signature = mavera_triggers::sources::customerio::sign(
        &Secret::new(CIO_SECRET),
        stale,
        b"not json at all",
    );
    let stale = [
        ("x-cio-timestamp", stale.to_string()),
        ("x-cio-signature", signature),
    ];
    let (status, _) = answer(app.post("/customerio", "not json at all", &stale).await).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_segment_events_log_line_names_its_user_and_anonymous_id() {
    let app = spawn_app().await;
    let body = json!({"type": "track", "event": "log_probe", "messageId": "who-1", "userId": "u-who-1", "anonymousId": "anon-who-1"});
    let (status, _) = answer(app.post_segment(&body.to_string()).await).await;
    assert_eq!(status, 200);
    assert!(
        app.logs().lines().any(|l| l.contains("event_id=who-1")
            && l.contains("who=userId=u-who-1 anonymousId=anon-who-1")),
        "no log line names the user"
    );
}
