//! `spawn_app()` and the helpers every test uses.

use std::{
    io::Write,
    sync::{Mutex, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use mavera_triggers::{
    config::{Mode, Secret, Settings},
    jobs::{Job, JobCounts},
    sources::{customerio::sign, signature::sign_sha1},
    startup::App,
    state::AppState,
    triggers::TriggerTable,
};
use tokio_util::sync::CancellationToken;
use wiremock::MockServer;

pub const SEGMENT_SECRET: &str = "test-segment-secret";
pub const CIO_SECRET: &str = "test-cio-signing-key";
pub const MAVERA_KEY: &str = "mvra_live_test_key_123";
pub const CIO_APP_KEY: &str = "cio-app-key-test-456";

/// Everything the server logged during the test run (all tests share one process).
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).to_string()
}

fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static BUF: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    BUF.get_or_init(|| Mutex::new(Vec::new()))
}

struct BufferWriter;

impl Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(|| BufferWriter)
            .init();
    });
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
        }
    }
}

/// The shipped trigger table, production mode, every secret set.
pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(options: Options) -> TestApp {
    init_logs();
    let mavera = MockServer::start().await;
    let cio = MockServer::start().await;
    let data_dir = options
        .data_dir
        .unwrap_or_else(|| std::sync::Arc::new(tempfile::tempdir().unwrap()));
    let mut settings = Settings::defaults(options.mode);
    settings.database_url = format!("sqlite://{}/mavera-triggers.db", data_dir.path().display());
    settings.bind_addr = [127, 0, 0, 1].into();
    settings.port = 0;
    settings.mavera_base_url = format!("{}/api/v1", mavera.uri());
    settings.cio_app_base_url = format!("{}/v1", cio.uri());
    settings.mavera_api_key = Some(Secret::new(MAVERA_KEY));
    settings.segment_secrets = vec![Secret::new(SEGMENT_SECRET)];
    settings.cio_webhook_secrets = vec![Secret::new(CIO_SECRET)];
    settings.cio_app_key = Some(Secret::new(CIO_APP_KEY));
    settings.retry_base = Duration::from_millis(20);
    settings.retry_max = Duration::from_millis(200);
    settings.mavera_timeout = Duration::from_secs(2);
    settings.http_timeout = Duration::from_secs(2);
    settings.mavera_requests_per_minute = 10_000;
    settings.cio_requests_per_second = 1_000;
    (options.tweak)(&mut settings);
    let table = TriggerTable::from_toml(&options.config, "test-config.toml").expect("test config");
    let app = App::build(settings, table).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        state,
        mavera,
        cio,
        http: reqwest::Client::new(),
        shutdown,
        server: Some(server),
        data_dir,
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

    /// Waits until no job is pending or running (retries included), then returns the counts.
    pub async fn settle(&self) -> JobCounts {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let counts = self.state.jobs.store.counts().await.unwrap();
            if counts.settled() {
                return counts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jobs did not settle: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

/// Status and JSON body of a response.
pub async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
