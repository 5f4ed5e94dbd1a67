//! Crash test: the real binary, SIGKILLed again and again under webhook traffic, loses nothing and doubles
//! nothing.
//!
//! One wiremock server plays Mavera and counts `POST /personas` per persona name. The server (`serve`) runs
//! as a child process on a SQLite file; ~16 tasks send ~2000 distinct signed Segment events plus ~30%
//! re-deliveries, each retried (like Segment) until it gets a 2xx; meanwhile the child is SIGKILLed at random
//! moments and restarted on the same database and port. When every delivery is acknowledged and the job
//! queue has drained, every acknowledged event must have produced exactly one persona.
//!
//! Run: `cargo test --test crash -- --nocapture` (prints a summary line).
//! Knobs (environment): `CRASH_SEED` (u64, replays a run's random choices), `CRASH_EVENTS` (default 2000),
//! `CRASH_STOP_WHEN_ACKED=0` (by default a delivery stops retrying once another delivery of the same
//! messageId got a 2xx — Segment's view of "delivered", the strict check; 0 makes every copy retry until it
//! gets its own 2xx), `CRASH_RUST_LOG` (the child's RUST_LOG,
//! default `warn`), `CRASH_KEEP_DIR=1` (keep the temp dir with the database and the child's log).

use std::{
    collections::{HashMap, HashSet},
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mavera_triggers::{
    config::Secret,
    jobs::{sqlite::SqliteStore, JobReads, JobState},
    sources::signature::sign_sha1,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, Request, Respond, ResponseTemplate,
};

const SEGMENT_SECRET: &str = "crash-test-segment-secret";
const SENDERS: usize = 16;
const REDELIVERY_SHARE: f64 = 0.3;
const MIN_KILLS: u32 = 3;
const SEND_DEADLINE: Duration = Duration::from_secs(60);
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
const READY_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(25);

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ── Mavera, as a wiremock responder with memory ─────────────────────────────────────────────────────────

#[derive(Debug, Clone)]
struct Created {
    id: String,
    name: String,
    created_at: i64,
}

#[derive(Debug, Default)]
struct MaveraBook {
    created: Vec<Created>,
    posts_by_name: HashMap<String, u32>,
    /// `POST /mave/chat` calls per message.
    chats_by_message: HashMap<String, u32>,
    lookups: u64,
    lookup_hits: u64,
}

#[derive(Clone, Default)]
struct FakeMavera {
    book: Arc<Mutex<MaveraBook>>,
    /// How long a chat takes; `None`: 0–60 ms at random.
    chat_delay: Option<Duration>,
}

impl FakeMavera {
    fn book(&self) -> std::sync::MutexGuard<'_, MaveraBook> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Respond for FakeMavera {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if request.url.path().ends_with("/mave/chat") {
            let message = request
                .body_json::<Value>()
                .ok()
                .and_then(|b| b["message"].as_str().map(str::to_string))
                .unwrap_or_default();
            *self.book().chats_by_message.entry(message).or_default() += 1;
            // Mave takes its time: a kill often lands while a chat is in flight.
            let delay = self
                .chat_delay
                .unwrap_or_else(|| Duration::from_millis(rand::rng().random_range(0..=60)));
            return ResponseTemplate::new(200)
                .set_body_json(json!({
                    "id": "msg_crash",
                    "thread_id": "thr_crash",
                    "content": "brief",
                    "sources": [],
                    "usage": {"credits_used": 10},
                }))
                .set_delay(delay);
        }
        if request.method.as_str() == "POST" {
            let Ok(body) = request.body_json::<Value>() else {
                return ResponseTemplate::new(400)
                    .set_body_json(json!({"error": {"message": "body is not JSON"}}));
            };
            let name = body["name"].as_str().unwrap_or_default().to_string();
            let created = {
                let mut book = self.book();
                let created = Created {
                    id: format!("per_{}", book.created.len() + 1),
                    name: name.clone(),
                    created_at: unix_now(),
                };
                book.created.push(created.clone());
                *book.posts_by_name.entry(name).or_default() += 1;
                created
            };
            // Recorded before the delay: a kill during the delay is a create Mavera did that the server never
            // heard about, which is exactly what the in-flight guard must handle.
            let delay = Duration::from_millis(rand::rng().random_range(0..=20));
            ResponseTemplate::new(201)
                .set_body_json(json!({
                    "id": created.id,
                    "object": "custom_persona",
                    "name": created.name,
                    "created_at": created.created_at,
                }))
                .set_delay(delay)
        } else {
            let search = request
                .url
                .query_pairs()
                .find(|(k, _)| k == "search")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let mut book = self.book();
            book.lookups += 1;
            let data: Vec<Value> = book
                .created
                .iter()
                .filter(|p| p.name == search)
                .map(|p| {
                    json!({
                        "id": p.id,
                        "object": "persona",
                        "name": p.name,
                        "is_custom": true,
                        "created_at": p.created_at,
                    })
                })
                .collect();
            if !data.is_empty() {
                book.lookup_hits += 1;
            }
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": data}))
        }
    }
}

