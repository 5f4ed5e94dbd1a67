//! The store conformance tests on the embedded SQLite store.

#[macro_use]
#[path = "common/conformance.rs"]
mod conformance;

/// One test per check of the conformance suite, each on a fresh database file.
mod sqlite_conformance {
    use std::sync::Arc;

    use mavera_triggers::jobs::{sqlite::SqliteStore, JobStore};

    async fn fresh(dir: &tempfile::TempDir) -> Arc<dyn JobStore> {
        let url = format!("sqlite://{}/conformance.db", dir.path().display());
        Arc::new(SqliteStore::open(&url, true).await.unwrap())
    }

    macro_rules! on_sqlite {
        ($($check:ident),* $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    super::conformance::$check(fresh(&dir).await).await;
                }
            )*
        };
    }

    every_check!(on_sqlite);
}

/// The console's queries read through indexes in key order: no table scan, no sort of everything, so a
/// page costs the same with a million events in the store.
#[tokio::test]
async fn console_queries_use_indexes_not_scans() {
    use mavera_triggers::jobs::{
        events::{self, EventFilter, StatusFilter},
        JobState,
    };
    use mavera_triggers::sources::Source;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/plans.db", dir.path().display());
    let store = mavera_triggers::jobs::sqlite::SqliteStore::open(&url, true)
        .await
        .unwrap();
    let pool = store.pool();
    let statuses = [
        None,
        Some(StatusFilter::Ignored),
        Some(StatusFilter::Triggered),
        Some(StatusFilter::Job(JobState::Dead)),
        Some(StatusFilter::Job(JobState::Done)),
    ];
    let mut checked = 0;
    for status in statuses {
        for (name, user, source) in [
            (None, None, None),
            (Some("trial_started"), None, None),
            (None, Some("u1"), Some(Source::Segment)),
        ] {
            for before in [None, Some(1_000_000)] {
                let filter = EventFilter {
                    source,
                    name: name.map(String::from),
                    user: user.map(String::from),
                    status,
                    before,
                };
                let (sql, binds) = events::list_query(&filter, 51);
                let plan = query_plan(pool, &sql, binds).await.join(" | ");
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?} sorts: {plan}");
                // SCAN e alone walks the table by key (newest first) and stops at the LIMIT: allowed
                // only when no filter could use an index.
                let walks_by_key = plan
                    .split(" | ")
                    .any(|step| step.starts_with("SCAN") && !step.contains("INDEX"));
                assert!(
                    !walks_by_key || (name.is_none() && user.is_none() && status.is_none()),
                    "{filter:?} scans a table: {plan}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 30);
    for (sql, binds) in [
        (events::DETAIL_QUERY.to_string(), 1),
        (events::jobs_query(50), 50),
        (events::MINUTES_SINCE.to_string(), 1),
    ] {
        let binds = (0..binds).map(events::Bind::Int).collect();
        let plan = query_plan(pool, &sql, binds).await;
        assert!(
            plan.iter()
                .all(|s| !s.starts_with("SCAN") || s.contains("INDEX")),
            "{sql}: {plan:?}"
        );
    }
}

/// The indexes a new (pending) job does not write still serve the reads that need them: retention's oldest
/// finished jobs and the briefs' and personas' finished jobs of one action (the persona claim names its index,
/// so every claim in the conformance suite checks that one).
#[tokio::test]
async fn finished_job_reads_use_the_partial_indexes() {
    use mavera_triggers::jobs::{
        events::Bind,
        store::{Dialect, Statements},
        upkeep,
    };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/partial.db", dir.path().display());
    let store = mavera_triggers::jobs::sqlite::SqliteStore::open(&url, true)
        .await
        .unwrap();
    let reads = &Statements::of(Dialect::Sqlite).reads;
    for (sql, binds, index) in [
        (
            upkeep::sql::DELETE_OLD_JOBS,
            vec![Bind::Int(1), Bind::Int(100)],
            "jobs_finished_updated",
        ),
        (
            reads.finished.as_str(),
            vec![Bind::Text("research".into()), Bind::Int(9), Bind::Int(50)],
            "jobs_done_action_id",
        ),
    ] {
        let plan = query_plan(store.pool(), sql, binds).await;
        assert!(
            plan.iter().any(|s| s.contains(index))
                && plan.iter().all(|s| !s.starts_with("SCAN jobs")),
            "{sql}: {plan:?}"
        );
    }
}

/// SQLite's plan for a statement: one line per step.
async fn query_plan(
    pool: &sqlx::SqlitePool,
    sql: &str,
    binds: Vec<mavera_triggers::jobs::events::Bind>,
) -> Vec<String> {
    use mavera_triggers::jobs::events;
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    events::bind_all(
        sqlx::query_as::<_, (i64, i64, i64, String)>(&explain),
        binds,
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.3)
    .collect()
}

/// Workers' bookkeeping queued together runs in one transaction on the writer, each piece in a savepoint:
/// one that fails is rolled back alone, and the others in its batch are committed.
#[tokio::test]
async fn a_failing_piece_of_a_bookkeeping_batch_fails_alone() {
    use mavera_triggers::jobs::{
        events::RequestMeta, now_ms, sqlite::SqliteStore, Delivery, Intake, JobKind, JobReads,
        JobState, NewJob, Queue,
    };
    use mavera_triggers::{sources::Source, triggers::ActionKind};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/batch.db", dir.path().display());
    let store = SqliteStore::open(&url, true).await.unwrap();
    let delivery = |id: &str| Delivery {
        source: Source::Segment,
        event_id: id.into(),
        name: "e".into(),
        user_id: Some(format!("user-{id}")),
        raw: "{}".into(),
        meta: RequestMeta {
            headers: "{}".into(),
            signature: "verified".into(),
        },
        jobs: vec![NewJob {
            trigger: "t".into(),
            action: JobKind::Action(ActionKind::Research),
            source: Source::Segment,
            event_id: id.into(),
            user_id: Some(format!("user-{id}")),
            context: Default::default(),
        }],
        refusal: None,
    };
    store
        .record(vec![delivery("a"), delivery("b")], now_ms())
        .await
        .unwrap();
    let first = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    let second = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    sqlx::query(
        "CREATE TRIGGER broken BEFORE INSERT ON jobs WHEN NEW.trigger_name = 'broken'
         BEGIN SELECT RAISE(ABORT, 'broken row'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let mut followup = delivery("a").jobs.remove(0);
    followup.trigger = "broken".into();
    // Queued in the same poll: the writer takes both in one batch. The first job's outcome is written, then
    // its follow-up fails: the outcome is rolled back with it.
    let (first_done, second_done) = tokio::join!(
        store.finish(first.id, serde_json::json!({"ok": 1}), vec![followup]),
        store.finish(second.id, serde_json::json!({"ok": 2}), vec![]),
    );
    assert!(
        first_done.unwrap_err().to_string().contains("broken row"),
        "the broken piece fails"
    );
    second_done.unwrap();
    let states = (
        store.get(first.id).await.unwrap().unwrap().state,
        store.get(second.id).await.unwrap().unwrap().state,
    );
    assert_eq!(states, (JobState::Running, JobState::Done));
}
