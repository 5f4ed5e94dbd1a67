//! No secret value ever appears in what the server or the CLI prints, across whole runs of the real binary.
//!
//! Five distinctive secrets are set (SEGMENT_SHARED_SECRET, CIO_WEBHOOK_SECRET, MAVERA_API_KEY, CIO_APP_KEY,
//! ADMIN_TOKEN). Three runs of the binary as a child process:
//!
//! 1. `serve` with `RUST_LOG=debug`, pretty logs;
//! 2. the same with `LOG_FORMAT=json`;
//! 3. `dev` without `MAVERA_API_KEY` (the dry run prints every Mavera request).
//!
//! Each run gets signed Segment events for the four shipped Segment triggers, a signed Customer.io
//! `unsubscribed`, wrongly signed requests, admin requests with no / a wrong / the right token, and a hostile
//! upstream: Mavera answers 401 and Customer.io 500, both with a body that ECHOES the `Authorization` header
//! they received (for Mavera's `/mave/chat` and every second Customer.io request the echo is padded so
//! that the key straddles character 300, where the server cuts an upstream error body). Once the jobs settle, `jobs list --state dead`, `jobs show <id>` for every dead job,
//! `check-config` and `send` run with the same environment. Then the server gets SIGTERM.
//!
//! Every captured byte (server stdout and stderr, CLI stdout and stderr, HTTP answers, `last_error` of each
//! job) is scanned for each secret, and for any piece of one at least 12 characters long (a cut-off key is
//! a leak too). A leak is reported with the secret replaced by `<SECRET>` (a piece by `<SECRET-FRAGMENT>`):
//! this test never prints a secret, or a part of one, itself.
//!
//! Run: `cargo test --test no_secrets -- --nocapture` (prints a summary line). `NO_SECRETS_KEEP_DIR=1`
//! keeps the temp dirs (databases and raw logs: these may hold a leaked secret).

use std::{
    fs::File,
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mavera_triggers::{
    config::Secret,
    sources::{
        customerio::{sample as customerio_sample, sign},
        segment::sample as segment_sample,
        signature::sign_sha1,
    },
};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use wiremock::{matchers::any, Mock, MockServer, Request, Respond, ResponseTemplate};

const SEGMENT_SECRET: &str = "SEGSECRET-7f3a9c";
const CIO_SECRET: &str = "CIOSECRET-1b2c3d";
const MAVERA_KEY: &str = "mvra_live_KEY-9e8d7c";
const CIO_APP_KEY: &str = "CIOAPPKEY-4a5b6c";
const ADMIN_TOKEN: &str = "ADMINTOKEN-0f1e2d-7c4b9a13e5f60d28b7a9c3e1";

/// (variable, value) of every secret the runs set.
const SECRETS: [(&str, &str); 5] = [
    ("SEGMENT_SHARED_SECRET", SEGMENT_SECRET),
    ("CIO_WEBHOOK_SECRET", CIO_SECRET),
    ("MAVERA_API_KEY", MAVERA_KEY),
    ("CIO_APP_KEY", CIO_APP_KEY),
    ("ADMIN_TOKEN", ADMIN_TOKEN),
];

/// A piece of a secret this long (or longer) counts as a (partial) leak.
const FRAGMENT: usize = 12;
/// Where an upstream error body is cut (`clients::redacted_detail`); the padded echo puts the key across it.
const CUT_AT: usize = 300;

const SEGMENT_EVENTS: [&str; 4] = [
    "trial_started",
    "plan_upgraded",
    "feature_milestone",
    "churn_signal",
];
const READY_DEADLINE: Duration = Duration::from_secs(15);
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
const STOP_DEADLINE: Duration = Duration::from_secs(40);
const CLI_DEADLINE: Duration = Duration::from_secs(30);

// ── Redaction of the test's own output ──────────────────────────────────────────────────────────────────

/// Where secrets (or pieces of one at least [`FRAGMENT`] characters long) are in `text`: (start, end,
/// variable, whole secret?), byte offsets, sorted, possibly overlapping.
fn secret_spans(text: &str) -> Vec<(usize, usize, &'static str, bool)> {
    let t = text.as_bytes();
    let mut spans = Vec::new();
    for (variable, secret) in SECRETS {
        let s = secret.as_bytes();
        let shortest = FRAGMENT.min(s.len());
        let mut i = 0;
        while i < t.len() {
            let longest = (0..s.len())
                .filter(|&from| s[from] == t[i])
                .map(|from| {
                    t[i..]
                        .iter()
                        .zip(&s[from..])
                        .take_while(|(a, b)| a == b)
                        .count()
                })
                .max()
                .unwrap_or(0);
            if longest >= shortest {
                spans.push((i, i + longest, variable, longest == s.len()));
                i += longest;
            } else {
                i += 1;
            }
        }
    }
    spans.sort_unstable();
    spans
}

/// `text` with every secret replaced by `<SECRET>` and every piece of one by `<SECRET-FRAGMENT>`: safe to
/// print. (Secrets are ASCII, so every span starts and ends on a character boundary.)
fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let spans = secret_spans(text);
    let mut k = 0;
    while k < spans.len() {
        let (start, mut end, _, mut whole) = spans[k];
        k += 1;
        while k < spans.len() && spans[k].0 <= end {
            end = end.max(spans[k].1);
            whole |= spans[k].3;
            k += 1;
        }
        let start = start.max(at);
        out.push_str(&text[at..start]);
        out.push_str(if whole {
            "<SECRET>"
        } else {
            "<SECRET-FRAGMENT>"
        });
        at = end.max(at);
    }
    out.push_str(&text[at..]);
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    sanitize(&all[all.len().saturating_sub(lines)..].join("\n"))
}