// ── The child process ───────────────────────────────────────────────────────────────────────────────────

struct ServerSpec {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    base: String,
}

impl ServerSpec {
    fn spawn(&self, generation: u32) -> Child {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the child's log");
        let _ = writeln!(log, "===== start #{generation} =====");
        let out = log.try_clone().expect("clone the log handle");
        Command::new(env!("CARGO_BIN_EXE_mavera-triggers"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            // Away from the repository, so that no `.env` file is read.
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the server binary")
    }

    /// Starts the server and waits for `GET /healthz`. A start that fails (the port still held a moment
    /// after a kill) is tried again, a few times.
    async fn start(&self, generation: u32, probe: &reqwest::Client) -> Child {
        for _ in 0..5 {
            let mut child = self.spawn(generation);
            let deadline = Instant::now() + READY_DEADLINE;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("server start #{generation} exited early ({status}); trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
                if health(probe, &self.base).await.is_some() {
                    return child;
                }
                if Instant::now() > deadline {
                    let _ = child.kill().await;
                    panic!(
                        "server start #{generation} not ready within {READY_DEADLINE:?}\n{}",
                        log_tail(&self.log)
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!(
            "server start #{generation} failed 5 times\n{}",
            log_tail(&self.log)
        );
    }
}

/// The running child, killed when the test ends however it ends.
#[derive(Clone, Default)]
struct ChildSlot(Arc<Mutex<Option<Child>>>);

impl ChildSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn put(&self, child: Child) {
        *self.lock() = Some(child);
    }
    fn take(&self) -> Option<Child> {
        self.lock().take()
    }
}

struct KillOnDrop(ChildSlot);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.lock().as_mut() {
            let _ = child.start_kill();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    pending: u64,
    running: u64,
    done: u64,
    dead: u64,
}

async fn health(probe: &reqwest::Client, base: &str) -> Option<Counts> {
    let response = probe.get(format!("{base}/healthz")).send().await.ok()?;
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

fn log_tail(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(log) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(6000)));
        let _ = file.read_to_string(&mut text);
    }
    format!("--- tail of {} ---\n{text}", log.display())
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn event_body(i: usize) -> Vec<u8> {
    json!({
        "type": "track",
        "event": "crash_test",
        "messageId": format!("crash-{i}"),
        "userId": format!("user-{i}"),
        "properties": {},
    })
    .to_string()
    .into_bytes()
}

fn persona_name(i: usize) -> String {
    format!("crash crash-{i}")
}

// ── The test ────────────────────────────────────────────────────────────────────────────────────────────

#[derive(Default)]
struct SendStats {
    attempts: AtomicU64,
    refused: AtomicU64,
    unavailable: AtomicU64,
    other_status: AtomicU64,
    abandoned_as_acked: AtomicU64,
}

/// The server's environment: a SQLite file in `dir`, Mavera at `mavera`, the trigger table `triggers`.
fn server_spec(dir: &Path, mavera: &MockServer, triggers: &str) -> ServerSpec {
    let config = dir.join("crash.toml");
    std::fs::write(&config, triggers).expect("write the trigger table");
    let port = free_port();
    ServerSpec {
        dir: dir.to_path_buf(),
        log: dir.join("server.log"),
        base: format!("http://127.0.0.1:{port}"),
        env: vec![
            ("SEGMENT_SHARED_SECRET", SEGMENT_SECRET.to_string()),
            ("MAVERA_API_KEY", "mvra_live_crash".to_string()),
            ("MAVERA_BASE_URL", format!("{}/api/v1", mavera.uri())),
            ("MAVERA_TRIGGERS_CONFIG", config.display().to_string()),
            (
                "DATABASE_URL",
                format!("sqlite://{}", dir.join("crash.db").display()),
            ),
            ("WEBHOOK_PORT", port.to_string()),
            ("BIND_ADDR", "127.0.0.1".to_string()),
            ("MAVERA_REQUESTS_PER_MINUTE", "100000".to_string()),
            ("RETRY_BASE_MS", "20".to_string()),
            ("RETRY_MAX_MS", "200".to_string()),
            ("JOB_LEASE_SECS", "300".to_string()),
            (
                "RUST_LOG",
                std::env::var("CRASH_RUST_LOG").unwrap_or_else(|_| "warn".to_string()),
            ),
        ],
    }
}

/// A fake Mavera on its own wiremock server: personas (create, look up) and chats.
async fn start_mavera() -> (MockServer, FakeMavera) {
    start_mavera_with(FakeMavera::default()).await
}

async fn start_mavera_with(fake: FakeMavera) -> (MockServer, FakeMavera) {
    let mavera = MockServer::start().await;
    for (verb, route) in [
        ("POST", "/api/v1/personas"),
        ("GET", "/api/v1/personas"),
        ("POST", "/api/v1/mave/chat"),
    ] {
        Mock::given(method(verb))
            .and(path(route))
            .respond_with(fake.clone())
            .mount(&mavera)
            .await;
    }
    (mavera, fake)
}

fn temp_dir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().expect("temp dir");
    if std::env::var("CRASH_KEEP_DIR").is_ok_and(|v| v == "1") {
        dir.disable_cleanup(true);
        println!("crash test: keeping {}", dir.path().display());
    }
    dir
}

/// What one run of traffic under kills ended with.
struct Traffic {
    acked: HashSet<usize>,
    redeliveries: usize,
    kills: u32,
    counts: Counts,
    send_time: Duration,
    drain_time: Duration,
    stats: Arc<SendStats>,
}

/// Sends `events` distinct events (`body(i)`) and ~30% re-deliveries, each retried until a 2xx, while the
/// server is SIGKILLed at random moments and restarted; then lets the last server drain the queue.
async fn traffic_under_kills(
    spec: Arc<ServerSpec>,
    events: usize,
    seed: u64,
    body: fn(usize) -> Vec<u8>,
) -> Traffic {
    let stop_when_acked = std::env::var("CRASH_STOP_WHEN_ACKED").map_or(true, |v| v != "0");
    let mut rng = StdRng::seed_from_u64(seed);
    let base = spec.base.clone();
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .expect("probe client");

    let slot = ChildSlot::default();
    let _guard = KillOnDrop(slot.clone());
    slot.put(spec.start(1, &probe).await);

    // What to send: every event once, and ~30% re-deliveries of recent ones (some while the first is in flight).
    let mut plan: Vec<usize> = Vec::with_capacity(events + events / 2);
    for i in 0..events {
        plan.push(i);
        if rng.random_bool(REDELIVERY_SHARE) {
            plan.push(rng.random_range(i.saturating_sub(40)..=i));
        }
    }
    let redeliveries = plan.len() - events;
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Vec<AtomicBool>> =
        Arc::new((0..events).map(|_| AtomicBool::new(false)).collect());
    let stats = Arc::new(SendStats::default());
    let traffic_done = Arc::new(AtomicBool::new(false));
    let secret = Secret::new(SEGMENT_SECRET);

    // The killer: SIGKILL at random moments while traffic runs (and until it has killed MIN_KILLS times).
    let killer = {
        let (spec, slot, probe, traffic_done) = (
            spec.clone(),
            slot.clone(),
            probe.clone(),
            traffic_done.clone(),
        );
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        tokio::spawn(async move {
            let mut kills = 0u32;
            loop {
                let pause = Duration::from_millis(rng.random_range(300..=900));
                tokio::time::sleep(pause).await;
                if traffic_done.load(Ordering::SeqCst) && kills >= MIN_KILLS {
                    return kills;
                }
                let mut child = slot.take().expect("a running child");
                child.kill().await.expect("SIGKILL the server"); // kill() waits for the exit too
                kills += 1;
                slot.put(spec.start(kills + 1, &probe).await);
            }
        })
    };
    // The senders: Segment's behaviour, retry until a 2xx.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("sender client");
    let send_start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (plan, next, acked, stats, client, secret, url) = (
            plan.clone(),
            next.clone(),
            acked.clone(),
            stats.clone(),
            client.clone(),
            secret.clone(),
            format!("{base}/segment"),
        );
        senders.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = plan.get(n) else {
                    return Ok::<(), String>(());
                };
                let body = body(i);
                let signature = sign_sha1(&secret, &body);
                loop {
                    if send_start.elapsed() > SEND_DEADLINE {
                        return Err(format!(
                            "crash-{i} not acknowledged within {SEND_DEADLINE:?}"
                        ));
                    }
                    if stop_when_acked && acked[i].load(Ordering::SeqCst) {
                        stats.abandoned_as_acked.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    stats.attempts.fetch_add(1, Ordering::Relaxed);
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-signature", &signature)
                        .body(body.clone())
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status().is_success() => {
                            acked[i].store(true, Ordering::SeqCst);
                            break;
                        }
                        Ok(r) if r.status().as_u16() == 503 => {
                            stats.unavailable.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            stats.other_status.fetch_add(1, Ordering::Relaxed);
                            eprintln!("crash-{i}: unexpected {}", r.status());
                        }
                        Err(_) => {
                            stats.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        });
    }
    let mut send_errors = Vec::new();
    while let Some(result) = senders.join_next().await {
        if let Err(e) = result.expect("a sender task panicked") {
            send_errors.push(e);
        }
    }
    let send_time = send_start.elapsed();
    traffic_done.store(true, Ordering::SeqCst);
    let kills = killer.await.expect("the killer task panicked");
    let log = spec.log.clone();
    assert!(
        send_errors.is_empty(),
        "{} deliveries never acknowledged, e.g. {:?}\n{}",
        send_errors.len(),
        &send_errors[..send_errors.len().min(5)],
        log_tail(&log)
    );

    // Drain: the last child runs every job to its end.
    let drain_start = Instant::now();
    let counts = loop {
        if let Some(c) = health(&probe, &base).await {
            if c.pending == 0 && c.running == 0 {
                break c;
            }
        }
        assert!(
            drain_start.elapsed() < DRAIN_DEADLINE,
            "jobs not drained within {DRAIN_DEADLINE:?}: {:?}\n{}",
            health(&probe, &base).await,
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drain_time = drain_start.elapsed();
    if let Some(mut child) = slot.take() {
        let _ = child.kill().await;
    }
    Traffic {
        acked: (0..events)
            .filter(|&i| acked[i].load(Ordering::SeqCst))
            .collect(),
        redeliveries,
        kills,
        counts,
        send_time,
        drain_time,
        stats,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_traffic_loses_nothing_and_doubles_nothing() {
    let began = Instant::now();
    let seed: u64 = env_num("CRASH_SEED").unwrap_or_else(|| rand::rng().random());
    let events: usize = env_num("CRASH_EVENTS").unwrap_or(2000);
    let stop_when_acked = std::env::var("CRASH_STOP_WHEN_ACKED").map_or(true, |v| v != "0");
    println!("crash test: seed {seed} (CRASH_SEED={seed} replays the random choices)");
    let (mavera, fake) = start_mavera().await;
    let dir = temp_dir();
    let spec = Arc::new(server_spec(
        dir.path(),
        &mavera,
        r#"
[[triggers]]
name = "crash"
source = "segment"
events = ["crash_test"]

[triggers.create_persona]
name = "crash {{ message_id }}"
description = "d"
"#,
    ));
    let log = spec.log.clone();
    let Traffic {
        acked,
        redeliveries,
        kills,
        counts,
        send_time,
        drain_time,
        stats,
    } = traffic_under_kills(spec, events, seed, event_body).await;

    // What Mavera saw, against what was acknowledged.
    let (posts_by_name, created, lookups, lookup_hits) = {
        let book = fake.book();
        (
            book.posts_by_name.clone(),
            book.created.clone(),
            book.lookups,
            book.lookup_hits,
        )
    };
    let mut lost = Vec::new();
    let mut doubled = Vec::new();
    for &i in &acked {
        match posts_by_name.get(&persona_name(i)).copied().unwrap_or(0) {
            1 => {}
            0 => lost.push(i),
            n => doubled.push((i, n)),
        }
    }
    lost.sort_unstable();
    doubled.sort_unstable();
    let acked_names: HashSet<String> = acked.iter().map(|&i| persona_name(i)).collect();
    let unacked_posts: Vec<&String> = posts_by_name
        .keys()
        .filter(|n| !acked_names.contains(*n))
        .collect();
    if !unacked_posts.is_empty() {
        println!(
            "crash test: {} persona(s) created for events never acknowledged (allowed): {:?}",
            unacked_posts.len(),
            &unacked_posts[..unacked_posts.len().min(10)]
        );
    }

    // The job store, read after the last kill: one job per acknowledged event, done, naming Mavera's persona.
    let store = SqliteStore::open(
        &format!("sqlite://{}", dir.path().join("crash.db").display()),
        true,
    )
    .await
    .expect("open the crash database");
    let jobs = store.list(None, 1_000_000).await.expect("list jobs");
    let id_by_name: HashMap<&str, &str> = created
        .iter()
        .map(|p| (p.name.as_str(), p.id.as_str()))
        .collect();
    let mut jobs_per_event: HashMap<String, u32> = HashMap::new();
    let mut job_problems = Vec::new();
    let mut adopted = 0;
    for job in &jobs {
        *jobs_per_event.entry(job.new.event_id.clone()).or_default() += 1;
        let outcome = job.outcome.clone().unwrap_or(Value::Null);
        if outcome["adopted"] == json!(true) {
            adopted += 1;
        }
        let expected = job
            .new
            .event_id
            .strip_prefix("crash-")
            .and_then(|n| n.parse::<usize>().ok())
            .map(persona_name)
            .and_then(|name| id_by_name.get(name.as_str()).copied());
        if job.state != JobState::Done || outcome["persona_id"].as_str() != expected {
            job_problems.push(format!(
                "job {} ({}): state {:?}, attempts {}, outcome {outcome}, Mavera's persona {expected:?}, last error {:?}",
                job.id, job.new.event_id, job.state, job.attempts, job.last_error
            ));
        }
    }
    let events_without_one_job: Vec<String> = acked
        .iter()
        .map(|&i| format!("crash-{i}"))
        .filter(|id| jobs_per_event.get(id).copied().unwrap_or(0) != 1)
        .collect();

    println!(
        "crash test: {events} events, {redeliveries} re-deliveries, {kills} kills, {} acknowledged, {} personas created exactly once, {} lost, {} doubled, {lookups} adopted-after-crash lookups ({lookup_hits} found the persona, {adopted} jobs adopted it)",
        acked.len(),
        acked.len() - lost.len() - doubled.len(),
        lost.len(),
        doubled.len(),
    );
    println!(
        "crash test: {} delivery attempts ({} refused/reset/timed out, {} × 503, {} other{}), jobs {counts:?}, sending {send_time:.1?}, draining {drain_time:.1?}, total {:.1?}",
        stats.attempts.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.unavailable.load(Ordering::Relaxed),
        stats.other_status.load(Ordering::Relaxed),
        if stop_when_acked {
            format!(
                ", {} retries dropped as already acknowledged",
                stats.abandoned_as_acked.load(Ordering::Relaxed)
            )
        } else {
            String::new()
        },
        began.elapsed()
    );

    let tail = log_tail(&log);
    assert!(kills >= MIN_KILLS, "only {kills} kills (want {MIN_KILLS})");
    assert_eq!(
        acked.len(),
        events,
        "every event is acknowledged in the end"
    );
    assert!(
        lost.is_empty() && doubled.is_empty(),
        "acknowledged events with no persona (lost): {:?}; with more than one (doubled): {:?}\n{tail}",
        &lost[..lost.len().min(20)],
        &doubled[..doubled.len().min(20)]
    );
    assert_eq!(counts.dead, 0, "dead jobs after the crash test\n{tail}");
    assert!(
        events_without_one_job.is_empty(),
        "acknowledged events without exactly one job: {:?}\n{tail}",
        &events_without_one_job[..events_without_one_job.len().min(20)]
    );
    assert!(
        job_problems.is_empty(),
        "{} job(s) not done with Mavera's persona, e.g.:\n{}\n{tail}",
        job_problems.len(),
        job_problems[..job_problems.len().min(10)].join("\n")
    );
}

/// Even events ask for a persona, odd ones for research; every user is new, so no cooldown may refuse.
fn guarded_event_body(i: usize) -> Vec<u8> {
    json!({
        "type": "track",
        "event": if i.is_multiple_of(2) { "crash_persona" } else { "crash_research" },
        "messageId": format!("crash-{i}"),
        "userId": format!("user-{i}"),
        "properties": {},
    })
    .to_string()
    .into_bytes()
}

/// The cost guards survive a kill: a job killed after it took its cooldown is not refused by that same
/// cooldown when it runs again. Every acknowledged event reaches Mavera: each persona exactly once, each
/// research at least once (a research in flight at a kill is asked again), and no job ends held or dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_cooldowns_on_never_holds_a_job_back_by_its_own_guard() {
    let seed: u64 = env_num("CRASH_SEED").unwrap_or_else(|| rand::rng().random());
    let events: usize = env_num("CRASH_GUARDED_EVENTS").unwrap_or(600);
    println!("guarded crash test: seed {seed} (CRASH_SEED={seed} replays the random choices)");
    let (mavera, fake) = start_mavera().await;
    let dir = temp_dir();
    let spec = Arc::new(server_spec(
        dir.path(),
        &mavera,
        r#"
[[triggers]]
name = "crash_persona"
source = "segment"
events = ["crash_persona"]
cooldown = "24h"
budget = { per_hour = 100000 }

[triggers.create_persona]
name = "crash {{ message_id }}"
description = "d"

[[triggers]]
name = "crash_research"
source = "segment"
events = ["crash_research"]
cooldown = "24h"
budget = { per_day = 100000 }

[triggers.research]
message = "research {{ message_id }}"
title = "t"
"#,
    ));
    let log = spec.log.clone();
    let traffic = traffic_under_kills(spec, events, seed, guarded_event_body).await;

    let (posts_by_name, chats_by_message) = {
        let book = fake.book();
        (book.posts_by_name.clone(), book.chats_by_message.clone())
    };
    let mut missed = Vec::new();
    let mut doubled = Vec::new();
    let mut asked_again = 0;
    for &i in &traffic.acked {
        if i.is_multiple_of(2) {
            match posts_by_name.get(&persona_name(i)).copied().unwrap_or(0) {
                1 => {}
                0 => missed.push(i),
                n => doubled.push((i, n)),
            }
        } else {
            match chats_by_message
                .get(&format!("research crash-{i}"))
                .copied()
                .unwrap_or(0)
            {
                0 => missed.push(i),
                1 => {}
                _ => asked_again += 1,
            }
        }
    }
    missed.sort_unstable();
    let store = SqliteStore::open(
        &format!("sqlite://{}", dir.path().join("crash.db").display()),
        true,
    )
    .await
    .expect("open the crash database");
    let held: Vec<String> = store
        .list(Some(JobState::Held), 100)
        .await
        .expect("list held jobs")
        .iter()
        .map(|j| format!("{} ({}): {:?}", j.id, j.new.event_id, j.last_error))
        .collect();
    println!(
        "guarded crash test: {events} events, {} re-deliveries, {} kills, {} acknowledged, {} missed, {} personas doubled, {asked_again} research asked again after a kill, jobs {:?}, sending {:.1?}, draining {:.1?}, {} delivery attempts",
        traffic.redeliveries,
        traffic.kills,
        traffic.acked.len(),
        missed.len(),
        doubled.len(),
        traffic.counts,
        traffic.send_time,
        traffic.drain_time,
        traffic.stats.attempts.load(Ordering::Relaxed),
    );
    let tail = log_tail(&log);
    assert!(traffic.kills >= MIN_KILLS, "only {} kills", traffic.kills);
    assert_eq!(traffic.acked.len(), events, "every event is acknowledged");
    assert!(
        held.is_empty(),
        "jobs held back after kills (by their own guard): {held:?}\n{tail}"
    );
    assert!(
        missed.is_empty() && doubled.is_empty(),
        "acknowledged events Mavera never saw: {:?}; personas created more than once: {:?}\n{tail}",
        &missed[..missed.len().min(20)],
        &doubled[..doubled.len().min(20)]
    );
    assert_eq!(traffic.counts.dead, 0, "dead jobs\n{tail}");
}

/// The same server on another port and log, on the same database.
fn second_server(spec: &ServerSpec) -> ServerSpec {
    let port = free_port();
    let mut env = spec.env.clone();
    for (key, value) in env.iter_mut() {
        if *key == "WEBHOOK_PORT" {
            *value = port.to_string();
        }
    }
    ServerSpec {
        dir: spec.dir.clone(),
        env,
        log: spec.dir.join("second.log"),
        base: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test]
async fn a_second_server_on_the_same_sqlite_file_refuses_to_start_and_a_killed_ones_lock_does_not_block(
) {
    let (mavera, _fake) = start_mavera().await;
    let dir = temp_dir();
    let first = server_spec(
        dir.path(),
        &mavera,
        r#"
[[triggers]]
name = "crash"
source = "segment"
events = ["crash_test"]

[triggers.create_persona]
name = "crash {{ message_id }}"
description = "d"
"#,
    );
    let probe = reqwest::Client::new();
    let slot = ChildSlot::default();
    let _guard = KillOnDrop(slot.clone());
    slot.put(first.start(1, &probe).await);
    let holder = slot.lock().as_ref().and_then(Child::id).expect("a pid");

    let second = second_server(&first);
    let mut refused = second.spawn(1);
    let status = tokio::time::timeout(READY_DEADLINE, refused.wait())
        .await
        .expect("the second server gives up at once")
        .expect("wait for the second server");
    let said = std::fs::read_to_string(&second.log).unwrap_or_default();
    assert!(!status.success(), "the second server must not run\n{said}");
    let database = dir.path().join("crash.db").display().to_string();
    assert!(
        said.contains(&format!(
            "{database} is in use by another mavera-triggers server (pid {holder}"
        )),
        "the refusal names the file and the holder's pid:\n{said}"
    );
    assert!(
        health(&probe, &second.base).await.is_none(),
        "nothing listens for the refused server"
    );

    // SIGKILL: the kernel drops the lock; the pid left in the lock file does not block the next start.
    let mut child = slot.take().expect("the first server");
    child.kill().await.expect("SIGKILL the first server");
    slot.put(second.start(2, &probe).await);
    assert!(health(&probe, &second.base).await.is_some());
}

const RESEARCH_TRIGGER: &str = r#"
[[triggers]]
name = "crash_research"
source = "segment"
events = ["crash_research"]
cooldown = "24h"

[triggers.research]
message = "research {{ message_id }}"
title = "t"
"#;

fn sigterm(child: &Child) {
    let pid = child.id().expect("a running child") as libc::pid_t;
    // SAFETY: kill(2) with a pid this test spawned and still holds.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "send SIGTERM");
}

/// Waits until Mavera has been asked `n` chats in all.
async fn chats_reach(fake: &FakeMavera, n: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while fake.book().chats_by_message.values().sum::<u32>() < n {
        assert!(
            Instant::now() < deadline,
            "Mavera was not asked {n} chat(s) within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a server with one research trigger, sends one event, and waits until its chat is in flight.
async fn research_in_flight(fake: FakeMavera, env: &[(&'static str, &str)]) -> InFlight {
    let (mavera, fake) = start_mavera_with(fake).await;
    let dir = temp_dir();
    let mut spec = server_spec(dir.path(), &mavera, RESEARCH_TRIGGER);
    spec.env
        .extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    let probe = reqwest::Client::new();
    let slot = ChildSlot::default();
    slot.put(spec.start(1, &probe).await);
    let body = guarded_event_body(1);
    let answer = probe
        .post(format!("{}/segment", spec.base))
        .header("content-type", "application/json")
        .header(
            "x-signature",
            sign_sha1(&Secret::new(SEGMENT_SECRET), &body),
        )
        .body(body)
        .send()
        .await
        .expect("the server answers");
    assert!(answer.status().is_success(), "{}", answer.status());
    chats_reach(&fake, 1, Duration::from_secs(10)).await;
    InFlight {
        dir,
        spec,
        fake,
        slot,
        probe,
        _mavera: mavera,
    }
}

/// A server with one research job in flight.
struct InFlight {
    dir: tempfile::TempDir,
    spec: ServerSpec,
    fake: FakeMavera,
    slot: ChildSlot,
    probe: reqwest::Client,
    _mavera: MockServer,
}

#[tokio::test]
async fn on_sigterm_research_in_flight_finishes_the_process_exits_and_nothing_is_asked_again() {
    let fake = FakeMavera {
        chat_delay: Some(Duration::from_secs(2)),
        ..FakeMavera::default()
    };
    let InFlight {
        dir: _dir,
        spec,
        fake,
        slot,
        probe,
        ..
    } = research_in_flight(fake, &[]).await;
    let _guard = KillOnDrop(slot.clone());
    let mut child = slot.take().expect("the server");
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the server exits once its job is done")
        .expect("wait for the server");
    assert!(
        status.success(),
        "a clean exit: {status}\n{}",
        log_tail(&spec.log)
    );
    assert!(
        health(&probe, &spec.base).await.is_none(),
        "intake is closed"
    );

    slot.put(spec.start(2, &probe).await);
    let counts = health(&probe, &spec.base)
        .await
        .expect("the restarted server");
    assert_eq!(
        (counts.pending, counts.running, counts.done, counts.dead),
        (0, 0, 1, 0),
        "the research finished before the exit\n{}",
        log_tail(&spec.log)
    );
    // A worker that found work would ask within milliseconds: give it a moment, then look.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.book().chats_by_message.values().sum::<u32>(),
        1,
        "Mave was asked once, not again after the restart"
    );
}

#[tokio::test]
async fn when_shutdown_grace_runs_out_the_unfinished_job_goes_back_to_the_queue_due_now() {
    let fake = FakeMavera {
        chat_delay: Some(Duration::from_secs(30)),
        ..FakeMavera::default()
    };
    let InFlight {
        dir,
        spec,
        fake,
        slot,
        ..
    } = research_in_flight(fake, &[("SHUTDOWN_GRACE", "1s")]).await;
    let _guard = KillOnDrop(slot.clone());
    let mut child = slot.take().expect("the server");
    let stopping = Instant::now();
    let stopping_ms = unix_now() as u64 * 1000 + 1000;
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the server exits soon after SHUTDOWN_GRACE")
        .expect("wait for the server");
    assert!(status.success(), "{status}\n{}", log_tail(&spec.log));
    assert!(
        stopping.elapsed() >= Duration::from_secs(1),
        "it waited for the grace"
    );

    let store = SqliteStore::open(
        &format!("sqlite://{}", dir.path().join("crash.db").display()),
        true,
    )
    .await
    .expect("open the database");
    let job = store.list(None, 10).await.expect("list jobs").remove(0);
    assert_eq!(job.state, JobState::Pending, "{job:?}");
    assert!(job.run_at_ms <= stopping_ms + 2_000, "due at once: {job:?}");
    assert!(
        job.last_error
            .as_deref()
            .unwrap_or("")
            .contains("SHUTDOWN_GRACE"),
        "{job:?}"
    );
    drop(store);
    assert_eq!(fake.book().chats_by_message.values().sum::<u32>(), 1);
}
