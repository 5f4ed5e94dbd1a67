//! POST /segment: the seed's four triggers, dedupe, batches, signatures, bad input, upstream failures.

use std::time::Duration;

use serde_json::json;
use wiremock::{
    matchers::{body_json, body_partial_json, header, method, path},
    Mock, ResponseTemplate,
};

use crate::helpers::*;

fn track(event: &str, message_id: &str, properties: serde_json::Value) -> String {
    json!({
        "type": "track", "event": event, "messageId": message_id, "userId": "usr_k8m2n_abcdefgh",
        "timestamp": "2026-11-25T10:00:00.000Z", "properties": properties,
        "context": { "traits": { "email": "jane@acme.example" } }
    })
    .to_string()
}

fn persona_ok() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "id": "per_123", "object": "custom_persona", "name": "x", "credits_charged": 300
    }))
}

fn chat_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "msg_1", "object": "mave_message", "thread_id": "thr_1", "role": "assistant",
        "content": "## Brief\nUsers upgrade after a capacity moment.",
        "sources": [{ "title": "Report", "url": "https://example.com/r", "domain": "example.com" }],
        "usage": { "credits_used": 25 }, "created_at": "2026-11-25T10:00:01Z"
    }))
}

#[tokio::test]
async fn trial_started_creates_one_persona_with_the_rendered_name_and_description() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .and(header("authorization", format!("Bearer {MAVERA_KEY}").as_str()))
        .and(body_json(json!({
            "name": "Segment RT: Trial User — usr_k8m2n_ab",
            "description": "Real-time persona created when user usr_k8m2n_abcdefgh started a trial. Plan: pro. Source: google_ads.",
            "pipeline_type": "north_star",
            "type": "B2C"
        })))
        .respond_with(persona_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;

    let (status, body) = answer(
        app.post_segment(&track(
            "trial_started",
            "m-trial-1",
            json!({"plan": "pro", "source": "google_ads"}),
        ))
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"received": 1, "duplicates": 0, "triggered": 1, "refused": 0})
    );
    let counts = app.settle().await;
    assert_eq!(counts.done, 1);
    let job = &app.jobs().await[0];
    assert_eq!(job.outcome.as_ref().unwrap()["persona_id"], "per_123");
    app.mavera.verify().await;
}