// ── The hostile upstreams ───────────────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy)]
enum Upstream {
    /// 401 `{"error":{"message":"invalid api key: <echoed>",…}}`; for `/mave/chat` the key straddles
    /// character [`CUT_AT`] of the body.
    Mavera,
    /// 500 with the header echoed in Customer.io's error shape; on every second request the key straddles
    /// character [`CUT_AT`].
    CustomerIo,
}

struct EchoAuthorization {
    upstream: Upstream,
    requests: AtomicUsize,
}

/// Dots that put `key` across character [`CUT_AT`] of `head + dots + inner` (all but its last 3 characters
/// before the cut), when `inner` holds the key.
fn straddle(head: &str, inner: &str, key: &str) -> String {
    match inner.find(key) {
        Some(at) => ".".repeat((CUT_AT - (key.len() - 3)).saturating_sub(head.len() + at)),
        None => String::new(),
    }
}

impl Respond for EchoAuthorization {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let echoed = request
            .headers
            .get("authorization")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let quoted = serde_json::to_string(&echoed).expect("a string is JSON");
        let inner = &quoted[1..quoted.len() - 1];
        match self.upstream {
            Upstream::Mavera => {
                let head = r#"{"error":{"message":"invalid api key: "#;
                let pad = if request.url.path().ends_with("/mave/chat") {
                    straddle(head, inner, MAVERA_KEY)
                } else {
                    String::new()
                };
                let body = format!(
                    r#"{head}{pad}{inner}","type":"authentication_error","code":"invalid_api_key"}}}}"#
                );
                ResponseTemplate::new(401).set_body_raw(body, "application/json")
            }
            Upstream::CustomerIo => {
                let head = r#"{"errors":[{"detail":"internal error while serving Authorization: "#;
                let pad = if n % 2 == 1 {
                    straddle(head, inner, CIO_APP_KEY)
                } else {
                    String::new()
                };
                let body = format!(r#"{head}{pad}{inner}","status":"500"}}]}}"#);
                ResponseTemplate::new(500).set_body_raw(body, "application/json")
            }
        }
    }
}

async fn hostile(upstream: Upstream) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(EchoAuthorization {
            upstream,
            requests: AtomicUsize::new(0),
        })
        .mount(&server)
        .await;
    server
}

/// How many requests a mock got, and how many carried `Bearer <key>` (and so had the key echoed back).
async fn echoed(server: &MockServer, key: &str) -> (usize, usize) {
    let requests = server.received_requests().await.unwrap_or_default();
    let with_key = requests
        .iter()
        .filter(|r| {
            r.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == format!("Bearer {key}"))
        })
        .count();
    (requests.len(), with_key)
}

