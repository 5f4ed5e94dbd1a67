//! Several replicas sharing one Postgres: the store conformance tests (one test per check, each in a fresh
//! database of one shared server), exactly-once processing across replicas with the shared rate limit held,
//! a replica killed mid-job, and Postgres restarted under load.
//!
//! The test starts its own throwaway Postgres on 127.0.0.1 (`tests/common/pg.rs`: `initdb`, `pg_ctl` and
//! `postgres` must be on PATH, or in /usr/lib/postgresql/*/bin) and stops it at the end. Without them the
//! suite is reported skipped (`tests/common/skip.rs`; `REQUIRE_POSTGRES=1` makes that a failure). Servers are
//! the real binary, run as child processes.

#[macro_use]
#[path = "common/conformance.rs"]
mod conformance;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/skip.rs"]
mod skip;

use std::{
    collections::HashMap,
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mavera_triggers::{
    config::Secret,
    jobs::{postgres::PgStore, JobStore},
    sources::signature::sign_sha1,
};
use serde_json::{json, Value};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SECRET: &str = "pg-suite-segment-secret";

/// Mavera as the replicas see it: creates personas (recording each POST by name and arrival time, before
/// any delay), updates them (`PATCH`), and finds them again by name.
#[derive(Clone, Default)]
struct FakeMavera {
    book: Arc<Mutex<Book>>,
}

#[derive(Default)]
struct Book {
    posts: Vec<(String, Instant)>,
    lookups: usize,
    /// `POST /mave/chat` messages with their arrival, before any delay.
    chats: Vec<(String, Instant)>,
}

impl FakeMavera {
    fn posts_by_name(&self) -> HashMap<String, usize> {
        let mut by = HashMap::new();
        for (name, _) in &self.book.lock().unwrap().posts {
            *by.entry(name.clone()).or_insert(0) += 1;
        }
        by
    }
    fn arrivals(&self) -> Vec<Instant> {
        self.book
            .lock()
            .unwrap()
            .posts
            .iter()
            .map(|(_, t)| *t)
            .collect()
    }
}

impl Respond for FakeMavera {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if request.url.path().ends_with("/mave/chat") {
            let body: Value = request.body_json().unwrap_or_default();
            let message = body["message"].as_str().unwrap_or_default().to_string();
            let delay = if message.contains("slow") {
                Duration::from_secs(60)
            } else {
                Duration::ZERO
            };
            self.book
                .lock()
                .unwrap()
                .chats
                .push((message, Instant::now()));
            return ResponseTemplate::new(200)
                .set_body_json(json!({"id": "msg", "content": "brief", "sources": []}))
                .set_delay(delay);
        }
        if request.method.as_str() == "POST" {
            let body: Value = request.body_json().unwrap_or_default();
            let name = body["name"].as_str().unwrap_or_default().to_string();
            let mut book = self.book.lock().unwrap();
            book.posts.push((name.clone(), Instant::now()));
            let id = format!("per_{}", book.posts.len());
            let delay = if name.contains("slow") {
                Duration::from_secs(30)
            } else {
                Duration::ZERO
            };
            ResponseTemplate::new(201)
                .set_body_json(
                    json!({"id": id, "object": "custom_persona", "name": name, "created_at": now}),
                )
                .set_delay(delay)
        } else if request.method.as_str() == "PATCH" {
            // An update of a persona created before: a job whose create succeeded but whose outcome was
            // not recorded (Postgres went away in between) is run again and updates what it made.
            let body: Value = request.body_json().unwrap_or_default();
            let id = request
                .url
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            ResponseTemplate::new(200).set_body_json(
                json!({"id": id, "object": "custom_persona", "name": body["name"], "created_at": now}),
            )
        } else {
            let search = request
                .url
                .query_pairs()
                .find(|(k, _)| k == "search")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let mut book = self.book.lock().unwrap();
            book.lookups += 1;
            let data: Vec<Value> = book
                .posts
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| *n == search)
                .map(|(i, (n, _))| json!({"id": format!("per_{}", i + 1), "object": "persona", "name": n, "is_custom": true, "created_at": now}))
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": data}))
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Replica {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Replica {
    fn start(dir: &Path, name: &str, env: &[(&str, String)]) -> Replica {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mavera-triggers"))
            .arg("serve")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("WEBHOOK_PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("the server binary starts");
        Replica { child, port, log }
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{}/healthz", self.port)).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "replica on {} did not start:\n{}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!(
                "--- {} (last lines, newest first)\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

fn env_for(
    pg_url: &str,
    mavera: &MockServer,
    config: &Path,
    extra: &[(&str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", pg_url.to_string()),
        ("SEGMENT_SHARED_SECRET", SECRET.to_string()),
        ("MAVERA_API_KEY", "mvra_live_pg_suite".to_string()),
        ("MAVERA_BASE_URL", format!("{}/api/v1", mavera.uri())),
        ("MAVERA_TRIGGERS_CONFIG", config.display().to_string()),
        ("RETRY_BASE_MS", "50".to_string()),
        ("RETRY_MAX_MS", "500".to_string()),
        ("RETRY_MAX_ATTEMPTS", "50".to_string()),
        ("MAVERA_REQUESTS_PER_MINUTE", "100000".to_string()),
    ];
    for (k, v) in extra {
        env.retain(|(existing, _)| existing != k);
        let key: &'static str = Box::leak(k.to_string().into_boxed_str());
        env.push((key, v.to_string()));
    }
    env
}

fn event(id: &str) -> String {
    json!({"type": "track", "event": "pg_test", "messageId": id, "userId": format!("user-{id}"), "properties": {}}).to_string()
}

/// Posts one signed event until it is acknowledged (as Segment retries), within a bound.
async fn deliver(http: &reqwest::Client, port: u16, body: &str) -> u16 {
    let sig = sign_sha1(&Secret::new(SECRET), body.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    loop {
        let answer = http
            .post(format!("http://127.0.0.1:{port}/segment"))
            .header("x-signature", &sig)
            .body(body.to_string())
            .send()
            .await;
        if let Ok(r) = answer {
            if r.status().is_success() {
                return refused;
            }
        }
        refused += 1;
        assert!(Instant::now() < deadline, "an event was never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_all_done(pool: &sqlx::PgPool, bound: Duration) -> (i64, i64) {
    let deadline = Instant::now() + bound;
    loop {
        let (open,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')")
                .fetch_one(pool)
                .await
                .unwrap();
        let (done, dead): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE state = 'done'), COUNT(*) FILTER (WHERE state = 'dead') FROM jobs",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if open == 0 {
            return (done, dead);
        }
        if Instant::now() >= deadline {
            let states: Vec<(String, i64, Option<String>)> =
                sqlx::query_as("SELECT state, COUNT(*), MAX(last_error) FROM jobs GROUP BY state")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            panic!("jobs did not finish: {open} open; by state: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const CONFIG: &str = r#"
[[triggers]]
name = "pg_persona"
source = "segment"
events = ["pg_test"]
[triggers.create_persona]
name = "pg {{ message_id }}"
description = "d"
"#;

fn main() -> std::process::ExitCode {
    let missing = pg::what_is_missing().map(skip::Missing::from);
    macro_rules! on_postgres {
        ($($check:ident),* $(,)?) => {
            vec![$(skip::Test {
                name: concat!("conformance::", stringify!($check)),
                run: || on_a_fresh_database(stringify!($check), conformance::$check),
            }),*]
        };
    }
    let mut tests: Vec<skip::Test> = every_check!(on_postgres);
    tests.push(skip::Test {
        name: "replicas_share_one_postgres",
        run: || {
            let _alone = timing_alone().write();
            skip::block_on(2, replicas_share_one_postgres())
        },
    });
    let code = skip::run_suite("Postgres suite", "REQUIRE_POSTGRES", missing, tests);
    // Stopped and its directory removed once every check has run.
    drop(shared_postgres().take());
    code
}

/// The server the conformance checks share (each in a database of its own), started by the first.
fn shared_postgres() -> std::sync::MutexGuard<'static, Option<pg::TestPostgres>> {
    static SHARED: Mutex<Option<pg::TestPostgres>> = Mutex::new(None);
    SHARED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The replicas' test measures request rates in real time: it runs alone, the conformance checks (which may
/// run side by side) before or after it, as when they were one test.
fn timing_alone() -> &'static std::sync::RwLock<()> {
    static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());
    &ALONE
}

/// Runs one conformance check on a fresh database of the shared server.
fn on_a_fresh_database<F>(name: &str, check: fn(Arc<dyn JobStore>) -> F)
where
    F: std::future::Future<Output = ()>,
{
    let _beside_each_other = timing_alone().read();
    let url = {
        let mut shared = shared_postgres();
        let pg = shared.get_or_insert_with(pg::TestPostgres::start);
        pg.create_database(name);
        pg.url(name)
    };
    skip::block_on(2, async move {
        let store = PgStore::open(&url, 10, Duration::from_secs(5))
            .await
            .unwrap();
        check(Arc::new(store)).await;
    });
}

async fn replicas_share_one_postgres() {
    let pg = pg::TestPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triggers.toml");
    std::fs::write(&config, CONFIG).unwrap();

    // `PG_SUITE_ONLY=replicas|takeover|cio|slots|restart` runs one part (for debugging).
    let only = std::env::var("PG_SUITE_ONLY").ok();
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if run("replicas") {
        replicas_process_each_event_once_under_one_rate_limit(&pg, dir.path(), &config).await;
    }
    if run("takeover") {
        a_killed_replicas_job_is_finished_by_another(&pg, dir.path(), &config).await;
    }
    if run("cio") {
        replicas_share_the_customerio_rate_limit(&pg, dir.path()).await;
    }
    if run("slots") {
        a_dead_replicas_chat_slots_free_themselves(&pg, dir.path()).await;
    }
    if run("restart") {
        a_postgres_restart_under_load_loses_nothing(&pg, dir.path(), &config).await;
    }
}

async fn replicas_process_each_event_once_under_one_rate_limit(
    pg: &pg::TestPostgres,
    dir: &Path,
    config: &Path,
) {
    pg.create_database("replicas");
    let mavera = MockServer::start().await;
    let fake = FakeMavera::default();
    Mock::given(wiremock::matchers::any())
        .respond_with(fake.clone())
        .mount(&mavera)
        .await;
    let (limit, window) = (40, Duration::from_secs(2));
    let env = env_for(
        &pg.url("replicas"),
        &mavera,
        config,
        &[
            ("MAVERA_REQUESTS_PER_MINUTE", "40"),
            ("MAVERA_RATE_WINDOW_SECS", "2"),
        ],
    );
    let replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::start(dir, &format!("replica-{i}"), &env))
        .collect();
    for r in &replicas {
        r.ready().await;
    }
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let events = 200;
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..events {
        let (http, ports) = (http.clone(), ports.clone());
        sends.spawn(async move {
            let id = format!("rr-{i}");
            deliver(&http, ports[i % 3], &event(&id)).await;
            // Every third event is delivered again, to another replica.
            if i % 3 == 0 {
                deliver(&http, ports[(i + 1) % 3], &event(&id)).await;
            }
        });
        if sends.len() >= 8 {
            sends.join_next().await;
        }
    }
    sends.join_all().await;
    let pool = sqlx::PgPool::connect(&pg.url("replicas")).await.unwrap();
    let (done, dead) = wait_all_done(&pool, Duration::from_secs(60)).await;
    let posts = fake.posts_by_name();
    let once = (0..events)
        .filter(|i| posts.get(&format!("pg rr-{i}")) == Some(&1))
        .count();
    let arrivals = fake.arrivals();
    // Measured at the mock, as Mavera would count them (the limiter keeps a margin for jitter).
    let measured = window;
    let worst = arrivals
        .iter()
        .map(|t| {
            arrivals
                .iter()
                .filter(|u| **u >= *t && u.duration_since(*t) < measured)
                .count()
        })
        .max()
        .unwrap_or(0);
    println!(
        "postgres: 3 replicas, {events} events + {} re-deliveries to other replicas: {once} processed exactly once, {done} jobs done, {dead} dead; most Mavera requests in any {} ms: {worst} (limit {limit} per {} ms)",
        events / 3 + 1,
        measured.as_millis(),
        window.as_millis()
    );
    assert_eq!(once, events, "every event processed exactly once");
    assert_eq!(posts.len(), events, "no other personas");
    assert_eq!(dead, 0);
    assert!(
        worst <= limit,
        "{worst} requests within one window (limit {limit})"
    );
}

async fn a_killed_replicas_job_is_finished_by_another(
    pg: &pg::TestPostgres,
    dir: &Path,
    config: &Path,
) {
    pg.create_database("takeover");
    let mavera = MockServer::start().await;
    let fake = FakeMavera::default();
    Mock::given(wiremock::matchers::any())
        .respond_with(fake.clone())
        .mount(&mavera)
        .await;
    let env = env_for(
        &pg.url("takeover"),
        &mavera,
        config,
        &[("JOB_LEASE_SECS", "2"), ("HTTP_TIMEOUT_SECS", "60")],
    );
    let mut first = Replica::start(dir, "takeover-a", &env);
    first.ready().await;
    let http = reqwest::Client::new();
    deliver(&http, first.port, &event("slow-takeover")).await;
    // Wait until the first replica is inside the Mavera call, then kill it there.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.posts_by_name().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first replica never called Mavera"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = Replica::start(dir, "takeover-b", &env);
    second.ready().await;
    first.kill();
    let pool = sqlx::PgPool::connect(&pg.url("takeover")).await.unwrap();
    let started = Instant::now();
    let (done, dead) = wait_all_done(&pool, Duration::from_secs(30)).await;
    let (outcome,): (String,) = sqlx::query_as("SELECT outcome::text FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    let outcome: Value = serde_json::from_str(&outcome).unwrap();
    println!(
        "postgres: replica killed mid-call; the other took the job over in {:.1} s: done {done}, dead {dead}, outcome {outcome}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!((done, dead), (1, 0));
    assert_eq!(
        outcome["persona_id"], "per_1",
        "the persona the killed replica created was found, not created again"
    );
    assert_eq!(fake.posts_by_name().get("pg slow-takeover"), Some(&1));
    drop(second);
}

async fn a_postgres_restart_under_load_loses_nothing(
    pg: &pg::TestPostgres,
    dir: &Path,
    config: &Path,
) {
    pg.create_database("restart");
    let mavera = MockServer::start().await;
    let fake = FakeMavera::default();
    Mock::given(wiremock::matchers::any())
        .respond_with(fake.clone())
        .mount(&mavera)
        .await;
    let env = env_for(
        &pg.url("restart"),
        &mavera,
        config,
        &[("JOB_LEASE_SECS", "3")],
    );
    let replicas: Vec<Replica> = (0..2)
        .map(|i| Replica::start(dir, &format!("restart-{i}"), &env))
        .collect();
    for r in &replicas {
        r.ready().await;
    }
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let events = 300;
    let refused = Arc::new(Mutex::new(0u32));
    let sender = {
        let (http, ports, refused) = (http.clone(), ports.clone(), refused.clone());
        tokio::spawn(async move {
            let mut sends = tokio::task::JoinSet::new();
            for i in 0..events {
                let (http, ports, refused) = (http.clone(), ports.clone(), refused.clone());
                sends.spawn(async move {
                    let n = deliver(&http, ports[i % 2], &event(&format!("restart-{i}"))).await;
                    *refused.lock().unwrap() += n as u32;
                });
                if sends.len() >= 4 {
                    sends.join_next().await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            sends.join_all().await;
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    pg.stop();
    // While Postgres is away a webhook is refused with 503 and Retry-After, never acknowledged.
    let probe = event("restart-probe");
    let answer = http
        .post(format!("http://127.0.0.1:{}/segment", ports[0]))
        .header(
            "x-signature",
            sign_sha1(&Secret::new(SECRET), probe.as_bytes()),
        )
        .body(probe)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503, "Postgres is down");
    assert!(answer.headers().get("retry-after").is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.restart();
    sender.await.unwrap();
    let pool = sqlx::PgPool::connect(&pg.url("restart")).await.unwrap();
    let (done, dead) = wait_all_done(&pool, Duration::from_secs(60)).await;
    let posts = fake.posts_by_name();
    for r in &replicas {
        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
        println!(
            "--- {} (last lines)\n{}",
            r.log.display(),
            log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
        );
    }
    let once = (0..events)
        .filter(|i| posts.get(&format!("pg restart-{i}")) == Some(&1))
        .count();
    let refused = *refused.lock().unwrap();
    let dead_errors: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT last_error FROM jobs WHERE state = 'dead'")
            .fetch_all(&pool)
            .await
            .unwrap();
    println!("postgres: dead after the restart: {dead_errors:?}");
    println!("postgres: restarted under load: {events} events acknowledged ({refused} refusals while it was down, retried), {once} processed exactly once, {done} done, {dead} dead");
    assert!(
        refused > 0,
        "the restart happened while events were being sent"
    );
    assert_eq!(once, events);
    assert_eq!(dead, 0);
}

/// A replica holding every chat place is killed mid-chat: its places' short leases run out unrenewed, and the
/// survivor's next chat starts within 20 s (the old lease, `MAVERA_TIMEOUT_SECS` + 30 s, froze it 3.5 min).
async fn a_dead_replicas_chat_slots_free_themselves(pg: &pg::TestPostgres, dir: &Path) {
    pg.create_database("slots");
    let config = dir.join("research.toml");
    std::fs::write(
        &config,
        r#"
[[triggers]]
name = "pg_research"
source = "segment"
events = ["pg_test"]
[triggers.research]
message = "research {{ message_id }}"
title = "t"
"#,
    )
    .unwrap();
    let mavera = MockServer::start().await;
    let fake = FakeMavera::default();
    Mock::given(wiremock::matchers::any())
        .respond_with(fake.clone())
        .mount(&mavera)
        .await;
    // The killed replica's jobs are not taken over during the test: only the new event's chat is watched.
    let env = env_for(
        &pg.url("slots"),
        &mavera,
        &config,
        &[
            ("MAVERA_MAX_CONCURRENT_CHATS", "2"),
            ("JOB_LEASE_SECS", "300"),
        ],
    );
    let mut holder = Replica::start(dir, "slots-a", &env);
    holder.ready().await;
    let http = reqwest::Client::new();
    for id in ["slow-1", "slow-2"] {
        deliver(&http, holder.port, &event(id)).await;
    }
    let chats = |fake: &FakeMavera| fake.book.lock().unwrap().chats.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while chats(&fake) < 2 {
        assert!(
            Instant::now() < deadline,
            "the first replica never took both chat places"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survivor = Replica::start(dir, "slots-b", &env);
    survivor.ready().await;
    holder.kill();
    let killed = Instant::now();
    deliver(&http, survivor.port, &event("fast-1")).await;
    let bound = Duration::from_secs(20);
    let started = loop {
        let fast = fake
            .book
            .lock()
            .unwrap()
            .chats
            .iter()
            .find(|(m, _)| m == "research fast-1")
            .map(|(_, at)| *at);
        if let Some(at) = fast {
            break at.duration_since(killed);
        }
        assert!(
            killed.elapsed() < bound,
            "the survivor's chat did not start within {bound:?} of the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "postgres: a replica holding every chat place was killed; the survivor's chat started {:.1} s later",
        started.as_secs_f64()
    );
    assert!(started < bound);
    drop(survivor);
}

/// Customer.io allows 10 App API requests per second for the whole workspace: three replicas together stay
/// under `CIO_REQUESTS_PER_SECOND`, as measured at the App API.
async fn replicas_share_the_customerio_rate_limit(pg: &pg::TestPostgres, dir: &Path) {
    pg.create_database("cio");
    let config = dir.join("cio.toml");
    std::fs::write(
        &config,
        r#"
[[triggers]]
name = "pg_cio"
source = "customerio"
events = ["unsubscribed"]
enrich = "customerio_attributes"
when = "attributes.plan_type == 'never'"
[triggers.research]
message = "m"
"#,
    )
    .unwrap();
    let mavera = MockServer::start().await;
    let cio = MockServer::start().await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    {
        let arrivals = arrivals.clone();
        Mock::given(wiremock::matchers::method("GET"))
            .respond_with(move |_: &Request| {
                arrivals.lock().unwrap().push(Instant::now());
                ResponseTemplate::new(200)
                    .set_body_json(json!({"customer": {"attributes": {"plan_type": "pro"}}}))
            })
            .mount(&cio)
            .await;
    }
    const CIO_SECRET: &str = "pg-suite-cio-secret";
    let limit = 4;
    let env = env_for(
        &pg.url("cio"),
        &mavera,
        &config,
        &[
            ("CIO_WEBHOOK_SECRET", CIO_SECRET),
            ("CIO_APP_KEY", "pg-suite-app-key"),
            ("CIO_APP_BASE_URL", &format!("{}/v1", cio.uri())),
            ("CIO_REQUESTS_PER_SECOND", &limit.to_string()),
        ],
    );
    let replicas: Vec<Replica> = (0..3)
        .map(|i| Replica::start(dir, &format!("cio-{i}"), &env))
        .collect();
    for r in &replicas {
        r.ready().await;
    }
    let http = reqwest::Client::new();
    let events = 30;
    for i in 0..events {
        let body = json!({
            "event_id": format!("cio-ev-{i}"), "object_type": "email", "metric": "unsubscribed",
            "timestamp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            "data": {"customer_id": format!("c-{i}"), "identifiers": {"id": format!("c-{i}")}}
        })
        .to_string();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signature = mavera_triggers::sources::customerio::sign(
            &Secret::new(CIO_SECRET),
            ts,
            body.as_bytes(),
        );
        let answer = http
            .post(format!(
                "http://127.0.0.1:{}/customerio",
                replicas[i % 3].port
            ))
            .header("x-cio-timestamp", ts.to_string())
            .header("x-cio-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    let pool = sqlx::PgPool::connect(&pg.url("cio")).await.unwrap();
    let (done, dead) = wait_all_done(&pool, Duration::from_secs(60)).await;
    let arrivals = arrivals.lock().unwrap().clone();
    let worst = arrivals
        .iter()
        .map(|t| {
            arrivals
                .iter()
                .filter(|u| **u >= *t && u.duration_since(*t) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    println!(
        "postgres: 3 replicas, {events} Customer.io look-ups: {done} done, {dead} dead; most App API requests in any second: {worst} (limit {limit} for the workspace)"
    );
    assert_eq!((done, dead), (events as i64, 0));
    assert_eq!(arrivals.len(), events);
    assert!(
        worst <= limit,
        "{worst} requests within one second (limit {limit})"
    );
}
