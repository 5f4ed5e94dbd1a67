//! The console's queries on a big store: `cargo bench --bench console` fills a SQLite store with 1,000,000
//! events (`BENCH_CONSOLE_EVENTS`), half of them with a job (a few hundred dead letters among them), and
//! times each page's queries: the events list with each filter, the next page, an event's page, the
//! overview's tallies, the briefs and dead letters. Without `--bench` (under `cargo test --all-targets`)
//! it runs on 20,000 events as a smoke test.

use std::time::{Duration, Instant};

use mavera_triggers::jobs::{
    events::{EventFilter, StatusFilter},
    now_ms,
    sqlite::SqliteStore,
    EventLog, JobReads, JobState,
};
use mavera_triggers::sources::Source;

fn main() {
    let real = std::env::args().any(|a| a == "--bench");
    let events: i64 = std::env::var("BENCH_CONSOLE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if real { 1_000_000 } else { 20_000 });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(events));
}

async fn run(events: i64) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/console.db", dir.path().display());
    let store = SqliteStore::open(&url, false).await.unwrap();
    let now = now_ms() as i64;
    let started = Instant::now();
    // Generated in SQL: one user in 1,000, 20 event names, every other event triggered with one job,
    // one job in 2,000 dead, the rest done; a research job's outcome holds a short brief.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         INSERT INTO events (id, source, event_id, name, received_ms, raw, user_id, headers, signature, status)
         SELECT i, CASE WHEN i % 5 = 0 THEN 'customerio' ELSE 'segment' END, 'evt-' || i, 'event_' || (i % 20),
                $2 - ($1 - i) * 50, '{\"messageId\":\"evt-' || i || '\",\"properties\":{\"plan\":\"pro\"}}',
                'user-' || (i % 1000), '{\"user-agent\":\"Segment.io/1.0\"}', 'verified: X-Signature',
                CASE WHEN i % 2 = 0 THEN 'triggered' ELSE 'ignored' END
         FROM n",
    )
    .bind(events)
    .bind(now)
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs (event_row, trigger_name, action, source, event_id, user_id, context, state, attempts,
                           created_ms, run_at_ms, outcome, updated_ms, history)
         SELECT id, 'trigger_' || (id % 4), CASE WHEN id % 4 = 0 THEN 'research' ELSE 'create_persona' END, source,
                event_id, user_id, '{}', CASE WHEN id % 4000 = 0 THEN 'dead' ELSE 'done' END, 1, received_ms,
                received_ms, CASE WHEN id % 4 = 0 THEN '{\"brief\":\"## Brief\\nText.\",\"title\":\"t\"}'
                                  ELSE '{\"persona_id\":\"per_' || id || '\"}' END,
                received_ms, '[]'
         FROM events WHERE status = 'triggered'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO event_minutes (minute, source, status, count)
         SELECT received_ms / 60000, source, status, COUNT(*) FROM events GROUP BY 1, 2, 3",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    println!(
        "console bench: {events} events, {} jobs, filled in {:.1} s",
        events / 2,
        started.elapsed().as_secs_f64()
    );

    let page = store.events(&EventFilter::default(), 50).await.unwrap();
    let next = page.next_before;
    let middle = events / 2;
    let filters: Vec<(&str, EventFilter)> = vec![
        ("events: newest 50", EventFilter::default()),
        (
            "events: next page",
            EventFilter {
                before: next,
                ..Default::default()
            },
        ),
        (
            "events: a page from the middle",
            EventFilter {
                before: Some(middle),
                ..Default::default()
            },
        ),
        (
            "events: source customerio",
            EventFilter {
                source: Some(Source::CustomerIo),
                ..Default::default()
            },
        ),
        (
            "events: name event_7",
            EventFilter {
                name: Some("event_7".into()),
                ..Default::default()
            },
        ),
        (
            "events: user user-42",
            EventFilter {
                user: Some("user-42".into()),
                ..Default::default()
            },
        ),
        (
            "events: status ignored",
            EventFilter {
                status: Some(StatusFilter::Ignored),
                ..Default::default()
            },
        ),
        (
            "events: status dead (rare)",
            EventFilter {
                status: Some(StatusFilter::Job(JobState::Dead)),
                ..Default::default()
            },
        ),
        (
            "events: user user-42 + status dead",
            EventFilter {
                user: Some("user-42".into()),
                status: Some(StatusFilter::Job(JobState::Dead)),
                ..Default::default()
            },
        ),
        (
            "events: name event_8 + status done",
            EventFilter {
                name: Some("event_8".into()),
                status: Some(StatusFilter::Job(JobState::Done)),
                ..Default::default()
            },
        ),
    ];
    println!(
        "{:<40} {:>10} {:>10} {:>6}",
        "query", "p50 ms", "max ms", "rows"
    );
    for (label, filter) in &filters {
        let (p50, max, rows) = time(|| async {
            let page = store.events(filter, 50).await.unwrap();
            let ids: Vec<i64> = page.rows.iter().map(|e| e.id).collect();
            store.event_jobs(&ids).await.unwrap();
            page.rows.len()
        })
        .await;
        println!("{label:<40} {p50:>10.3} {max:>10.3} {rows:>6}");
        // User 42's events are all even-numbered and none of them is a multiple of 4,000: no dead letter.
        let expected = if label.ends_with("+ status dead") {
            0
        } else if label.ends_with("user user-42") {
            50.min(events as usize / 1000)
        } else if label.ends_with("status dead (rare)") {
            50.min(events as usize / 4000)
        } else {
            50
        };
        assert_eq!(rows, expected, "{label}: a full page");
    }
    let row = page.rows[0].id;
    report("event page (detail + jobs)", || async {
        store.event(row).await.unwrap().map_or(0, |_| 1)
    })
    .await;
    let minute = now / 60_000 - 24 * 60;
    report("overview: a day of minute tallies", || async {
        store.event_minutes(minute).await.unwrap().len()
    })
    .await;
    report("overview: jobs per state (counts)", || async {
        store.counts().await.unwrap().done as usize
    })
    .await;
    report("briefs: newest 50", || async {
        store.finished("research", None, 50).await.unwrap().len()
    })
    .await;
    report("personas: newest 50", || async {
        store
            .finished("create_persona", None, 50)
            .await
            .unwrap()
            .len()
    })
    .await;
    report("dead letters: newest 200", || async {
        store.list(Some(JobState::Dead), 200).await.unwrap().len()
    })
    .await;
    let dead = store.counts().await.unwrap().dead;
    assert_eq!(dead as i64, events / 4000, "one job in 2,000 dead");
}

async fn report<F, Fut>(label: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let (p50, max, rows) = time(f).await;
    println!("{label:<40} {p50:>10.3} {max:>10.3} {rows:>6}");
}

/// p50 and max in ms of 21 runs (after one warm-up), and what the last run returned.
async fn time<F, Fut>(f: F) -> (f64, f64, usize)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    f().await;
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..21 {
        let t = Instant::now();
        rows = f().await;
        times.push(t.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(times[10]), ms(times[20]), rows)
}