// ── What was captured ───────────────────────────────────────────────────────────────────────────────────

struct Capture {
    label: String,
    text: String,
}

#[derive(Default)]
struct Captures(Vec<Capture>);

impl Captures {
    fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.0.push(Capture {
            label: label.into(),
            text: text.into(),
        });
    }

    fn add_output(&mut self, label: &str, out: &CliOutput) {
        self.add(format!("{label} (stdout)"), out.stdout.clone());
        self.add(format!("{label} (stderr)"), out.stderr.clone());
    }

    fn lines(&self) -> usize {
        self.0.iter().map(|c| c.text.lines().count()).sum()
    }
}

struct Leak {
    variable: &'static str,
    partial: bool,
    label: String,
    line_no: usize,
    line: String,
}

fn scan(captures: &Captures) -> Vec<Leak> {
    let mut leaks = Vec::new();
    for capture in &captures.0 {
        for (n, line) in capture.text.lines().enumerate() {
            let spans = secret_spans(line);
            for (variable, _) in SECRETS {
                let mine: Vec<_> = spans.iter().filter(|s| s.2 == variable).collect();
                if mine.is_empty() {
                    continue;
                }
                leaks.push(Leak {
                    variable,
                    partial: !mine.iter().any(|s| s.3),
                    label: capture.label.clone(),
                    line_no: n + 1,
                    line: sanitize(line),
                });
            }
        }
    }
    leaks
}

// ── The child process and the CLI ───────────────────────────────────────────────────────────────────────

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mavera-triggers"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

struct CliOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs a CLI command with the run's environment, away from the repository (no `.env` is read).
async fn cli(run: &Run, args: &[&str]) -> CliOutput {
    let mut command = binary();
    command
        .args(args)
        .envs(run.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(run.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::time::timeout(CLI_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`mavera-triggers {}` did not finish within {CLI_DEADLINE:?}",
                args.join(" ")
            )
        })
        .expect("run the CLI");
    CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    pending: u64,
    running: u64,
    done: u64,
    dead: u64,
}

struct Run {
    label: &'static str,
    command: &'static str,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    base: String,
    http: reqwest::Client,
    child: Option<Child>,
    /// Every HTTP answer the server gave, as text (scanned too).
    answers: String,
}

impl Run {
    fn new(label: &'static str, command: &'static str, env: Vec<(&str, String)>) -> Self {
        let mut dir = tempfile::tempdir().expect("temp dir");
        if std::env::var("NO_SECRETS_KEEP_DIR").is_ok_and(|v| v == "1") {
            dir.disable_cleanup(true);
            println!("no secrets: keeping {} for {label}", dir.path().display());
        }
        let mut env: Vec<(String, String)> =
            env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        env.push((
            "DATABASE_URL".into(),
            format!("sqlite://{}", dir.path().join("x.db").display()),
        ));
        Self {
            label,
            command,
            dir,
            env,
            base: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
            child: None,
            answers: String::new(),
        }
    }

    fn out_path(&self, stream: &str) -> PathBuf {
        self.dir.path().join(format!("server.{stream}"))
    }

    fn server_output(&self) -> (String, String) {
        let read = |p: &Path| std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
        (
            read(&self.out_path("stdout")).unwrap_or_default(),
            read(&self.out_path("stderr")).unwrap_or_default(),
        )
    }

    fn server_tail(&self) -> String {
        let (out, err) = self.server_output();
        format!(
            "--- {} server stdout (tail, sanitized) ---\n{}\n--- stderr (tail, sanitized) ---\n{}",
            self.label,
            tail(&out, 40),
            tail(&err, 40)
        )
    }

