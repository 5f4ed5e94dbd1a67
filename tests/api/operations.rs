//! Running it: /metrics after a known sequence, /readyz, and reloading the trigger table.

use serde_json::json;
use wiremock::{
    matchers::{method, path},
    Mock, ResponseTemplate,
};

use crate::helpers::*;

fn track(event: &str, message_id: &str, user: &str) -> String {
    json!({"type": "track", "event": event, "messageId": message_id, "userId": user, "properties": {}}).to_string()
}

/// The value of one sample line in the exposition text (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_a_known_sequence_of_events() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": "per_m", "credits_charged": 300})),
        )
        .expect(1)
        .mount(&app.mavera)
        .await;
    let matching = track("trial_started", "metrics-1", "u-metrics");
    app.post_segment(&matching).await;
    app.post_segment(&matching).await;
    app.post_segment(&track("page_viewed", "metrics-2", "u-metrics"))
        .await;
    app.post(
        "/segment",
        matching.clone(),
        &[("x-signature", "0".repeat(40))],
    )
    .await;
    app.post_segment("{broken").await;
    app.settle().await;

    let text = app.metrics().await;
    let m = |series: &str| sample(&text, &format!("mavera_triggers_{series}"));
    assert_eq!(
        m(r#"webhooks_received_total{source="segment"}"#),
        3.0,
        "{text}"
    );
    assert_eq!(m(r#"webhooks_duplicates_total{source="segment"}"#), 1.0);
    assert_eq!(m(r#"webhooks_ignored_total{source="segment"}"#), 1.0);
    assert_eq!(
        m(r#"webhooks_rejected_total{source="segment",reason="signature"}"#),
        1.0
    );
    assert_eq!(
        m(r#"webhooks_rejected_total{source="segment",reason="bad_request"}"#),
        1.0
    );
    assert_eq!(
        m(r#"jobs_enqueued_total{trigger="trial_started",action="create_persona"}"#),
        1.0
    );
    assert_eq!(
        m(r#"jobs_succeeded_total{trigger="trial_started",action="create_persona"}"#),
        1.0
    );
    assert_eq!(
        m(r#"upstream_responses_total{endpoint="mavera:/personas",status="201"}"#),
        1.0
    );
    assert_eq!(
        m(r#"upstream_latency_seconds_count{endpoint="mavera:/personas"}"#),
        1.0
    );
    assert_eq!(m("mavera_credits_used_total"), 300.0);
    // The store's writer reports its transactions: two events written (the matching one, and the ignored
    // one in the event log, which is written beside the answer, not before it); the worker's claim and
    // outcome are transactions of their own.
    wait_until("the event log's row is counted", || async {
        sample(
            &app.metrics().await,
            "mavera_triggers_store_commit_rows_total",
        ) == 2.0
    })
    .await;
    let text = app.metrics().await;
    let m = |series: &str| sample(&text, &format!("mavera_triggers_{series}"));
    assert!(m("store_commit_seconds_count") >= 3.0, "{text}");
    assert!(m("store_commit_seconds_sum") > 0.0);
    assert!(
        !text.contains(SEGMENT_SECRET) && !text.contains(MAVERA_KEY) && !text.contains("u-metrics")
    );
    app.mavera.verify().await;
}

#[tokio::test]
async fn readyz_says_what_it_checked() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["ready"], true);
    assert_eq!(body["store"], "writable");
    assert_eq!(body["upstream"]["mavera"]["circuit"], "closed");
}

const FIRST: &str = r#"
[[triggers]]
name = "first"
source = "segment"
events = ["first_event"]
[triggers.research]
message = "first {{ user_id }}"
"#;

const SECOND: &str = r#"
[[triggers]]
name = "second"
source = "segment"
events = ["second_event"]
[triggers.research]
message = "second {{ user_id }}"
"#;

const RELOAD_TOKEN: &str = "reload-token-of-the-reload-test-0123456789";

#[tokio::test]
async fn a_reload_with_a_broken_file_keeps_the_old_triggers_and_a_good_file_switches_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("triggers.toml");
    std::fs::write(&file, FIRST).unwrap();
    let config_path = file.clone();
    let app = spawn_with(Options {
        config: FIRST.into(),
        tweak: Box::new(move |s| {
            s.config_path = config_path;
            // `serve` (and so a reload) refuses an admin token under 32 characters.
            s.access.admin_token = Some(mavera_triggers::config::Secret::new(RELOAD_TOKEN));
        }),
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"content": "ok"})))
        .expect(3)
        .mount(&app.mavera)
        .await;
    let reload = || async {
        let r = app
            .http
            .post(format!("{}/admin/reload", app.address))
            .bearer_auth(RELOAD_TOKEN)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };

    std::fs::write(&file, "[[triggers]]\nname = \"broken\"\nsource = \"segment\"\nevents = [\"x\"]\n[triggers.research]\nmessage = \"{{ oops \"\n").unwrap();
    let (status, body) = reload().await;
    assert_eq!(status, 422);
    assert!(
        body["error"].as_str().unwrap().contains("trigger `broken`"),
        "{body}"
    );
    let (_, answered) = answer(
        app.post_segment(&track("first_event", "reload-1", "u-r1"))
            .await,
    )
    .await;
    assert_eq!(answered["triggered"], 1, "the old table still runs");
    assert_eq!(app.settle().await.done, 1);

    std::fs::write(&file, SECOND).unwrap();
    let (status, body) = reload().await;
    assert_eq!((status, body["triggers"].clone()), (200, json!(1)));
    let (_, old) = answer(
        app.post_segment(&track("first_event", "reload-2", "u-r2"))
            .await,
    )
    .await;
    let (_, new) = answer(
        app.post_segment(&track("second_event", "reload-3", "u-r3"))
            .await,
    )
    .await;
    assert_eq!(
        (old["triggered"].clone(), new["triggered"].clone()),
        (json!(0), json!(1))
    );
    app.post_segment(&track("second_event", "reload-4", "u-r4"))
        .await;
    let counts = app.settle().await;
    assert_eq!((counts.done, counts.dead), (3, 0));
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_reload_applies_the_files_limits_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("triggers.toml");
    std::fs::write(&file, FIRST).unwrap();
    let config_path = file.clone();
    let app = spawn_with(Options {
        config: FIRST.into(),
        tweak: Box::new(move |s| s.config_path = config_path),
        ..Options::default()
    })
    .await;
    let live = |app: &TestApp| {
        use std::sync::atomic::Ordering::Relaxed;
        (
            app.state.limits.mavera_per_window.load(Relaxed),
            app.state.limits.mavera_chats.load(Relaxed),
            app.state.limits.cio_per_second.load(Relaxed),
        )
    };
    assert_eq!(live(&app), (10_000, 10, 1_000), "as started");
    std::fs::write(
        &file,
        format!("[limits]\nmavera_requests_per_minute = 120\nmavera_max_concurrent_chats = 3\ncio_requests_per_second = 5\n{FIRST}"),
    )
    .unwrap();
    assert_eq!(app.state.reload_and_log(), Ok(1));
    assert_eq!(
        live(&app),
        (120, 3, 5),
        "the file's [limits] after a reload"
    );
    // The same limits again change nothing; limits removed from the file fall back to the defaults.
    std::fs::write(&file, FIRST).unwrap();
    assert_eq!(app.state.reload_and_log(), Ok(1));
    assert_eq!(live(&app), (60, 10, 10));
}
