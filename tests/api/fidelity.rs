//! Every genuine event accepted, exactly as Segment and Customer.io send it (issue #13): Segment's documented
//! batch sizes, partial batches, lone surrogates, Customer.io bodies that are not events, identities, and the
//! memory bound on large bodies that arrive before any signature is checked.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

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
            s.segment_max_body_bytes = 64 * 1024;
            s.max_body_bytes_in_flight = 100 * 1024;
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
        assert_eq!(response.status(), 401, "room for 40 KiB: the signature decides");
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
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run alone (see its doc comment); figures go in benches/README.md"]
async fn rss_while_64_maximum_size_unsigned_bodies_arrive() {
    let app = spawn_app().await;
    let limit = app.state.settings.segment_max_body_bytes;
    let budget = app.state.settings.max_body_bytes_in_flight;
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
        .map(|_| tokio::spawn(half_then_all(address.clone(), body.clone(), barrier.clone())))
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
    assert_eq!(
        statuses.get(&401).copied().unwrap_or(0),
        budget / limit,
        "as many bodies as the budget holds are read, and refused for their signature: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&503).copied().unwrap_or(0),
        64 - budget / limit,
        "the others are turned away before they are read: {statuses:?}"
    );
    let growth = peak.saturating_sub(before) * 1024;
    assert!(
        growth < (3 * budget) as u64,
        "peak RSS grew by {growth} B, more than 3 × the {budget} B budget"
    );
}
