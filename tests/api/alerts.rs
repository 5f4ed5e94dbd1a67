//! Alerts reach the `[alerts]` sinks: each kind fires once, folds repeats, and recovers. Checks run on demand
//! with an injected clock (`Alerts::check(now)`), not on the server's 15 s timer.

use std::time::Duration;

use mavera_triggers::{
    alerts::{AlertKind, AlertState, Alerts, Notice},
    jobs::now_ms,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

use crate::helpers::*;

const MIN: u64 = 60_000;

/// The shipped trigger table with alerts going to a webhook at `hook`.
async fn spawn_alerting(
    hook: &MockServer,
    tweak: Box<dyn FnOnce(&mut mavera_triggers::config::Settings) + Send>,
) -> TestApp {
    let mut options = Options {
        tweak,
        // A retry waits its whole backoff, so a test can keep a failed job pending between attempts.
        jitter: |ceiling| ceiling,
        ..Options::default()
    };
    options.config.push_str(&format!(
        "\n[alerts]\nsinks = [{{ type = \"webhook\", url = \"{}/alerts\" }}]\nrepeat = \"1h\"\n",
        hook.uri()
    ));
    Mock::given(method("POST"))
        .and(path("/alerts"))
        .respond_with(ResponseTemplate::new(200))
        .mount(hook)
        .await;
    spawn_with(options).await
}

fn alerts_of(app: &TestApp) -> Alerts {
    Alerts::new(
        app.state.jobs.store.clone(),
        app.state.metrics.clone(),
        app.state.table.clone(),
        reqwest::Client::new(),
    )
}

/// The alert deliveries the hook received, in order.
async fn received(hook: &MockServer) -> Vec<Value> {
    hook.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.body_json().unwrap())
        .collect()
}

fn kinds(notices: &[Notice]) -> Vec<(AlertKind, AlertState)> {
    let mut k: Vec<_> = notices.iter().map(|n| (n.kind, n.state)).collect();
    k.sort_by_key(|(kind, _)| kind.as_str());
    k
}

fn upgrade(message_id: &str, user: &str) -> String {
    json!({"type": "track", "event": "plan_upgraded", "messageId": message_id, "userId": user,
           "properties": {"previous_plan": "pro", "new_plan": "team"}})
    .to_string()
}

#[tokio::test]
async fn credits_exhausted_and_dead_letters_fire_once_fold_repeats_and_recover() {
    let hook = MockServer::start().await;
    let app = spawn_alerting(&hook, Box::new(|_| {})).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(402).set_body_json(
            json!({"error": {"message": "Insufficient credits", "type": "billing_error", "code": "insufficient_credits"}}),
        ))
        .mount(&app.mavera)
        .await;
    app.post_segment(&upgrade("alert-402", "u-alert-1")).await;
    assert_eq!(app.settle().await.dead, 1);
    let mut alerts = alerts_of(&app);
    let now = now_ms();
    // The first check knows the dead letters there were before it: start a new one after it.
    assert_eq!(
        alerts.check(now).await.len(),
        1,
        "credits only: the dead letter was there at start"
    );
    app.post_segment(&upgrade("alert-402-b", "u-alert-2")).await;
    assert_eq!(app.settle().await.dead, 2);
    assert_eq!(
        kinds(&alerts.check(now + MIN).await),
        vec![(AlertKind::DeadLetters, AlertState::Firing)]
    );
    assert!(
        alerts.check(now + 2 * MIN).await.is_empty(),
        "folded within `repeat`"
    );
    let sent = received(&hook).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0]["type"], "alert");
    assert_eq!(sent[0]["alert"], "credits_exhausted");
    assert_eq!(sent[0]["state"], "firing");
    assert!(sent[0]["message"].as_str().unwrap().contains("402"));
    assert!(sent[0]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(sent[1]["alert"], "dead_letters");
    assert_eq!(sent[1]["details"]["new"], 1);
    assert_eq!(
        kinds(&alerts.check(now + 62 * MIN).await),
        vec![
            (AlertKind::CreditsExhausted, AlertState::Firing),
            (AlertKind::DeadLetters, AlertState::Firing)
        ],
        "sent again once `repeat` has passed"
    );

    // Credits topped up: the next chat succeeds, and the dead letters are replayed and done.
    app.mavera.reset().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "m", "content": "brief", "sources": []})),
        )
        .mount(&app.mavera)
        .await;
    for job in app.jobs().await {
        app.state.jobs.replay(job.id).await.unwrap();
    }
    assert_eq!(app.settle().await.dead, 0);
    assert_eq!(
        kinds(&alerts.check(now + 63 * MIN).await),
        vec![
            (AlertKind::CreditsExhausted, AlertState::Recovered),
            (AlertKind::DeadLetters, AlertState::Recovered)
        ]
    );
    assert!(
        alerts.check(now + 64 * MIN).await.is_empty(),
        "recovered once"
    );
    let sent = received(&hook).await;
    assert_eq!(sent.len(), 6);
    assert_eq!(sent[4]["state"], "recovered");
}

