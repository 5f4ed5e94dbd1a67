//! Digests: events gathered per key make one Mave call per digest, naming its events; `max` closes one
//! early; a restart in the middle of a window loses nothing. Windows are closed on demand, not waited for.

use serde_json::json;
use wiremock::{
    matchers::{method, path},
    Mock, ResponseTemplate,
};

use crate::helpers::*;

fn config(max: u32) -> String {
    format!(
        r#"
[[triggers]]
name = "churn_digest"
source = "segment"
events = ["churned"]
[triggers.vars]
persona_type = "{{{{ properties.segment }}}}"
[triggers.digest]
window = "1h"
max = {max}
by = "{{{{ persona_type }}}}"
[triggers.research]
message = "{{{{ count }}}} {{{{ key }}}} customers churned:{{% for e in events %}} {{{{ e.user_id }}}}{{% endfor %}}"
title = "Churn digest: {{{{ key }}}}"
"#
    )
}

fn churned(n: u32, segment: &str) -> String {
    json!({
        "type": "track", "event": "churned", "messageId": format!("churn-{segment}-{n}"),
        "userId": format!("{segment}-u{n}"), "properties": {"segment": segment}
    })
    .to_string()
}

async fn mount_chat(app: &TestApp, times: u64) {
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "m", "content": "## Why they leave\nPrice.", "usage": {"credits_used": 30}
        })))
        .expect(times)
        .mount(&app.mavera)
        .await;
}

async fn chat_messages(app: &TestApp) -> Vec<String> {
    let mut messages: Vec<String> = app
        .mavera
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    messages.sort();
    messages
}

/// Closes every open digest now, as the window's end would, and waits for the work it causes.
async fn close_windows(app: &TestApp) {
    let later = mavera_triggers::jobs::now_ms() + 2 * 3_600_000;
    app.state.jobs.close_due_digests(later).await.unwrap();
    app.settle().await;
}

#[tokio::test]
async fn five_events_of_one_key_and_two_of_another_make_two_mave_calls_each_naming_its_events() {
    let app = spawn_with(Options {
        config: config(50),
        ..Options::default()
    })
    .await;
    mount_chat(&app, 2).await;
    for n in 1..=5 {
        assert_eq!(app.post_segment(&churned(n, "smb")).await.status(), 200);
    }
    for n in 1..=2 {
        assert_eq!(
            app.post_segment(&churned(n, "enterprise")).await.status(),
            200
        );
    }
    // A re-delivery gathers nothing twice.
    app.post_segment(&churned(1, "smb")).await;
    let counts = app.settle().await;
    assert_eq!(counts.done, 7, "seven events gathered: {counts:?}");
    assert!(
        chat_messages(&app).await.is_empty(),
        "nothing asked before the window ends"
    );

    let open = app.state.jobs.store.open_digests().await.unwrap();
    let mut held: Vec<(String, u32)> = open.iter().map(|d| (d.key.clone(), d.count)).collect();
    held.sort();
    assert_eq!(
        held,
        [("enterprise".to_string(), 2), ("smb".to_string(), 5)]
    );

    close_windows(&app).await;
    assert_eq!(
        chat_messages(&app).await,
        [
            "2 enterprise customers churned: enterprise-u1 enterprise-u2",
            "5 smb customers churned: smb-u1 smb-u2 smb-u3 smb-u4 smb-u5",
        ]
    );
    app.mavera.verify().await;
    let briefs: Vec<String> = app
        .jobs()
        .await
        .into_iter()
        .filter_map(|j| j.outcome?["digest"]["key"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        briefs.len(),
        2,
        "each digest's brief says which digest it was"
    );
    assert!(app
        .state
        .jobs
        .store
        .open_digests()
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn max_closes_a_digest_early_and_the_next_event_opens_a_new_one() {
    let app = spawn_with(Options {
        config: config(3),
        ..Options::default()
    })
    .await;
    mount_chat(&app, 1).await;
    // Workers gather concurrently: which events fill a digest is the order they are gathered in, so the
    // fourth comes after the first three are in.
    for n in 1..=3 {
        app.post_segment(&churned(n, "smb")).await;
    }
    app.settle().await;
    app.post_segment(&churned(4, "smb")).await;
    app.settle().await;
    assert_eq!(
        chat_messages(&app).await,
        ["3 smb customers churned: smb-u1 smb-u2 smb-u3"],
        "the third event filled the digest: asked at once, without waiting for the window"
    );
    let open = app.state.jobs.store.open_digests().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].count, open[0].users.clone()),
        (1, vec!["smb-u4".to_string()])
    );
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_window_loses_no_gathered_event() {
    let app = spawn_with(Options {
        config: config(50),
        ..Options::default()
    })
    .await;
    for n in 1..=2 {
        app.post_segment(&churned(n, "smb")).await;
    }
    app.settle().await;
    let data_dir = app.stop().await;

    let app = spawn_with(Options {
        config: config(50),
        data_dir: Some(data_dir),
        ..Options::default()
    })
    .await;
    mount_chat(&app, 1).await;
    app.post_segment(&churned(3, "smb")).await;
    app.settle().await;
    close_windows(&app).await;
    assert_eq!(
        chat_messages(&app).await,
        ["3 smb customers churned: smb-u1 smb-u2 smb-u3"]
    );
    app.mavera.verify().await;
}

#[tokio::test]
async fn the_console_lists_open_digests_and_its_dry_run_says_which_digest_an_event_joins() {
    const TOKEN: &str = "digest-console-token-0123456789abcdef";
    let app = spawn_with(Options {
        config: config(50),
        tweak: Box::new(|s| {
            s.access.admin_token = Some(mavera_triggers::config::Secret::new(TOKEN))
        }),
        ..Options::default()
    })
    .await;
    app.post_segment(&churned(1, "smb")).await;
    app.settle().await;
    let page = app
        .get_as("/console/triggers", TOKEN)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Open digests"), "{page}");
    assert!(
        page.contains("<td>smb</td><td>1 of 50</td><td>smb-u1</td>"),
        "{page}"
    );

    let csrf = {
        let start = page.find("name=csrf value=\"").unwrap() + "name=csrf value=\"".len();
        page[start..start + 64].to_string()
    };
    let dry = app
        .http
        .post(format!("{}/console/triggers/test", app.address))
        .bearer_auth(TOKEN)
        .form(&[
            ("csrf", csrf.as_str()),
            ("source", "segment"),
            ("body", &churned(9, "enterprise")),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        dry.contains("would be gathered into the digest <code>enterprise</code>"),
        "{dry}"
    );
    assert_eq!(
        app.state.jobs.store.open_digests().await.unwrap().len(),
        1,
        "a dry run gathers nothing"
    );
}
