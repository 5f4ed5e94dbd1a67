//! `spawn_app()` and the helpers every test uses.

use std::{
    future::Future,
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mavera_triggers::{
    clock::SharedClock,
    config::{Mode, Secret, Settings},
    jobs::{now_ms, retry::Jitter, Job, JobCounts},
    sources::{customerio::sign, signature::sign_sha1},
    startup::{App, Drain, Seams},
    state::AppState,
    triggers::TriggerTable,
};
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;
use wiremock::MockServer;

pub const SEGMENT_SECRET: &str = "test-segment-secret";
pub const CIO_SECRET: &str = "test-cio-signing-key";
pub const MAVERA_KEY: &str = "mvra_live_test_key_123";
pub const CIO_APP_KEY: &str = "cio-app-key-test-456";

/// How long a helper waits for something to happen before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// One app's log lines: every task the app spawns logs to its own subscriber, which writes here.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn subscriber(&self) -> tracing::Dispatch {
        let buffer = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || buffer.clone())
            .into()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

/// What was logged outside any app's tasks (a task the store spawns at start-up, say), all tests together.
/// A check that something is never logged reads this as well as the app's own lines.
pub fn stray_logs() -> String {
    stray().text()
}

fn stray() -> &'static LogBuffer {
    static STRAY: OnceLock<LogBuffer> = OnceLock::new();
    STRAY.get_or_init(|| {
        let buffer = LogBuffer::default();
        tracing::dispatcher::set_global_default(buffer.subscriber())
            .expect("only the helpers set the global subscriber");
        buffer
    })
}

pub struct TestApp {
    pub address: String,
    pub state: AppState,
    pub mavera: MockServer,
    pub cio: MockServer,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The store's folder; removed when the test ends.
    pub data_dir: std::sync::Arc<tempfile::TempDir>,
    /// Runs due jobs; `None` when the app has its own workers ([`Options::workers`]).
    drain: Option<Drain>,
    logs: LogBuffer,
    subscriber: tracing::Dispatch,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Options for [`spawn_with`].
pub struct Options {
    pub mode: Mode,
    pub config: String,
    pub tweak: Box<dyn FnOnce(&mut Settings) + Send>,
    /// Reuse another app's store (a restart).
    pub data_dir: Option<std::sync::Arc<tempfile::TempDir>>,
    /// Background workers run the jobs (tests about the workers themselves, and about limits on calls
    /// made at once); otherwise jobs run only when the test drains them ([`TestApp::settle`]).
    pub workers: bool,
    /// How a retry's wait is drawn below its backoff ceiling: none by default, so that a drain runs a
    /// retry at once; `|ceiling| ceiling` to leave a retried job pending for a moment.
    pub jitter: Jitter,
    /// The clock the request windows count on (the real one by default).
    pub clock: Option<SharedClock>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: Mode::Serve,
            config: std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/mavera-triggers.toml"
            ))
            .unwrap(),
            tweak: Box::new(|_| {}),
            data_dir: None,
            workers: false,
            jitter: |_| Duration::ZERO,
            clock: None,
        }
    }
}

/// The shipped trigger table, production mode, every secret set.
pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(options: Options) -> TestApp {
    stray();
    let logs = LogBuffer::default();
    let subscriber = logs.subscriber();
    let mavera = MockServer::start().await;
    let cio = MockServer::start().await;
    let data_dir = options
        .data_dir
        .unwrap_or_else(|| std::sync::Arc::new(tempfile::tempdir().unwrap()));
    let mut settings = Settings::defaults(options.mode);
    settings.store.database_url =
        format!("sqlite://{}/mavera-triggers.db", data_dir.path().display());
    settings.server.bind_addr = [127, 0, 0, 1].into();
    settings.server.port = 0;
    settings.mavera.base_url = format!("{}/api/v1", mavera.uri());
    settings.customerio.app_base_url = format!("{}/v1", cio.uri());
    settings.mavera.api_key = Some(Secret::new(MAVERA_KEY));
    settings.segment.secrets = vec![Secret::new(SEGMENT_SECRET)];
    settings.customerio.webhook_secrets = vec![Secret::new(CIO_SECRET)];
    settings.customerio.app_key = Some(Secret::new(CIO_APP_KEY));
    settings.jobs.retry_base = Duration::from_millis(20);
    settings.jobs.retry_max = Duration::from_millis(200);
    settings.mavera.timeout = Duration::from_secs(2);
    settings.jobs.http_timeout = Duration::from_secs(2);
    settings.mavera.requests_per_minute = 10_000;
    settings.customerio.requests_per_second = 1_000;
    (options.tweak)(&mut settings);
    let table = TriggerTable::from_toml(&options.config, "test-config.toml").expect("test config");
    let mut seams = Seams {
        jitter: options.jitter,
        workers: options.workers,
        scoped_logs: true,
        ..Seams::default()
    };
    if let Some(clock) = options.clock {
        seams.clock = clock;
    }
    let app = App::build_with(settings, table, seams)
        .with_subscriber(subscriber.clone())
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let drain = (!options.workers).then(|| app.drain());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(
        app.run_until_stopped(shutdown.clone())
            .with_subscriber(subscriber.clone()),
    );
    TestApp {
        address,
        state,
        mavera,
        cio,
        http: reqwest::Client::new(),
        shutdown,
        server: Some(server),
        data_dir,
        drain,
        logs,
        subscriber,
    }
}

