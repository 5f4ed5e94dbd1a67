//! Nothing lost, nothing doubled: the durable store, restarts, retries, rate limits, dead letters and replay.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mavera_triggers::clock::{Clock, TestClock};
use serde_json::json;
use wiremock::{
    matchers::{method, path},
    Mock, Request, Respond, ResponseTemplate,
};

use crate::helpers::*;

fn track(event: &str, message_id: &str, user: &str) -> String {
    json!({"type": "track", "event": event, "messageId": message_id, "userId": user, "properties": {"plan": "pro"}}).to_string()
}

fn persona_ok(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(201)
        .set_body_json(json!({"id": id, "object": "custom_persona", "name": "n"}))
}

#[tokio::test]
async fn a_redelivery_after_a_restart_is_still_a_duplicate() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok("per_1"))
        .expect(1)
        .mount(&app.mavera)
        .await;
    let body = track("trial_started", "restart-1", "u-restart");
    let (status, _) = answer(app.post_segment(&body).await).await;
    assert_eq!(status, 200);
    app.settle().await;
    app.mavera.verify().await;
    let dir = app.stop().await;

    let again = spawn_with(Options {
        data_dir: Some(dir),
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(persona_ok("per_2"))
        .expect(0)
        .mount(&again.mavera)
        .await;
    let (status, answer_body) = answer(again.post_segment(&body).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer_body,
        json!({"received": 1, "duplicates": 1, "triggered": 0, "refused": 0})
    );
    again.settle().await;
    again.mavera.verify().await;
}

#[tokio::test]
async fn pending_jobs_resume_after_a_restart() {
    let app = spawn_with(Options {
        tweak: Box::new(|s| {
            s.jobs.retry_base = Duration::from_millis(50);
            s.jobs.retry_max = Duration::from_millis(50);
        }),
        // A retry waits its whole backoff: the job stays pending after the attempt.
        jitter: |ceiling| ceiling,
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.mavera)
        .await;
    app.post_segment(&track("plan_upgraded", "resume-1", "u-resume"))
        .await;
    // It fails once, then the server stops with the job still pending.
    assert_eq!(app.run_pending_jobs().await, 1);
    assert_eq!(app.jobs().await[0].attempts, 1);
    assert_eq!(app.state.jobs.store.counts().await.unwrap().pending, 1);
    let dir = app.stop().await;

    let again = spawn_with(Options {
        data_dir: Some(dir),
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(chat_ok())
        .expect(1)
        .mount(&again.mavera)
        .await;
    let counts = again.settle().await;
    assert_eq!((counts.done, counts.dead), (1, 0));
    again.mavera.verify().await;
}

#[tokio::test]
async fn when_the_store_cannot_write_the_webhook_is_503_and_nothing_is_half_recorded() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok("per_3"))
        .expect(1)
        .mount(&app.mavera)
        .await;
    // Break the store the way a full disk would: every job insert fails, after the event insert succeeded.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", app.database_path().display()))
        .await
        .unwrap();
    sqlx::query("CREATE TRIGGER fail_jobs BEFORE INSERT ON jobs BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;")
        .execute(&db)
        .await
        .unwrap();
    let body = track("trial_started", "broken-1", "u-broken");
    let response = app.post_segment(&body).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let (events,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(events, 0, "the event row was rolled back with its jobs");
    assert!(app.jobs().await.is_empty());

    // The disk has room again: Segment's retry of the same event is taken, not called a duplicate.
    sqlx::query("DROP TRIGGER fail_jobs")
        .execute(&db)
        .await
        .unwrap();
    let (status, answer_body) = answer(app.post_segment(&body).await).await;
    assert_eq!(status, 200);
    assert_eq!(answer_body["triggered"], 1);
    app.settle().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_later_event_for_the_same_user_updates_the_persona_instead_of_creating_another() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok("per_77"))
        .expect(1)
        .mount(&app.mavera)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/v1/personas/per_77"))
        .respond_with(persona_ok("per_77"))
        .expect(1)
        .mount(&app.mavera)
        .await;
    app.post_segment(&track("trial_started", "same-user-1", "u-same"))
        .await;
    app.settle().await;
    app.post_segment(&track("trial_started", "same-user-2", "u-same"))
        .await;
    app.settle().await;
    let outcomes: Vec<_> = app
        .jobs()
        .await
        .into_iter()
        .map(|j| j.outcome.unwrap()["action"].clone())
        .collect();
    assert_eq!(outcomes, [json!("update_persona"), json!("create_persona")]);
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_batch_for_one_user_creates_one_persona_and_updates_it() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok("per_batch"))
        .expect(1)
        .mount(&app.mavera)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/api/v1/personas/per_batch"))
        .respond_with(persona_ok("per_batch"))
        .expect(2)
        .mount(&app.mavera)
        .await;
    let batch = format!(
        "[{},{},{}]",
        track("trial_started", "batch-user-1", "u-batch"),
        track("trial_started", "batch-user-2", "u-batch"),
        track("trial_started", "batch-user-3", "u-batch")
    );
    let (status, body) = answer(app.post_segment(&batch).await).await;
    assert_eq!((status, body["triggered"].clone()), (200, json!(3)));
    let counts = app.settle().await;
    assert_eq!(counts.done, 3);
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_create_that_reached_mavera_before_the_attempt_failed_is_found_not_sent_twice() {
    // Mavera creates the persona but answers after our timeout: the retry must look before re-sending.
    let app = spawn_with(Options {
        tweak: Box::new(|s| s.jobs.http_timeout = Duration::from_millis(300)),
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(persona_ok("per_slow").set_delay(Duration::from_secs(2)))
        .expect(1)
        .mount(&app.mavera)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": [
            {"id": "per_other", "object": "persona", "name": "Segment RT: Trial User — u-slow", "is_custom": false, "created_at": unix_now()},
            {"id": "per_slow", "object": "persona", "name": "Segment RT: Trial User — u-slow", "is_custom": true, "created_at": unix_now()}
        ]})))
        .expect(1)
        .mount(&app.mavera)
        .await;
    app.post_segment(&track("trial_started", "slow-1", "u-slow"))
        .await;
    app.settle().await;
    let job = &app.jobs().await[0];
    let outcome = job.outcome.clone().unwrap();
    assert_eq!(outcome["persona_id"], "per_slow");
    assert_eq!(outcome["adopted"], true);
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_dead_job_replayed_over_the_admin_api_makes_exactly_one_new_call() {
    let app = spawn_with(Options {
        tweak: Box::new(|s| {
            s.access.admin_token = Some(mavera_triggers::config::Secret::new("admin-secret-1"))
        }),
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(402).set_body_json(json!({"error": {"message": "Credits exhausted", "type": "billing_error", "code": "credits_exhausted"}})))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.mavera)
        .await;
    app.post_segment(&track("churn_signal", "dead-1", "u-dead"))
        .await;
    assert_eq!(app.settle().await.dead, 1);
    let id = app.jobs().await[0].id;

    let url = |p: &str| format!("{}{p}", app.address);
    let listed: serde_json::Value = app
        .http
        .get(url("/admin/jobs?state=dead"))
        .bearer_auth("admin-secret-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["jobs"][0]["id"], id);
    assert!(listed["jobs"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("402"));
    let refused = app
        .http
        .post(url(&format!("/admin/jobs/{id}/replay")))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused = app
        .http
        .post(url(&format!("/admin/jobs/{id}/replay")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(chat_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let replayed = app
        .http
        .post(url(&format!("/admin/jobs/{id}/replay")))
        .bearer_auth("admin-secret-1")
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 202);
    let counts = app.settle().await;
    assert_eq!((counts.done, counts.dead), (1, 0));
    app.mavera.verify().await;
}

#[tokio::test]
async fn admin_routes_are_off_without_a_token() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/admin/jobs", app.address))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// Answers like Mavera and records when each request arrived, on the limiter's clock.
struct Clocked {
    clock: Arc<TestClock>,
    seen: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl Respond for Clocked {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.seen.lock().unwrap().push(self.clock.now());
        chat_ok()
    }
}

/// On a test clock that the limiter moves when it waits: exact spacing, no wall time. One worker, so that
/// one call at a time waits on the clock (two would move it for each other and blur the times seen).
#[tokio::test]
async fn the_mavera_rate_limit_is_never_exceeded() {
    let clock = TestClock::new();
    let app = spawn_with(Options {
        tweak: Box::new(|s| {
            s.mavera.requests_per_minute = 3;
            s.mavera.rate_window = Duration::from_secs(1);
            s.jobs.workers = 1;
        }),
        workers: true,
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(Clocked {
            clock: clock.clone(),
            seen: seen.clone(),
        })
        .expect(10)
        .mount(&app.mavera)
        .await;
    for i in 0..10 {
        app.post_segment(&track(
            "churn_signal",
            &format!("rate-{i}"),
            &format!("u-rate-{i}"),
        ))
        .await;
    }
    app.settle().await;
    let times = seen.lock().unwrap().clone();
    let mut worst = 0;
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        worst = worst.max(in_window);
    }
    assert!(
        worst <= 3,
        "{worst} requests within one window of 1 s (limit 3)"
    );
    let span = times.last().unwrap().duration_since(times[0]);
    assert!(
        span >= Duration::from_secs(3),
        "10 requests at 3/s take at least 3 s, took {span:?}"
    );
    app.mavera.verify().await;
}

#[tokio::test]
async fn backpressure_answers_503_with_retry_after_past_the_backlog_bound() {
    let app = spawn_with(Options {
        tweak: Box::new(|s| {
            s.intake.max_backlog = 2;
            s.jobs.workers = 1;
        }),
        workers: true,
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .respond_with(chat_ok().set_delay(Duration::from_secs(30)))
        .mount(&app.mavera)
        .await;
    for i in 0..5 {
        app.post_segment(&track(
            "churn_signal",
            &format!("bp-{i}"),
            &format!("u-bp-{i}"),
        ))
        .await;
    }
    // The monitor counts twice a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = app
            .post_segment(&track("churn_signal", "bp-late", "u-bp-late"))
            .await;
        if response.status() == 503 {
            assert_eq!(response.headers()["retry-after"], "30");
            break;
        }
        assert!(Instant::now() < deadline, "backpressure never engaged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health: serde_json::Value = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["backlog"]["accepting"], false);
}