    /// Starts the server on a free port and waits for `GET /healthz` (a few tries if the port was taken).
    async fn start(&mut self) {
        for attempt in 1..=3 {
            let port = free_port();
            self.env.retain(|(k, _)| k != "WEBHOOK_PORT");
            self.env.push(("WEBHOOK_PORT".into(), port.to_string()));
            self.base = format!("http://127.0.0.1:{port}");
            let stdout = File::create(self.out_path("stdout")).expect("server stdout file");
            let stderr = File::create(self.out_path("stderr")).expect("server stderr file");
            let mut child = binary()
                .arg(self.command)
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .current_dir(self.dir.path())
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(stderr))
                .spawn()
                .expect("spawn the server binary");
            let deadline = Instant::now() + READY_DEADLINE;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!(
                        "{}: start #{attempt} exited early ({status})\n{}",
                        self.label,
                        self.server_tail()
                    );
                    break;
                }
                if self.counts().await.is_some() {
                    self.child = Some(child);
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill().await;
                    panic!(
                        "{}: not ready within {READY_DEADLINE:?}\n{}",
                        self.label,
                        self.server_tail()
                    );
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        panic!(
            "{}: the server did not start in 3 tries\n{}",
            self.label,
            self.server_tail()
        );
    }

    async fn counts(&self) -> Option<Counts> {
        let response = self
            .http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        let jobs = &body["jobs"];
        Some(Counts {
            pending: jobs["pending"].as_u64()?,
            running: jobs["running"].as_u64()?,
            done: jobs["done"].as_u64()?,
            dead: jobs["dead"].as_u64()?,
        })
    }

