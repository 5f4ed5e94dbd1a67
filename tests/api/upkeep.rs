//! Running for months: retention gives the disk back and erasure leaves no trace of a person in the files.

use mavera_triggers::{
    config::Secret,
    jobs::{
        now_ms,
        upkeep::{self, Retention},
    },
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{method, path},
    Mock, ResponseTemplate,
};

use crate::helpers::*;

const ADMIN: &str = "upkeep-admin-token";
const DAY_MS: u64 = 86_400_000;

fn with_admin() -> Options {
    Options {
        tweak: Box::new(|s| s.access.admin_token = Some(Secret::new(ADMIN))),
        ..Options::default()
    }
}

async fn persona_mock(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "per_u", "name": "n"})))
        .mount(&app.mavera)
        .await;
}

/// An event for `user` carrying `email` and `filler` bytes of properties.
fn event(kind: &str, message_id: &str, user: &str, email: &str, filler: usize) -> String {
    json!({
        "type": "track",
        "event": kind,
        "messageId": message_id,
        "userId": user,
        "properties": {"plan": "pro", "notes": "x".repeat(filler)},
        "context": {"traits": {"email": email}},
    })
    .to_string()
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::test]
async fn retention_deletes_old_rows_gives_the_space_back_and_the_server_keeps_working() {
    let app = spawn_app().await;
    persona_mock(&app).await;
    for i in 0..150 {
        let kind = if i % 10 == 0 {
            "trial_started"
        } else {
            "page_viewed"
        };
        let body = event(
            kind,
            &format!("ret-{i}"),
            &format!("u-ret-{i}"),
            "a@example.com",
            8_000,
        );
        assert_eq!(app.post_segment(&body).await.status(), 200);
    }
    app.settle().await;
    let store = app.state.jobs.store.upkeep();
    // Events that matched no trigger are logged a moment after the answer.
    wait_until("events logged", || async {
        app.state
            .jobs
            .store
            .events(&Default::default(), 200)
            .await
            .unwrap()
            .rows
            .len()
            >= 150
    })
    .await;
    // An audit line from today: kept as long as the events.
    app.state
        .jobs
        .store
        .audit(&mavera_triggers::jobs::audit::AuditEntry {
            at_ms: now_ms(),
            action: mavera_triggers::jobs::audit::AuditAction::Reload,
            via: mavera_triggers::jobs::audit::Via::Signal,
            client: "local".into(),
            detail: "5 triggers loaded".into(),
        })
        .await
        .unwrap();
    store.reclaim().await.unwrap();
    let db = app.database_path();
    let before = file_len(&db);

    // As of three months from now, with the default retention.
    let retention = Retention::from_settings(&app.state.settings);
    let pruned = upkeep::prune(
        &*store,
        retention,
        now_ms() + 91 * DAY_MS,
        &app.state.metrics,
    )
    .await
    .unwrap();
    let after = file_len(&db);
    println!("retention: {pruned:?}; database file {before} → {after} bytes");
    assert_eq!((pruned.events, pruned.jobs, pruned.audit), (150, 15, 1));
    assert!(
        app.state
            .jobs
            .store
            .audit_page(None, 10)
            .await
            .unwrap()
            .is_empty(),
        "the audit trail is pruned with the events"
    );
    assert!(
        app.state
            .jobs
            .store
            .events(&Default::default(), 10)
            .await
            .unwrap()
            .rows
            .is_empty()
            && app.jobs().await.is_empty(),
        "rows gone"
    );
    assert!(
        after * 3 < before,
        "space given back: {before} → {after} bytes"
    );
    let wal = db.with_extension("db-wal");
    assert_eq!(file_len(&wal), 0, "the write-ahead log is emptied too");

    let text = app.metrics().await;
    assert!(
        text.contains("mavera_triggers_store_rows_pruned_total{table=\"events\"} 150"),
        "{text}"
    );
    assert!(
        text.contains(&format!("mavera_triggers_store_size_bytes {after}")),
        "{text}"
    );
    assert!(text.contains("mavera_triggers_store_oldest_row_timestamp_seconds{table=\"events\"} 0"));

    // Still working: a new event is acknowledged and its job runs.
    let body = event(
        "trial_started",
        "ret-after",
        "u-ret-after",
        "b@example.com",
        10,
    );
    assert_eq!(app.post_segment(&body).await.status(), 200);
    let counts = app.settle().await;
    assert_eq!((counts.done, counts.dead), (1, 0));
}

