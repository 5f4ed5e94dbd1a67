//! POST /customerio: v0 signatures, enrichment through the App API, the high-value filter, the retention brief.

use serde_json::json;
use wiremock::{
    matchers::{header, method, path, query_param},
    Mock, ResponseTemplate,
};

use crate::helpers::*;

fn event(metric: &str, object_type: &str, event_id: &str, customer: &str) -> String {
    json!({
        "event_id": event_id, "object_type": object_type, "metric": metric, "timestamp": unix_now(),
        "data": {
            "customer_id": customer, "email_address": "jane@acme.co",
            "identifiers": { "id": customer, "email": "jane@acme.co", "cio_id": "d9c106000001" }
        }
    })
    .to_string()
}

fn attributes(plan: &str, mrr: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "customer": { "id": "42", "attributes": {
            "plan_type": plan, "mrr": mrr, "industry": "fintech", "usage_tier": "high",
            "tenure_days": "342", "last_active_at": "2026-11-20", "email": "jane@acme.co"
        }}
    }))
}

fn chat_ok() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "msg_9", "object": "mave_message", "thread_id": "thr_9", "role": "assistant",
        "content": "## Retention Analysis\nOffer a 30-day Enterprise trial.", "sources": [{"title": "a", "url": "https://a.example", "domain": "a.example"}],
        "usage": { "credits_used": 30 }
    }))
}

async fn mount_chat(app: &TestApp, times: u64) {
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(chat_ok())
        .expect(times)
        .mount(&app.mavera)
        .await;
}

#[tokio::test]
async fn a_pro_customer_unsubscribing_gets_one_lookup_and_one_brief_with_persona_type_and_mrr() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/42/attributes"))
        .and(header(
            "authorization",
            format!("Bearer {CIO_APP_KEY}").as_str(),
        ))
        .respond_with(attributes("pro", "850"))
        .expect(1)
        .mount(&app.cio)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .and(header(
            "authorization",
            format!("Bearer {MAVERA_KEY}").as_str(),
        ))
        .respond_with(chat_ok())
        .expect(1)
        .mount(&app.mavera)
        .await;
    let (status, body) = answer(
        app.post_customerio(&event("unsubscribed", "customer", "ev-pro-1", "42"))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"received": 1, "duplicates": 0, "triggered": 1, "refused": 0})
    );
    app.settle().await;
    let requests = app.mavera.received_requests().await.unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    let message = sent["message"].as_str().unwrap();
    // A multi-word value is fenced as quoted data (see triggers::template_env).
    assert!(
        message.contains("PERSONA TYPE: «High-MRR Fintech (Pro plan)»"),
        "{message}"
    );
    assert!(message.contains("MRR: $850"), "{message}");
    assert!(message.contains("EVENT: unsubscribed"), "{message}");
    assert!(
        message.contains("6) Signals to watch for re-engagement potential"),
        "{message}"
    );
    let outcome = app.jobs().await[0].outcome.clone().unwrap();
    assert_eq!(outcome["persona_type"], "High-MRR Fintech (Pro plan)");
    assert_eq!(outcome["customer_id"], "42");
    assert_eq!(
        outcome["brief"],
        "## Retention Analysis\nOffer a 30-day Enterprise trial."
    );
    assert!(app
        .logs()
        .contains("CHURN ALERT: unsubscribed | jane@acme.co | High-MRR Fintech (Pro plan)"));
    app.cio.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn the_persona_type_follows_the_seeds_classification() {
    for (plan, mrr, expected) in [
        ("enterprise", "100", "Enterprise Fintech (high usage)"),
        ("business", "", "Enterprise Fintech (high usage)"),
        ("pro", "200", "Pro Fintech User"),
    ] {
        let app = spawn_app().await;
        Mock::given(method("GET"))
            .respond_with(attributes(plan, mrr))
            .mount(&app.cio)
            .await;
        mount_chat(&app, 1).await;
        app.post_customerio(&event("bounced", "email", &format!("ev-class-{plan}"), "7"))
            .await;
        app.settle().await;
        let outcome = app.jobs().await[0].outcome.clone().unwrap();
        assert_eq!(outcome["persona_type"], expected, "{plan} {mrr}");
        app.mavera.verify().await;
    }
}

