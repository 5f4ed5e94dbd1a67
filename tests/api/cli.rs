//! The command line as a user runs it: the real binary, in an empty folder, with a clean environment.

use std::process::Command;

/// Runs `mavera-triggers args…` in an empty folder with only `envs` set; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mavera-triggers"))
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .envs(envs.iter().copied())
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn send_with_a_missing_file_is_an_error_not_an_event_named_after_it() {
    let url = format!("http://127.0.0.1:{}/segment", closed_port());
    for missing in ["nosuchfile.json", "./events/trial.txt", "events/x"] {
        let (code, stdout, stderr) = run_cli(&["send", "segment", missing, "--url", &url], &[]);
        assert_eq!(code, 2, "{missing}: {stdout}{stderr}");
        assert!(
            stderr.starts_with(&format!("error: no such file: {missing}. ")),
            "{missing}: {stderr}"
        );
        assert!(!stdout.contains("POST"), "nothing is sent: {stdout}");
    }
}

#[test]
fn send_by_name_still_sends_a_sample_and_a_refused_connection_says_why() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/segment");
    let (code, stdout, stderr) = run_cli(&["send", "segment", "trial_started", "--url", &url], &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("\"event\":\"trial_started\""), "{stdout}");
    assert!(
        stderr.starts_with(&format!("error: cannot reach {url}: error sending request")),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "the cause: {stderr}");
}

#[test]
fn replay_without_an_argument_shows_both_forms() {
    let (code, _, stderr) = run_cli(&["jobs", "replay"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("Usage: mavera-triggers jobs replay <ID|--dead>"),
        "{stderr}"
    );
}

#[test]
fn help_fits_80_columns_as_clap_wraps_it() {
    for command in [
        &["--help"][..],
        &["serve", "--help"],
        &["dev", "--help"],
        &["send", "--help"],
        &["jobs", "--help"],
        &["jobs", "list", "--help"],
        &["jobs", "show", "--help"],
        &["jobs", "replay", "--help"],
        &["check-config", "--help"],
        &["healthcheck", "--help"],
    ] {
        let (code, stdout, stderr) = run_cli(command, &[("COLUMNS", "80")]);
        assert_eq!(code, 0, "{command:?}: {stderr}");
        for line in stdout.lines() {
            assert!(line.chars().count() <= 80, "{command:?}: {line:?}");
        }
    }
}

#[tokio::test]
async fn jobs_list_shows_a_research_jobs_title() {
    let app = crate::helpers::spawn_app().await;
    wiremock::Mock::given(wiremock::matchers::path("/api/v1/mave/chat"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": "msg_1", "content": "## Brief\nThey hit a limit.", "sources": []
            })),
        )
        .expect(1)
        .mount(&app.mavera)
        .await;
    let event = serde_json::json!({
        "type": "track", "event": "plan_upgraded", "messageId": "cli-list-1", "userId": "usr_cli",
        "properties": {"previous_plan": "starter", "new_plan": "pro"}
    });
    assert_eq!(app.post_segment(&event.to_string()).await.status(), 200);
    app.settle().await;
    let url = format!("sqlite://{}", app.database_path().display());
    let (code, stdout, stderr) = run_cli(&["jobs", "list"], &[("DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.contains("plan_upgraded"))
        .unwrap_or_else(|| panic!("no plan_upgraded row:\n{stdout}"));
    assert!(
        row.ends_with("\"PLAN UPGRADE: usr_cli | starter → pro\""),
        "{row}"
    );
}
