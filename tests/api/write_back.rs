//! Write-back sinks: the brief reaches Customer.io (Track API) and Segment (HTTP Tracking API) with the exact
//! requests those APIs take, a retry carries the same dedupe id, and what we write back to Segment never
//! triggers anything when Segment forwards it here again.

use mavera_triggers::{
    config::Secret,
    jobs::JobKind,
    triggers::{config::SinkKind, ActionKind},
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{header, method, path},
    Mock, MockServer, Request, ResponseTemplate,
};

use crate::helpers::*;

const SITE_ID: &str = "site-123";
const TRACK_KEY: &str = "track-key-456";
const WRITE_KEY: &str = "segment-write-key-789";

/// `Authorization: Basic base64(user:password)`, as reqwest and the vendors' own libraries write it.
fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
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
    format!("Basic {out}")
}

fn config(source: &str, events: &str, sinks: &str) -> String {
    format!(
        r#"
[[triggers]]
name = "brief_back"
source = "{source}"
events = [{events}]
sinks = [{sinks}]
[triggers.research]
message = "What next for {{{{ user_id }}}}?"
title = "Brief for {{{{ user_id }}}}"
summary = "Plan: {{{{ properties.plan }}}}"
"#
    )
}

const CIO_SINK: &str = r#"{ type = "customerio", attributes = { mavera_brief_title = "{{ outcome.title }}", mavera_brief_job = "{{ outcome.job_id }}" }, event = "mavera_brief_ready" }"#;
const SEGMENT_SINK: &str = r#"{ type = "segment", traits = { mavera_last_brief = "{{ outcome.title }}" }, event = "Mavera Brief Ready" }"#;

struct WriteBackApp {
    app: TestApp,
    track: MockServer,
    segment: MockServer,
}

async fn spawn_write_back(config: String) -> WriteBackApp {
    let track = MockServer::start().await;
    let segment = MockServer::start().await;
    let (track_uri, segment_uri) = (track.uri(), segment.uri());
    let app = spawn_with(Options {
        config,
        tweak: Box::new(move |s| {
            s.write_back.cio_track_base_url = format!("{track_uri}/api/v1");
            s.write_back.cio_site_id = Some(Secret::new(SITE_ID));
            s.write_back.cio_track_api_key = Some(Secret::new(TRACK_KEY));
            s.write_back.segment_api_base_url = format!("{segment_uri}/v1");
            s.write_back.segment_write_key = Some(Secret::new(WRITE_KEY));
        }),
        ..Options::default()
    })
    .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "m", "thread_id": "thr_9", "content": "## Next\nOffer the annual plan.",
            "sources": [{"title": "Study", "url": "https://research.example/a"}],
            "usage": {"credits_used": 25}
        })))
        .mount(&app.mavera)
        .await;
    WriteBackApp {
        app,
        track,
        segment,
    }
}