    /// Sends a request, records the answer's status and body, and returns them.
    async fn call(&mut self, what: &str, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "{}: {what}: {}\n{}",
                self.label,
                sanitize(&e.to_string()),
                self.server_tail()
            )
        });
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        self.answers
            .push_str(&format!("{what} → {status} {text}\n"));
        (status, text)
    }

    async fn post_segment(
        &mut self,
        what: &str,
        body: &[u8],
        signature: Option<String>,
    ) -> (u16, String) {
        let mut request = self
            .http
            .post(format!("{}/segment", self.base))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(s) = signature {
            request = request.header("x-signature", s);
        }
        self.call(what, request).await
    }

    async fn post_customerio(
        &mut self,
        what: &str,
        body: &[u8],
        stamp: u64,
        signature: String,
    ) -> (u16, String) {
        let request = self
            .http
            .post(format!("{}/customerio", self.base))
            .header("content-type", "application/json")
            .header("x-cio-timestamp", stamp.to_string())
            .header("x-cio-signature", signature)
            .body(body.to_vec());
        self.call(what, request).await
    }

    async fn admin(&mut self, what: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        self.call(what, request).await
    }

    /// Signed events for every shipped Segment trigger and a signed Customer.io `unsubscribed`, then the
    /// wrongly signed ones and the admin requests. Returns how many jobs the good events queued.
    async fn exercise(&mut self, only_trial: bool) -> u64 {
        let good = Secret::new(SEGMENT_SECRET);
        let wrong = Secret::new("not-the-shared-secret");
        let mut triggered = 0;
        let names: &[&str] = if only_trial {
            &SEGMENT_EVENTS[..1]
        } else {
            &SEGMENT_EVENTS
        };
        for name in names {
            let mut event = segment_sample(name);
            event["userId"] = json!(format!("{}-user-{name}", self.label));
            let body = serde_json::to_vec(&event).expect("JSON");
            let (status, text) = self
                .post_segment(
                    &format!("segment {name}"),
                    &body,
                    Some(sign_sha1(&good, &body)),
                )
                .await;
            assert_eq!(
                status,
                200,
                "{}: signed segment {name}: {}",
                self.label,
                sanitize(&text)
            );
            triggered += serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["triggered"].as_u64())
                .unwrap_or(0);
        }

        let cio = Secret::new(CIO_SECRET);
        let body = serde_json::to_vec(&customerio_sample("unsubscribed")).expect("JSON");
        let now = unix_now();
        let (status, text) = self
            .post_customerio(
                "customerio unsubscribed",
                &body,
                now,
                sign(&cio, now, &body),
            )
            .await;
        assert_eq!(
            status,
            200,
            "{}: signed customerio: {}",
            self.label,
            sanitize(&text)
        );
        triggered += serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["triggered"].as_u64())
            .unwrap_or(0);

        // Wrong signatures: each is refused, and the refusal is logged.
        let mut event = segment_sample("trial_started");
        event["userId"] = json!(format!("{}-forger", self.label));
        let body = serde_json::to_vec(&event).expect("JSON");
        let refused = [
            self.post_segment(
                "segment, wrong secret",
                &body,
                Some(sign_sha1(&wrong, &body)),
            )
            .await,
            self.post_segment("segment, no signature", &body, None)
                .await,
            self.post_segment(
                "segment, malformed signature",
                &body,
                Some("zz-not-hex".into()),
            )
            .await,
        ];
        let cio_body = serde_json::to_vec(&customerio_sample("unsubscribed")).expect("JSON");
        let wrong_cio = Secret::new("not-the-signing-key");
        let stale = now - 3600;
        let refused_cio = [
            self.post_customerio(
                "customerio, wrong key",
                &cio_body,
                now,
                sign(&wrong_cio, now, &cio_body),
            )
            .await,
            self.post_customerio(
                "customerio, stale timestamp",
                &cio_body,
                stale,
                sign(&cio, stale, &cio_body),
            )
            .await,
        ];
        for (status, text) in refused.iter().chain(refused_cio.iter()) {
            assert_eq!(
                *status,
                401,
                "{}: a wrongly signed request: {}",
                self.label,
                sanitize(text)
            );
        }

        // Admin: no token, a wrong one (which shares the real one's prefix), the right one.
        let (status, _) = self.admin("admin, no token", "/admin/jobs", None).await;
        assert_eq!(status, 401, "{}: admin without a token", self.label);
        let (status, _) = self
            .admin(
                "admin, wrong token",
                "/admin/jobs",
                Some("ADMINTOKEN-wrong"),
            )
            .await;
        assert_eq!(status, 401, "{}: admin with a wrong token", self.label);
        let (status, text) = self
            .admin("admin, right token", "/admin/jobs", Some(ADMIN_TOKEN))
            .await;
        assert_eq!(
            status,
            200,
            "{}: admin with the right token: {}",
            self.label,
            sanitize(&text)
        );
        triggered
    }

    /// Polls `/healthz` until no job is pending or running.
    async fn settle(&self) -> Counts {
        let start = Instant::now();
        loop {
            if let Some(c) = self.counts().await {
                if c.pending == 0 && c.running == 0 {
                    return c;
                }
            }
            assert!(
                start.elapsed() < SETTLE_DEADLINE,
                "{}: jobs not settled within {SETTLE_DEADLINE:?}: {:?}\n{}",
                self.label,
                self.counts().await,
                self.server_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM (a graceful stop, so the shutdown lines are captured too), SIGKILL past the deadline.
    async fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                eprintln!(
                    "{}: no exit within {STOP_DEADLINE:?} of SIGTERM: killing",
                    self.label
                );
                let _ = child.kill().await;
                None
            }
        }
    }

    /// The server's output and every HTTP answer, into `captures`.
    fn collect(&self, captures: &mut Captures) {
        let (out, err) = self.server_output();
        captures.add(format!("{} server (stdout)", self.label), out);
        captures.add(format!("{} server (stderr)", self.label), err);
        captures.add(format!("{} HTTP answers", self.label), self.answers.clone());
    }
}

fn base_env(
    mavera: &MockServer,
    cio: &MockServer,
    with_mavera_key: bool,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("MAVERA_BASE_URL", format!("{}/api/v1", mavera.uri())),
        ("CIO_APP_BASE_URL", format!("{}/v1", cio.uri())),
        ("BIND_ADDR", "127.0.0.1".to_string()),
        (
            "MAVERA_TRIGGERS_CONFIG",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config/mavera-triggers.toml")
                .display()
                .to_string(),
        ),
        ("RUST_LOG", "debug".to_string()),
        ("RETRY_BASE_MS", "20".to_string()),
        ("RETRY_MAX_MS", "100".to_string()),
        ("RETRY_MAX_ATTEMPTS", "2".to_string()),
    ];
    for (variable, value) in SECRETS {
        if variable != "MAVERA_API_KEY" || with_mavera_key {
            env.push((variable, value.to_string()));
        }
    }
    env
}