#[tokio::test]
async fn a_store_that_cannot_write_still_raises_its_alert_and_recovers() {
    let hook = MockServer::start().await;
    let app = spawn_alerting(&hook, Box::new(|_| {})).await;
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", app.database_path().display()))
        .await
        .unwrap();
    for event in ["INSERT", "UPDATE"] {
        sqlx::query(&format!("CREATE TRIGGER fail_heartbeat_{event} BEFORE {event} ON heartbeat BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;"))
            .execute(&db)
            .await
            .unwrap();
    }
    let mut alerts = alerts_of(&app);
    let now = now_ms();
    assert_eq!(
        kinds(&alerts.check(now).await),
        vec![(AlertKind::StoreUnwritable, AlertState::Firing)]
    );
    let sent = received(&hook).await;
    assert_eq!(sent[0]["alert"], "store_unwritable");
    assert!(sent[0]["details"]["error"]
        .as_str()
        .unwrap()
        .contains("disk is full"));
    assert!(alerts.check(now + MIN).await.is_empty(), "folded");
    for event in ["INSERT", "UPDATE"] {
        sqlx::query(&format!("DROP TRIGGER fail_heartbeat_{event}"))
            .execute(&db)
            .await
            .unwrap();
    }
    assert_eq!(
        kinds(&alerts.check(now + 2 * MIN).await),
        vec![(AlertKind::StoreUnwritable, AlertState::Recovered)]
    );
}

#[tokio::test]
async fn a_stale_backlog_and_a_failing_upstream_fire_after_their_thresholds() {
    let hook = MockServer::start().await;
    // Retries far apart: the job stays pending between attempts.
    let app = spawn_alerting(
        &hook,
        Box::new(|s| {
            s.jobs.retry_base = Duration::from_secs(600);
            s.jobs.retry_max = Duration::from_secs(600);
        }),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.mavera)
        .await;
    app.post_segment(&upgrade("alert-503", "u-alert-3")).await;
    assert_eq!(
        app.run_pending_jobs().await,
        1,
        "one attempt, then a retry due later"
    );
    let mut alerts = alerts_of(&app);
    let now = now_ms();
    assert!(
        alerts.check(now + 4 * MIN).await.is_empty(),
        "under both thresholds"
    );
    assert_eq!(
        kinds(&alerts.check(now + 6 * MIN).await),
        vec![(AlertKind::UpstreamDown, AlertState::Firing)]
    );
    assert_eq!(
        kinds(&alerts.check(now + 16 * MIN).await),
        vec![(AlertKind::BacklogStale, AlertState::Firing)]
    );
    assert!(alerts.check(now + 20 * MIN).await.is_empty(), "folded");
    let sent = received(&hook).await;
    assert_eq!(sent[0]["details"]["services"][0]["service"], "Mavera");
}

#[tokio::test]
async fn a_spent_budget_fires_while_it_holds_jobs_and_recovers_when_it_stops() {
    let hook = MockServer::start().await;
    let app = spawn_alerting(&hook, Box::new(|s| s.mavera.daily_budget = Some(1))).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "m", "content": "brief", "sources": []})),
        )
        .mount(&app.mavera)
        .await;
    app.post_segment(&upgrade("alert-budget-1", "u-alert-4"))
        .await;
    app.post_segment(&upgrade("alert-budget-2", "u-alert-5"))
        .await;
    assert_eq!(app.settle().await.held, 1);
    let mut alerts = alerts_of(&app);
    let now = now_ms();
    assert_eq!(
        kinds(&alerts.check(now).await),
        vec![(AlertKind::BudgetSpent, AlertState::Firing)]
    );
    assert!(alerts.check(now + 5 * MIN).await.is_empty(), "folded");
    assert_eq!(
        kinds(&alerts.check(now + 16 * MIN).await),
        vec![(AlertKind::BudgetSpent, AlertState::Recovered)],
        "no job held for 15 minutes"
    );
    assert_eq!(received(&hook).await[0]["alert"], "budget_spent");
}