#[tokio::test]
async fn a_free_customer_is_looked_up_but_gets_no_brief() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/43/attributes"))
        .respond_with(attributes("free", "0"))
        .expect(1)
        .mount(&app.cio)
        .await;
    mount_chat(&app, 0).await;
    let (status, _) = answer(
        app.post_customerio(&event("spammed", "email", "ev-free-1", "43"))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let counts = app.settle().await;
    assert_eq!(counts.done, 1);
    let outcome = app.jobs().await[0].outcome.clone().unwrap();
    assert!(outcome["skipped"]
        .as_str()
        .unwrap()
        .contains("condition not met"));
    app.cio.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn sent_and_opened_make_no_calls_and_get_200() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .respond_with(attributes("pro", "900"))
        .expect(0)
        .mount(&app.cio)
        .await;
    mount_chat(&app, 0).await;
    for (i, metric) in [
        "sent",
        "opened",
        "delivered",
        "clicked",
        "some_future_metric",
    ]
    .iter()
    .enumerate()
    {
        let (status, body) = answer(
            app.post_customerio(&event(metric, "email", &format!("ev-noop-{i}"), "42"))
                .await,
        )
        .await;
        assert_eq!(status, 200, "{metric}");
        assert_eq!(body["triggered"], 0);
    }
    // A signed object we do not recognise at all is still acknowledged: a 4xx would stall Customer.io's queue.
    let (status, _) = answer(app.post_customerio(r#"{"what":"is this"}"#).await).await;
    assert_eq!(status, 200);
    app.cio.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn every_shipped_customerio_sample_is_acknowledged() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .respond_with(attributes("free", "0"))
        .mount(&app.cio)
        .await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/customerio");
    for entry in std::fs::read_dir(dir).unwrap() {
        let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let (status, _) = answer(app.post_customerio(&body).await).await;
        assert_eq!(status, 200);
    }
    app.settle().await;
}

#[tokio::test]
async fn a_wrong_signature_a_missing_or_stale_timestamp_is_401_and_makes_no_calls() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .respond_with(attributes("pro", "900"))
        .expect(0)
        .mount(&app.cio)
        .await;
    mount_chat(&app, 0).await;
    let body = event("unsubscribed", "customer", "ev-auth-1", "42");
    let key = mavera_triggers::config::Secret::new(CIO_SECRET);
    let now = unix_now();
    let sign =
        |ts: u64, b: &str| mavera_triggers::sources::customerio::sign(&key, ts, b.as_bytes());
    let body_only = mavera_triggers::sources::signature::sign_sha256(&key, &[body.as_bytes()]);
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("x-cio-timestamp", now.to_string()),
            ("x-cio-signature", "0".repeat(64)),
        ],
        vec![("x-cio-signature", sign(now, &body))],
        vec![
            ("x-cio-timestamp", (now - 3600).to_string()),
            ("x-cio-signature", sign(now - 3600, &body)),
        ],
        vec![
            ("x-cio-timestamp", (now + 3600).to_string()),
            ("x-cio-signature", sign(now + 3600, &body)),
        ],
        vec![
            ("x-cio-timestamp", now.to_string()),
            ("x-cio-signature", body_only),
        ],
        vec![("x-cio-timestamp", now.to_string())],
        vec![],
    ];
    for headers in cases {
        let (status, _) = answer(app.post("/customerio", body.clone(), &headers).await).await;
        assert_eq!(status, 401, "{headers:?}");
    }
    assert!(app.jobs().await.is_empty());
    app.cio.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn the_same_event_id_twice_makes_one_chat_call() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .respond_with(attributes("pro", "900"))
        .expect(1)
        .mount(&app.cio)
        .await;
    mount_chat(&app, 1).await;
    let body = event("unsubscribed", "customer", "ev-twice-1", "42");
    app.post_customerio(&body).await;
    let (_, second) = answer(app.post_customerio(&body).await).await;
    assert_eq!(second["duplicates"], 1);
    app.settle().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn ten_events_for_one_customer_within_the_ttl_make_one_lookup() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/44/attributes"))
        .respond_with(attributes("enterprise", "300"))
        .expect(1)
        .mount(&app.cio)
        .await;
    // The shipped cooldown (one brief per customer per day) holds back all but the first.
    mount_chat(&app, 1).await;
    for i in 0..10 {
        let metric = ["unsubscribed", "bounced", "spammed"][i % 3];
        app.post_customerio(&event(metric, "email", &format!("ev-blast-{i}"), "44"))
            .await;
    }
    let counts = app.settle().await;
    assert_eq!((counts.done, counts.held), (1, 9));
    app.cio.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_deleted_customer_gets_no_brief_and_the_log_says_why() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/deleted-77/attributes"))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&app.cio)
        .await;
    mount_chat(&app, 0).await;
    app.post_customerio(&event("unsubscribed", "customer", "ev-404-1", "deleted-77"))
        .await;
    let counts = app.settle().await;
    assert_eq!(counts.done, 1);
    let logs = app.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("customer=deleted-77") && l.contains("404"))
        .expect("a log line about the 404");
    assert!(line.contains("not found"), "{line}");
    app.cio.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn attributes_503_then_200_makes_one_chat_call() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.cio)
        .await;
    Mock::given(method("GET"))
        .respond_with(attributes("business", "100"))
        .expect(1)
        .mount(&app.cio)
        .await;
    mount_chat(&app, 1).await;
    app.post_customerio(&event("bounced", "email", "ev-503-1", "45"))
        .await;
    let counts = app.settle().await;
    assert_eq!(counts.done, 1);
    assert_eq!(app.jobs().await[0].attempts, 2);
    app.cio.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_chat_retry_does_not_repeat_the_lookup() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .respond_with(attributes("pro", "900"))
        .expect(1)
        .mount(&app.cio)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&app.mavera)
        .await;
    mount_chat(&app, 1).await;
    // A different person each time keeps the attribute cache out of the picture.
    app.post_customerio(&event("bounced", "email", "ev-progress-1", "46"))
        .await;
    app.settle().await;
    assert_eq!(app.jobs().await[0].attempts, 3);
    app.cio.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_hostile_customer_id_reaches_the_app_api_as_one_encoded_path_segment() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/a%2Fb%3Fc%23d%2F..%2Fx/attributes"))
        .respond_with(attributes("pro", "900"))
        .expect(1)
        .mount(&app.cio)
        .await;
    mount_chat(&app, 1).await;
    app.post_customerio(&event(
        "unsubscribed",
        "customer",
        "ev-hostile-1",
        "a/b?c#d/../x",
    ))
    .await;
    app.settle().await;
    let requests = app.cio.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].url.query(),
        None,
        "the id did not open a query string"
    );
    app.cio.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_person_without_an_id_is_looked_up_by_email() {
    let app = spawn_app().await;
    Mock::given(method("GET"))
        .and(path("/v1/customers/jane%40acme.co/attributes"))
        .and(query_param("id_type", "email"))
        .respond_with(attributes("pro", "900"))
        .expect(1)
        .mount(&app.cio)
        .await;
    mount_chat(&app, 1).await;
    let body = json!({
        "event_id": "ev-email-1", "object_type": "email", "metric": "bounced", "timestamp": unix_now(),
        "data": { "customer_id": "", "identifiers": { "id": null, "email": "jane@acme.co", "cio_id": "c1" },
                  "delivery_id": "d1", "recipient": "jane@acme.co", "subject": "s", "failure_message": "f", "campaign_id": null }
    });
    app.post_customerio(&body.to_string()).await;
    app.settle().await;
    app.cio.verify().await;
    app.mavera.verify().await;
}