// ── The runs ────────────────────────────────────────────────────────────────────────────────────────────

/// One `serve` run. Returns the number of dead jobs checked with `jobs show`.
async fn serve_run(label: &'static str, json_logs: bool, captures: &mut Captures) -> usize {
    let mavera = hostile(Upstream::Mavera).await;
    let cio = hostile(Upstream::CustomerIo).await;
    let mut env = base_env(&mavera, &cio, true);
    if json_logs {
        env.push(("LOG_FORMAT", "json".to_string()));
    }
    let mut run = Run::new(label, "serve", env);
    run.start().await;
    let triggered = run.exercise(false).await;
    assert_eq!(
        triggered, 5,
        "{label}: four Segment triggers and the Customer.io churn alert each queue a job"
    );

    // `send` with the same environment: it signs with the secret, and must not print it.
    let url = format!("{}/segment", run.base);
    let sent = cli(&run, &["send", "segment", "trial_started", "--url", &url]).await;
    assert!(
        sent.status.success(),
        "{label}: send: {}",
        sanitize(&sent.stderr)
    );
    captures.add_output(&format!("{label} `send segment trial_started`"), &sent);

    let counts = run.settle().await;
    assert_eq!(
        counts.done, 0,
        "{label}: with a hostile upstream no job can succeed: {counts:?}"
    );
    assert!(
        counts.dead >= 6,
        "{label}: every job ends dead (Mavera 401 / Customer.io 500): {counts:?}"
    );

    let (status, text) = run
        .admin(
            "admin, dead jobs",
            "/admin/jobs?state=dead",
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{label}: admin list of dead jobs");
    let listed: Value = serde_json::from_str(&text).expect("the admin list is JSON");
    let ids: Vec<u64> = listed["jobs"]
        .as_array()
        .map(|jobs| jobs.iter().filter_map(|j| j["id"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(
        ids.len() as u64,
        counts.dead,
        "{label}: the admin API lists every dead job"
    );

    let list = cli(&run, &["jobs", "list", "--state", "dead"]).await;
    assert!(
        list.status.success(),
        "{label}: jobs list: {}",
        sanitize(&list.stderr)
    );
    captures.add_output(&format!("{label} `jobs list --state dead`"), &list);

    let (mut mavera_errors, mut cio_errors) = (0, 0);
    for id in &ids {
        let show = cli(&run, &["jobs", "show", &id.to_string()]).await;
        assert!(
            show.status.success(),
            "{label}: jobs show {id}: {}",
            sanitize(&show.stderr)
        );
        let json_part = show
            .stdout
            .split("\n--- brief ---")
            .next()
            .unwrap_or_default();
        let job: Value = serde_json::from_str(json_part).unwrap_or_else(|e| {
            panic!(
                "{label}: jobs show {id} is not JSON ({e}): {}",
                sanitize(&show.stdout)
            )
        });
        let last_error = job["last_error"].as_str().unwrap_or_default().to_string();
        assert_eq!(job["state"], "dead", "{label}: job {id}");
        assert!(
            !last_error.is_empty(),
            "{label}: dead job {id} has no last_error"
        );
        if last_error.contains("Mavera answered 401") {
            mavera_errors += 1;
        }
        if last_error.contains("Customer.io answered 500") {
            cio_errors += 1;
        }
        captures.add_output(&format!("{label} `jobs show {id}`"), &show);
        captures.add(format!("{label} job {id} last_error"), last_error);
    }
    assert!(
        mavera_errors >= 5 && cio_errors >= 1,
        "{label}: the dead jobs' last errors are the hostile answers ({mavera_errors} Mavera 401, {cio_errors} Customer.io 500)"
    );

    let check = cli(&run, &["check-config"]).await;
    assert!(
        check.status.success(),
        "{label}: check-config: {}",
        sanitize(&check.stderr)
    );
    assert!(
        check.stdout.contains("sha256:"),
        "{label}: check-config shows fingerprints"
    );
    captures.add_output(&format!("{label} `check-config`"), &check);

    let status = run.stop().await;
    run.collect(captures);
    let (out, err) = run.server_output();
    assert!(
        status.is_some_and(|s| s.success()),
        "{label}: the server did not stop cleanly on SIGTERM ({status:?})\n{}",
        run.server_tail()
    );
    assert!(
        !out.is_empty() || !err.is_empty(),
        "{label}: the server printed nothing"
    );

    // The upstreams were really hostile: they got the key and echoed it.
    let (mavera_requests, mavera_keyed) = echoed(&mavera, MAVERA_KEY).await;
    let (cio_requests, cio_keyed) = echoed(&cio, CIO_APP_KEY).await;
    assert!(
        mavera_keyed >= 5 && mavera_keyed == mavera_requests,
        "{label}: Mavera got {mavera_requests} requests, {mavera_keyed} with the key"
    );
    assert!(
        cio_keyed >= 2 && cio_keyed == cio_requests,
        "{label}: Customer.io got {cio_requests} requests, {cio_keyed} with the key (RETRY_MAX_ATTEMPTS=2)"
    );
    ids.len()
}

/// The `dev` run: no MAVERA_API_KEY (the dry run prints each Mavera request), every other secret set.
async fn dev_run(captures: &mut Captures) {
    let label = "dev";
    let mavera = hostile(Upstream::Mavera).await;
    let cio = hostile(Upstream::CustomerIo).await;
    let mut run = Run::new(label, "dev", base_env(&mavera, &cio, false));
    run.start().await;
    let triggered = run.exercise(true).await;
    assert_eq!(
        triggered, 2,
        "{label}: trial_started and the Customer.io churn alert"
    );
    let counts = run.settle().await;
    let status = run.stop().await;
    run.collect(captures);
    let (out, err) = run.server_output();
    assert!(
        status.is_some_and(|s| s.success()),
        "{label}: the server did not stop cleanly on SIGTERM ({status:?})\n{}",
        run.server_tail()
    );
    assert!(
        format!("{out}{err}").contains("DRY RUN (no MAVERA_API_KEY): would send"),
        "{label}: the dry run printed no Mavera request\n{}",
        run.server_tail()
    );
    assert!(
        counts.done >= 1 && counts.dead >= 1,
        "{label}: the persona (dry run) is done, the look-up (500) dead: {counts:?}"
    );
    let (mavera_requests, _) = echoed(&mavera, MAVERA_KEY).await;
    assert_eq!(
        mavera_requests, 0,
        "{label}: a dry run sends nothing to Mavera"
    );
    let (cio_requests, cio_keyed) = echoed(&cio, CIO_APP_KEY).await;
    assert!(
        cio_keyed >= 2 && cio_keyed == cio_requests,
        "{label}: Customer.io got {cio_requests} requests, {cio_keyed} with the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_ever_appears_in_any_output() {
    let began = Instant::now();
    let mut captures = Captures::default();
    let mut dead = serve_run("serve", false, &mut captures).await;
    dead += serve_run("serve-json", true, &mut captures).await;
    dev_run(&mut captures).await;

    let leaks = scan(&captures);
    for leak in &leaks {
        eprintln!(
            "LEAK of {}{} in {} line {}: {}",
            leak.variable,
            if leak.partial { " (a fragment)" } else { "" },
            leak.label,
            leak.line_no,
            leak.line
        );
    }
    println!(
        "no secrets: 3 runs, {} lines of output scanned ({} captures, {dead} dead jobs' last_error), {} secrets, {} leaks, {:.1?}",
        captures.lines(),
        captures.0.len(),
        SECRETS.len(),
        leaks.len(),
        began.elapsed()
    );
    let mut leaked: Vec<String> = leaks
        .iter()
        .map(|l| {
            format!(
                "{}{}",
                l.variable,
                if l.partial { " (fragment)" } else { "" }
            )
        })
        .collect();
    leaked.sort();
    leaked.dedup();
    assert!(
        leaks.is_empty(),
        "{} line(s) leak a secret ({}); see the LEAK lines above",
        leaks.len(),
        leaked.join(", ")
    );
}