/// Every byte of the store's files (database, write-ahead log, shared memory index).
fn store_bytes(app: &TestApp) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(app.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("mavera-triggers.db") {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn erasure_leaves_the_persons_id_and_email_nowhere_in_the_files_and_answers_what_it_removed()
{
    let app = spawn_with(with_admin()).await;
    persona_mock(&app).await;
    let (user, email) = ("erase-me-7f3a91", "erase.me.7f3a91@example.com");
    for (i, kind) in ["trial_started", "page_viewed", "page_viewed"]
        .iter()
        .enumerate()
    {
        let body = event(kind, &format!("erase-msg-{i}"), user, email, 3_000);
        assert_eq!(app.post_segment(&body).await.status(), 200);
    }
    let keep = event(
        "trial_started",
        "keep-msg-1",
        "keep-me-1",
        "keep@example.com",
        10,
    );
    assert_eq!(app.post_segment(&keep).await.status(), 200);
    app.settle().await;
    wait_until("events logged", || async {
        app.state
            .jobs
            .store
            .events(&Default::default(), 10)
            .await
            .unwrap()
            .rows
            .len()
            >= 4
    })
    .await;
    let files = store_bytes(&app);
    assert!(
        contains(&files, user) && contains(&files, email),
        "the person is in the files before"
    );

    let forget = |body: Value| {
        app.http
            .post(format!("{}/admin/forget", app.address))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let (status, answer_body) = answer(forget(json!({"user_id": user})).await.unwrap()).await;
    assert_eq!(status, 200, "{answer_body}");
    assert_eq!(
        answer_body["removed"],
        json!({"events": 3, "jobs": 1, "personas": 1, "cooldowns": 0, "digest_events": 0}),
        "{answer_body}"
    );
    let files = store_bytes(&app);
    assert!(
        !contains(&files, user),
        "the user id is gone from every file, WAL and free pages included"
    );
    assert!(
        !contains(&files, email),
        "the email is gone from every file"
    );
    assert!(contains(&files, "keep-me-1"), "someone else's data stays");

    let (status, again) = answer(forget(json!({"user_id": user})).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        again["removed"],
        json!({"events": 0, "jobs": 0, "personas": 0, "cooldowns": 0, "digest_events": 0}),
        "idempotent"
    );
    let (status, bad) = answer(forget(json!({"user": user})).await.unwrap()).await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("user_id"), "{bad}");
    let refused = app
        .http
        .post(format!("{}/admin/forget", app.address))
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "needs the admin token");
    assert!(
        !app.logs().contains(email) && !stray_logs().contains(email),
        "the email never reaches the logs"
    );
}

#[tokio::test]
async fn the_forget_command_erases_a_person_and_prints_what_it_removed() {
    let app = spawn_app().await;
    persona_mock(&app).await;
    let body = event(
        "trial_started",
        "cli-msg-1",
        "cli-user-1",
        "cli@example.com",
        10,
    );
    assert_eq!(app.post_segment(&body).await.status(), 200);
    app.settle().await;
    let db = app.database_path();
    let dir = app.stop().await;
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mavera-triggers"))
            .args(["forget", "--user", "cli-user-1"])
            .env_clear()
            .env("DATABASE_URL", format!("sqlite://{}", db.display()))
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let printed: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        printed["removed"],
        json!({"events": 1, "jobs": 1, "personas": 1, "cooldowns": 0, "digest_events": 0})
    );
    let second: Value = serde_json::from_slice(&run().stdout).unwrap();
    assert_eq!(second["removed"]["events"], 0, "idempotent");
}