#[tokio::test]
async fn feature_milestone_creates_a_persona_and_missing_values_read_unknown() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .and(body_partial_json(json!({
            "name": "Segment RT: Feature Champion — usr_k8m2n_ab",
            "description": "Power user who reached unknown milestone for feature Dashboards. This user has deeply adopted Dashboards."
        })))
        .respond_with(persona_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let response = app
        .post_segment(&track(
            "feature_milestone",
            "m-fm-1",
            json!({"feature_name": "Dashboards"}),
        ))
        .await;
    assert_eq!(response.status(), 200);
    app.settle().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn plan_upgraded_asks_mave_with_the_rendered_message_and_keeps_the_brief() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .and(header("authorization", format!("Bearer {MAVERA_KEY}").as_str()))
        .and(body_json(json!({
            "message": "A user just upgraded from starter to pro. Research: What motivates users to upgrade at this point in their journey? What features do they expect immediately after upgrading? What's the #1 risk of churn in the first 7 days post-upgrade?"
        })))
        .respond_with(chat_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let response = app
        .post_segment(&track(
            "plan_upgraded",
            "m-up-1",
            json!({"previous_plan": "starter", "new_plan": "pro"}),
        ))
        .await;
    assert_eq!(response.status(), 200);
    app.settle().await;
    let outcome = app.jobs().await[0].outcome.clone().unwrap();
    assert_eq!(
        outcome["brief"],
        "## Brief\nUsers upgrade after a capacity moment."
    );
    assert_eq!(outcome["sources"][0]["url"], "https://example.com/r");
    assert!(
        app.logs()
            .contains("Users upgrade after a capacity moment."),
        "the brief is logged in full"
    );
    app.mavera.verify().await;
}

#[tokio::test]
async fn churn_signal_asks_mave_with_ltv_signal_and_tenure() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .and(body_json(json!({
            "message": "A user with LTV $420 just triggered a churn signal: downgrade_intent. They've been a customer for 97 days. Research: What retention intervention works best for users at this LTV and tenure? Draft 3 personalized re-engagement messages."
        })))
        .respond_with(chat_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let response = app
        .post_segment(&track(
            "churn_signal",
            "m-churn-1",
            json!({"ltv": 420, "signal_type": "downgrade_intent", "tenure_days": 97}),
        ))
        .await;
    assert_eq!(response.status(), 200);
    app.settle().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_redelivered_message_id_creates_no_second_persona() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let body = track("trial_started", "m-dup-1", json!({"plan": "pro"}));
    let (_, first) = answer(app.post_segment(&body).await).await;
    let (status, second) = answer(app.post_segment(&body).await).await;
    assert_eq!(
        first,
        json!({"received": 1, "duplicates": 0, "triggered": 1, "refused": 0})
    );
    assert_eq!(status, 200);
    assert_eq!(
        second,
        json!({"received": 1, "duplicates": 1, "triggered": 0, "refused": 0})
    );
    // Same id, different content (Segment dedupes on messageId, not on contents).
    let (_, third) = answer(
        app.post_segment(&track("trial_started", "m-dup-1", json!({"plan": "team"})))
            .await,
    )
    .await;
    assert_eq!(third["duplicates"], 1);
    app.settle().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn concurrent_redeliveries_race_to_one_persona() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let body = track("trial_started", "m-race-1", json!({}));
    let sig = mavera_triggers::sources::signature::sign_sha1(
        &mavera_triggers::config::Secret::new(SEGMENT_SECRET),
        body.as_bytes(),
    );
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let request = app
            .http
            .post(format!("{}/segment", app.address))
            .header("x-signature", &sig)
            .body(body.clone());
        set.spawn(async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        });
    }
    let answers = set.join_all().await;
    let triggered: u64 = answers
        .iter()
        .map(|a| a["triggered"].as_u64().unwrap())
        .sum();
    let duplicates: u64 = answers
        .iter()
        .map(|a| a["duplicates"].as_u64().unwrap())
        .sum();
    assert_eq!((triggered, duplicates), (1, 7));
    app.settle().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_batch_of_three_events_makes_three_calls() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok())
        .expect(2)
        .mount(&app.mavera)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(chat_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let batch = format!(
        "[{},{},{}]",
        track("trial_started", "b-1", json!({})),
        track("feature_milestone", "b-2", json!({})),
        track("churn_signal", "b-3", json!({}))
    );
    let (status, body) = answer(app.post_segment(&batch).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"received": 3, "duplicates": 0, "triggered": 3, "refused": 0})
    );
    app.settle().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_bad_or_missing_signature_is_401_and_makes_no_call() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .respond_with(persona_ok())
        .expect(0)
        .mount(&app.mavera)
        .await;
    let body = track("trial_started", "m-sig-1", json!({}));
    let good = mavera_triggers::sources::signature::sign_sha1(
        &mavera_triggers::config::Secret::new(SEGMENT_SECRET),
        body.as_bytes(),
    );
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("x-signature", "0".repeat(40))],
        vec![("x-signature", format!("sha1={good}"))],
        vec![(
            "x-signature",
            mavera_triggers::sources::signature::sign_sha1(
                &mavera_triggers::config::Secret::new("wrong"),
                body.as_bytes(),
            ),
        )],
        vec![("x-signature", good.clone()), ("x-signature", good.clone())],
    ];
    for headers in cases {
        let (status, answer_body) =
            answer(app.post("/segment", body.clone(), &headers).await).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(
            answer_body,
            json!({"error": "invalid or missing signature"})
        );
    }
    // A signature of the right event over other bytes (a tampered body) fails too.
    let tampered = body.replace("usr_k8m2n", "usr_evil");
    let (status, _) = answer(
        app.post("/segment", tampered, &[("x-signature", good)])
            .await,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(app.jobs().await.len(), 0);
    // The same event, signed, is still accepted: the rejections were not remembered as seen.
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok())
        .expect(0)
        .mount(&app.mavera)
        .await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn events_nobody_subscribes_to_are_acknowledged_without_a_call() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .respond_with(persona_ok())
        .expect(0)
        .mount(&app.mavera)
        .await;
    for file in [
        "segment-identify.json",
        "segment-page.json",
        "segment-track.json",
        "segment-webhooks-classic-delete.json",
        "segment-webhooks-classic-alias.json",
    ] {
        let body = std::fs::read_to_string(format!(
            "{}/tests/fixtures/segment/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let (status, answer_body) = answer(app.post_segment(&body).await).await;
        assert_eq!(status, 200, "{file}");
        assert_eq!(answer_body["triggered"], 0, "{file}");
    }
    assert_eq!(app.jobs().await.len(), 0);
    app.mavera.verify().await;
}

#[tokio::test]
async fn malformed_json_is_400_with_a_reason_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let (status, body) = answer(app.post_segment("{\"type\":\"track\",").await).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );
    let (status, body) = answer(app.post_segment(r#"{"hello":"world"}"#).await).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a Segment event"),
        "{body}"
    );
    let response = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app().await;
    // SEGMENT_MAX_BODY_BYTES, 8 MiB: Segment's largest documented batches fit under it.
    let big = format!(
        r#"{{"type":"track","event":"x","properties":{{"pad":"{}"}}}}"#,
        "a".repeat(8 * 1024 * 1024 + 10)
    );
    let response = app.post_segment(&big).await;
    assert_eq!(response.status(), 413);
    let response = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn mavera_failing_or_timing_out_never_changes_the_webhooks_200() {
    let app = spawn_with(Options {
        tweak: Box::new(|s| s.jobs.retry_max_attempts = 2),
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(500))
        .expect(2)
        .mount(&app.mavera)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(chat_ok().set_delay(Duration::from_secs(5)))
        .expect(2)
        .mount(&app.mavera)
        .await;
    let started = std::time::Instant::now();
    let (s1, _) = answer(
        app.post_segment(&track("trial_started", "m-500", json!({})))
            .await,
    )
    .await;
    let (s2, _) = answer(
        app.post_segment(&track("churn_signal", "m-slow", json!({})))
            .await,
    )
    .await;
    assert_eq!((s1, s2), (200, 200));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the answer never waits on Mavera"
    );
    let counts = app.settle().await;
    assert_eq!(counts.dead, 2, "both jobs dead-lettered after 2 attempts");
    for job in app.jobs().await {
        let error = job.last_error.unwrap();
        assert!(error.contains("gave up after 2 attempts"), "{error}");
    }
    let (status, _) = answer(
        app.post_segment(&track("unknown_thing", "m-after", json!({})))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_final_mavera_error_dead_letters_at_once_with_the_reason() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(402).set_body_json(json!({"error": {"message": "Credits exhausted", "type": "billing_error", "code": "credits_exhausted"}})))
        .expect(1)
        .mount(&app.mavera)
        .await;
    app.post_segment(&track("trial_started", "m-402", json!({})))
        .await;
    let counts = app.settle().await;
    assert_eq!(counts.dead, 1);
    let error = app.jobs().await[0].last_error.clone().unwrap();
    assert!(
        error.contains("402") && error.contains("Credits exhausted"),
        "{error}"
    );
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_and_then_succeeds() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.mavera)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(chat_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let started = std::time::Instant::now();
    app.post_segment(&track("plan_upgraded", "m-429", json!({})))
        .await;
    let counts = app.settle().await;
    assert_eq!(counts.done, 1);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After: 1 was honoured"
    );
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_batch_signed_over_its_first_element_verifies() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .respond_with(persona_ok())
        .mount(&app.mavera)
        .await;
    let first = track("something_else", "bf-1", json!({}));
    let batch = format!("[{first},{}]", track("other", "bf-2", json!({})));
    let sig = mavera_triggers::sources::signature::sign_sha1(
        &mavera_triggers::config::Secret::new(SEGMENT_SECRET),
        first.as_bytes(),
    );
    let (status, body) = answer(app.post("/segment", batch, &[("x-signature", sig)]).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["received"], 2);
}

#[tokio::test]
async fn dev_mode_accepts_unsigned_requests_when_no_secret_is_set_and_warns() {
    let app = spawn_with(Options {
        mode: mavera_triggers::config::Mode::Dev,
        tweak: Box::new(|s| s.segment.secrets.clear()),
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let (status, _) = answer(
        app.post("/segment", track("trial_started", "dev-1", json!({})), &[])
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert!(app.logs().contains("UNSIGNED request accepted"));
    app.settle().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn serve_mode_without_a_secret_refuses_unsigned_requests() {
    let app = spawn_with(Options {
        tweak: Box::new(|s| s.segment.secrets.clear()),
        ..Options::default()
    })
    .await;
    let (status, _) = answer(
        app.post(
            "/segment",
            track("trial_started", "serve-1", json!({})),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 401);
}
