//! Sinks: the brief reaches a file, Slack or any webhook — durably, once.

use serde_json::json;
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

use crate::helpers::*;

fn config(sinks: &str) -> String {
    format!(
        r#"
[[triggers]]
name = "upgrade_brief"
source = "segment"
events = ["plan_upgraded"]
{sinks}
[triggers.research]
message = "Upgrade to {{{{ new_plan }}}}?"
title = "PLAN UPGRADE: {{{{ user_id }}}}"
summary = "New plan: {{{{ new_plan }}}}"
"#
    )
}

async fn mavera_brief(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "m", "content": "## Why they upgrade\nThey hit a limit.",
            "sources": [{"title": "Upgrade study", "url": "https://research.example/upgrades", "domain": "research.example"}]
        })))
        .expect(1)
        .mount(&app.mavera)
        .await;
}

fn upgrade(message_id: &str) -> String {
    json!({"type": "track", "event": "plan_upgraded", "messageId": message_id, "userId": "u-sink", "properties": {"new_plan": "pro"}}).to_string()
}

#[tokio::test]
async fn the_slack_sink_posts_the_brief_as_blocks() {
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/T0/B0/xyz"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&slack)
        .await;
    let app = spawn_with(Options {
        config: config(&format!("sinks = [{{ type = \"log\" }}, {{ type = \"slack\", webhook_url = \"{}/services/T0/B0/xyz\" }}]", slack.uri())),
        ..Options::default()
    })
    .await;
    mavera_brief(&app).await;
    app.post_segment(&upgrade("slack-1")).await;
    let counts = app.settle().await;
    assert_eq!(counts.done, 2, "the research job and its Slack delivery");
    let received = slack.received_requests().await.unwrap();
    let message: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(message["text"], "PLAN UPGRADE: u-sink");
    let blocks = message["blocks"].as_array().unwrap();
    assert_eq!(
        blocks[0],
        json!({"type": "header", "text": {"type": "plain_text", "text": "PLAN UPGRADE: u-sink", "emoji": false}})
    );
    assert_eq!(blocks[1]["text"]["text"], "New plan: pro");
    assert_eq!(
        blocks[2]["text"],
        json!({"type": "mrkdwn", "text": "## Why they upgrade\nThey hit a limit."})
    );
    assert!(blocks[3]["elements"][0]["text"]
        .as_str()
        .unwrap()
        .contains("<https://research.example/upgrades|Upgrade study>"));
    slack.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn the_webhook_sink_signs_what_it_sends() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/briefs"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&receiver)
        .await;
    let app = spawn_with(Options {
        config: config(&format!(
            "sinks = [{{ type = \"webhook\", url = \"{}/briefs\", secret = \"whsec-test-1\" }}]",
            receiver.uri()
        )),
        ..Options::default()
    })
    .await;
    mavera_brief(&app).await;
    app.post_segment(&upgrade("webhook-1")).await;
    app.settle().await;
    let received = &receiver.received_requests().await.unwrap()[0];
    let ts: u64 = received
        .headers
        .get("x-mavera-triggers-timestamp")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let sig = received
        .headers
        .get("x-mavera-triggers-signature")
        .unwrap()
        .to_str()
        .unwrap();
    // What a receiver does: HMAC-SHA256 over "v1:<timestamp>:<body>" with the shared secret.
    let expected = mavera_triggers::sources::signature::sign_sha256(
        &mavera_triggers::config::Secret::new("whsec-test-1"),
        &[b"v1:", ts.to_string().as_bytes(), b":", &received.body],
    );
    assert_eq!(sig, format!("v1={expected}"));
    assert!(received.headers.get("x-mavera-triggers-delivery").is_some());
    let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(body["type"], "brief");
    assert_eq!(
        body["outcome"]["brief"],
        "## Why they upgrade\nThey hit a limit."
    );
    receiver.verify().await;
}

#[tokio::test]
async fn a_failing_sink_is_retried_and_the_brief_arrives_once() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&receiver)
        .await;
    let app = spawn_with(Options {
        config: config(&format!(
            "sinks = [{{ type = \"webhook\", url = \"{}/briefs\" }}]",
            receiver.uri()
        )),
        ..Options::default()
    })
    .await;
    mavera_brief(&app).await;
    app.post_segment(&upgrade("retry-sink-1")).await;
    let counts = app.settle().await;
    assert_eq!((counts.done, counts.dead), (2, 0));
    let deliveries: Vec<String> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.headers
                .get("x-mavera-triggers-delivery")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries.iter().all(|d| *d == deliveries[0]),
        "one delivery id across retries"
    );
    receiver.verify().await;
    app.mavera.verify().await;
}

#[tokio::test]
async fn the_file_sink_appends_one_json_line_per_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out/briefs.jsonl");
    let app = spawn_with(Options {
        config: config(&format!(
            "sinks = [{{ type = \"file\", path = \"{}\" }}]",
            file.display()
        )),
        ..Options::default()
    })
    .await;
    mavera_brief(&app).await;
    app.post_segment(&upgrade("file-1")).await;
    app.post_segment(&upgrade("file-1")).await;
    app.settle().await;
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0]["outcome"]["brief"],
        "## Why they upgrade\nThey hit a limit."
    );
    assert_eq!(lines[0]["trigger"], "upgrade_brief");
}

#[test]
fn a_sink_naming_an_unset_variable_is_a_config_error() {
    let err = mavera_triggers::triggers::TriggerTable::from_toml(
        &config("sinks = [{ type = \"slack\", webhook_url = \"${MT_TEST_UNSET_SLACK_URL}\" }]"),
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sinks[0]") && err.contains("MT_TEST_UNSET_SLACK_URL"),
        "{err}"
    );
}