/// Waits until `done` holds, checking every 10 ms for at most [`PATIENCE`]; fails naming `what`. For work
/// the test cannot drain: a write the server makes just after its answer, a ticker's next round.
pub async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl TestApp {
    /// Stops the server the way SIGTERM does, and waits until it has let go of its store.
    pub async fn stop(mut self) -> std::sync::Arc<tempfile::TempDir> {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        self.data_dir.clone()
    }

    /// The SQLite file of this app's store.
    pub fn database_path(&self) -> std::path::PathBuf {
        self.data_dir.path().join("mavera-triggers.db")
    }

    /// Posts to a route with the given headers.
    pub async fn post(
        &self,
        route: &str,
        body: impl Into<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{route}", self.address))
            .body(body.into());
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        request.send().await.expect("the server answers")
    }

    /// A correctly signed Segment delivery (signature over the body, or the first element of a batch).
    pub async fn post_segment(&self, body: &str) -> reqwest::Response {
        let signed = match serde_json::from_str::<Vec<&serde_json::value::RawValue>>(body) {
            Ok(elements) if !elements.is_empty() => elements[0].get().to_string(),
            _ => body.to_string(),
        };
        let sig = sign_sha1(&Secret::new(SEGMENT_SECRET), signed.as_bytes());
        self.post(
            "/segment",
            body,
            &[
                ("content-type", "application/json".into()),
                ("x-signature", sig),
            ],
        )
        .await
    }

    /// A correctly signed Customer.io delivery with a fresh timestamp.
    pub async fn post_customerio(&self, body: &str) -> reqwest::Response {
        let ts = unix_now();
        let sig = sign(&Secret::new(CIO_SECRET), ts, body.as_bytes());
        self.post(
            "/customerio",
            body,
            &[
                ("content-type", "application/json".into()),
                ("x-cio-timestamp", ts.to_string()),
                ("x-cio-signature", sig),
            ],
        )
        .await
    }

    /// This app's log lines (and no other test's).
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// Runs every job that is due now, as a worker would, and says how many attempts were made. Only for
    /// an app without workers.
    pub async fn run_pending_jobs(&self) -> usize {
        let drain = self
            .drain
            .as_ref()
            .expect("this app has its own workers: settle() waits for them instead");
        drain
            .run_pending_jobs()
            .with_subscriber(self.subscriber.clone())
            .await
            .expect("the store answers")
    }

    /// Runs (or, with workers, waits for) every job until none is pending or running, retries included,
    /// then returns the counts. A job due later (a `Retry-After`) is waited for, never longer than its due
    /// time and [`PATIENCE`].
    pub async fn settle(&self) -> JobCounts {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if self.drain.is_some() {
                self.run_pending_jobs().await;
            }
            let counts = self.state.jobs.store.counts().await.unwrap();
            if counts.settled() {
                return counts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jobs did not settle: {counts:?}"
            );
            let due = match (&self.drain, self.state.jobs.store.next_due_ms().await) {
                (Some(_), Ok(Some(due))) => due.saturating_sub(now_ms()).clamp(1, 1_000),
                _ => 10,
            };
            tokio::time::sleep(Duration::from_millis(due)).await;
        }
    }

    /// `GET path` with `Authorization: Bearer <token>` (the console and admin API, as a script calls them).
    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn jobs(&self) -> Vec<Job> {
        self.state.jobs.store.list(None, 1000).await.unwrap()
    }
}

/// A Mave answer with a one-word brief.
pub fn chat_ok() -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(200)
        .set_body_json(serde_json::json!({"id": "m", "content": "brief", "sources": []}))
}

/// A client that shows redirects instead of following them (the console answers a sign-in with 303).
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Status and JSON body of a response.
pub async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