fn track_event(message_id: &str, who: Value) -> String {
    let mut event = json!({
        "type": "track", "event": "plan_upgraded", "messageId": message_id,
        "properties": {"plan": "pro"},
        "context": {"library": {"name": "analytics.js", "version": "2.11.1"}, "traits": {"email": "jane@acme.example"}}
    });
    event
        .as_object_mut()
        .unwrap()
        .extend(who.as_object().unwrap().clone());
    event.to_string()
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

#[tokio::test]
async fn the_customerio_sink_sets_attributes_and_records_an_event_with_a_fixed_ulid() {
    let w = spawn_write_back(config("segment", "\"plan_upgraded\"", CIO_SINK)).await;
    Mock::given(method("PUT"))
        .and(path("/api/v1/customers/usr_42"))
        .and(header("authorization", basic(SITE_ID, TRACK_KEY).as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(2)
        .mount(&w.track)
        .await;
    // The event endpoint fails once: the retry must carry the same `id`.
    Mock::given(method("POST"))
        .and(path("/api/v1/customers/usr_42/events"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&w.track)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/customers/usr_42/events"))
        .and(header("authorization", basic(SITE_ID, TRACK_KEY).as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&w.track)
        .await;
    let (status, _) = answer(
        w.app
            .post_segment(&track_event("wb-1", json!({"userId": "usr_42"})))
            .await,
    )
    .await;
    assert_eq!(status, 200);
    let counts = w.app.settle().await;
    assert_eq!((counts.done, counts.dead), (2, 0), "{counts:?}");
    w.track.verify().await;

    let requests = w.track.received_requests().await.unwrap();
    let research_job = w
        .app
        .jobs()
        .await
        .into_iter()
        .find(|j| j.new.action == JobKind::Action(ActionKind::Research))
        .unwrap()
        .id;
    let put = requests
        .iter()
        .find(|r| r.method.as_str() == "PUT")
        .unwrap();
    assert_eq!(
        body(put),
        json!({"mavera_brief_title": "Brief for usr_42", "mavera_brief_job": research_job.to_string()})
    );
    let events: Vec<Value> = requests
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(body)
        .collect();
    assert_eq!(events.len(), 2, "the failed attempt and its retry");
    assert_eq!(events[0], events[1], "the retry is the same event, same id");
    let id = events[0]["id"].as_str().unwrap();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    assert!(id.parse::<ulid::Ulid>().is_ok(), "a ULID: {id}");
    assert_eq!(events[0]["name"], "mavera_brief_ready");
    assert_eq!(
        events[0]["data"],
        json!({
            "title": "Brief for usr_42", "summary": "Plan: pro", "brief": "## Next\nOffer the annual plan.",
            "sources": [{"title": "Study", "url": "https://research.example/a", "domain": null}],
            "credits_used": 25.0, "trigger": "brief_back", "job_id": research_job
        })
    );
}

#[tokio::test]
async fn a_person_known_only_by_email_or_cio_id_is_addressed_by_it_and_one_with_neither_is_a_final_error(
) {
    let w = spawn_write_back(config("segment", "\"plan_upgraded\"", CIO_SINK)).await;
    Mock::given(method("PUT"))
        .and(path("/api/v1/customers/jane%40acme.example"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&w.track)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/customers/jane%40acme.example/events"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&w.track)
        .await;
    // Only an anonymousId and an email: Customer.io gets the email.
    w.app
        .post_segment(&track_event("wb-email", json!({"anonymousId": "anon-1"})))
        .await;
    w.app.settle().await;
    w.track.verify().await;

    // Customer.io's own id only.
    let w = spawn_write_back(config("customerio", "\"unsubscribed\"", CIO_SINK)).await;
    Mock::given(method("PUT"))
        .and(path("/api/v1/customers/cio_d9c106000001"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&w.track)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/customers/cio_d9c106000001/events"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&w.track)
        .await;
    let cio_only = json!({
        "event_id": "01E4C4C6P79C12J5A6KPE6XNFD", "object_type": "customer", "metric": "unsubscribed",
        "timestamp": unix_now(), "data": {"identifiers": {"cio_id": "d9c106000001"}}
    });
    let (status, _) = answer(w.app.post_customerio(&cio_only.to_string()).await).await;
    assert_eq!(status, 200);
    w.app.settle().await;
    w.track.verify().await;

    // Nobody at all: the delivery dead-letters with a reason; the brief itself is kept.
    let nobody = json!({
        "event_id": "01E4C4C6P79C12J5A6KPE6XNFE", "object_type": "customer", "metric": "unsubscribed",
        "timestamp": unix_now(), "data": {"identifiers": {}}
    });
    w.app.post_customerio(&nobody.to_string()).await;
    let counts = w.app.settle().await;
    assert_eq!(counts.dead, 1, "{counts:?}");
    let dead = w
        .app
        .jobs()
        .await
        .into_iter()
        .find(|j| j.state == mavera_triggers::jobs::JobState::Dead)
        .unwrap();
    assert_eq!(dead.new.action, JobKind::Delivery(SinkKind::Customerio));
    assert!(
        dead.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no id, email or cio_id"),
        "{:?}",
        dead.last_error
    );
    assert_eq!(w.track.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_segment_sink_identifies_and_tracks_with_fixed_message_ids_and_its_echo_triggers_nothing(
) {
    let w = spawn_write_back(config(
        "segment",
        "\"plan_upgraded\", \"identify\", \"Mavera Brief Ready\"",
        SEGMENT_SINK,
    ))
    .await;
    Mock::given(method("POST"))
        .and(path("/v1/identify"))
        .and(header("authorization", basic(WRITE_KEY, "").as_str()))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&w.segment)
        .await;
    for route in ["/v1/identify", "/v1/track"] {
        Mock::given(method("POST"))
            .and(path(route))
            .and(header("authorization", basic(WRITE_KEY, "").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
            .mount(&w.segment)
            .await;
    }
    w.app
        .post_segment(&track_event("wb-seg", json!({"userId": "usr_7"})))
        .await;
    let counts = w.app.settle().await;
    assert_eq!((counts.done, counts.dead), (2, 0), "{counts:?}");
    let sent: Vec<(String, Value)> = w
        .segment
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| (r.url.path().to_string(), body(r)))
        .collect();
    let identifies: Vec<&Value> = sent
        .iter()
        .filter(|(p, _)| p == "/v1/identify")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(identifies.len(), 2, "the 500 and its retry");
    assert_eq!(
        identifies[0]["messageId"], identifies[1]["messageId"],
        "a retry carries the same messageId"
    );
    let identify = identifies[1];
    assert_eq!(identify["userId"], "usr_7");
    assert_eq!(
        identify["traits"],
        json!({"mavera_last_brief": "Brief for usr_7"})
    );
    assert_eq!(identify["context"]["library"]["name"], "mavera-triggers");
    let track = &sent.iter().find(|(p, _)| p == "/v1/track").unwrap().1;
    assert_eq!(track["event"], "Mavera Brief Ready");
    assert_eq!(track["userId"], "usr_7");
    assert_eq!(track["properties"]["title"], "Brief for usr_7");
    assert_eq!(
        track["properties"]["brief"],
        "## Next\nOffer the annual plan."
    );
    assert_ne!(track["messageId"], identify["messageId"]);

    // Segment forwards both back to this server: acknowledged, signed, and nothing is triggered.
    for echo in [identify, track] {
        let (status, summary) = answer(w.app.post_segment(&echo.to_string()).await).await;
        assert_eq!(status, 200);
        assert_eq!(summary["received"], 1);
        assert_eq!(
            summary["triggered"], 0,
            "a write-back must not loop: {summary}"
        );
    }
    assert_eq!(w.app.settle().await.done, 2, "no new job");
    let metrics = w.app.metrics().await;
    assert!(
        metrics.contains("mavera_triggers_webhooks_loop_guarded_total{source=\"segment\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_broken_sink_template_is_named_at_load() {
    let bad = config(
        "segment",
        "\"plan_upgraded\"",
        r#"{ type = "segment", traits = { x = "{{ outcome.title | nosuchfilter }}" } }"#,
    );
    let err = mavera_triggers::triggers::TriggerTable::from_toml(&bad, "bad.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("brief_back") && err.contains("sinks[0].traits.x"),
        "{err}"
    );
}
