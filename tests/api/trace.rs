//! One trace span per request: every line logged while a webhook is answered names its route, its source and
//! (once parsed) its event id, so a request's lines can be found among everyone else's.

use crate::helpers::*;

/// The captured log line that says `message` and carries every one of `fields`; else every line that says
/// `message`, to show what they carry instead.
fn line_with(app: &TestApp, message: &str, fields: &[&str]) -> Result<String, String> {
    let logs = app.logs();
    let saying: Vec<&str> = logs.lines().filter(|l| l.contains(message)).collect();
    saying
        .iter()
        .find(|l| fields.iter().all(|f| l.contains(f)))
        .map(|l| l.to_string())
        .ok_or_else(|| format!("no `{message}` line carries {fields:?}: {saying:#?}"))
}

#[tokio::test]
async fn an_accepted_segment_event_is_logged_with_its_route_source_and_event_id() {
    let app = spawn_app().await;
    let body = r#"{"type":"identify","userId":"u-trace","messageId":"trace-span-segment-1"}"#;
    assert_eq!(app.post_segment(body).await.status(), 200);
    let fields = [
        "route=/segment",
        "source=segment",
        "event_id=trace-span-segment-1",
    ];
    if let Err(e) = line_with(&app, "webhook accepted", &fields) {
        panic!("{e}");
    }
}

#[tokio::test]
async fn an_accepted_customerio_event_is_logged_with_its_route_source_and_event_id() {
    let app = spawn_app().await;
    let body = format!(
        r#"{{"event_id":"trace-span-cio-1","object_type":"email","metric":"opened","timestamp":{},"data":{{"customer_id":"c-trace"}}}}"#,
        unix_now()
    );
    assert_eq!(app.post_customerio(&body).await.status(), 200);
    let fields = [
        "route=/customerio",
        "source=customerio",
        "event_id=trace-span-cio-1",
    ];
    if let Err(e) = line_with(&app, "webhook accepted", &fields) {
        panic!("{e}");
    }
}

#[tokio::test]
async fn a_refused_request_is_logged_with_its_route_and_source_but_no_event_id() {
    let app = spawn_app().await;
    let body = r#"{"type":"identify","userId":"u-trace","messageId":"trace-span-forged-1"}"#;
    let forged = app
        .post("/segment", body, &[("x-signature", "0".repeat(40))])
        .await;
    assert_eq!(forged.status(), 401);
    let line = line_with(
        &app,
        "webhook rejected",
        &["route=/segment", "source=segment"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !app.logs().contains("event_id=trace-span-forged-1"),
        "a body whose signature failed is never read: {line}"
    );
}
