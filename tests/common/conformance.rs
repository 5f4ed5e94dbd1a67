//! One set of store tests, run against every backend (SQLite in `tests/store_sqlite.rs`, Postgres in
//! `tests/postgres.rs`): the same calls must behave the same.

#![allow(dead_code)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use mavera_triggers::{
    jobs::{
        events::{EventFilter, RequestMeta, StatusFilter},
        now_ms,
        queue::Lane,
        upkeep::{self, Forgotten, Retention},
        Delivery, Guard, Hold, JobKind, JobState, JobStore, KnownPersona, NewJob,
    },
    metrics::Metrics,
    sources::{Refusal, Source},
    triggers::{config::SinkKind, ActionKind},
};
use serde_json::json;

fn job(trigger: &str, event_id: &str) -> NewJob {
    NewJob {
        trigger: trigger.into(),
        action: JobKind::Action(ActionKind::Research),
        source: Source::Segment,
        event_id: event_id.into(),
        user_id: Some(format!("user-{event_id}")),
        context: json!({"event": "e", "n": 1}).as_object().unwrap().clone(),
    }
}

fn delivery(event_id: &str, jobs: usize) -> Delivery {
    Delivery {
        source: Source::Segment,
        event_id: event_id.into(),
        name: "e".into(),
        user_id: Some(format!("user-{event_id}")),
        raw: format!(r#"{{"messageId":"{event_id}"}}"#),
        meta: RequestMeta {
            headers: r#"{"user-agent":"Segment.io/1.0","x-signature":"abcdef01… (40 characters)"}"#
                .into(),
            signature: "verified: X-Signature".into(),
        },
        jobs: (0..jobs).map(|i| job(&format!("t{i}"), event_id)).collect(),
        refusal: None,
    }
}

/// Calls `$then!` with the name of every check: each is `pub async fn(Arc<dyn JobStore>)`, runs on a fresh
/// (empty) store, and is its own test on every backend, so one failure does not hide the others.
macro_rules! every_check {
    ($then:ident) => {
        $then! {
            records_each_event_once,
            claims_are_exclusive_under_concurrency,
            the_newest_lane_takes_fresh_work_and_keeps_a_persons_persona_order,
            expired_leases_are_taken_over_and_renewed_ones_are_not,
            progress_merges_and_follow_ups_land_with_the_outcome,
            retries_wait_and_finals_are_kept_and_replayable,
            guards_are_taken_all_or_nothing,
            personas_are_remembered_per_trigger_and_user,
            events_are_listed_filtered_and_paged_by_key,
            unusable_parts_are_kept_with_their_status_and_reason,
            the_backlog_counts_what_is_not_done_and_the_oldest_pending,
            the_done_count_follows_outcomes_erasure_and_retention,
            the_audit_trail_lists_newest_first_pages_by_key_and_prunes_by_age,
            digests_gather_once_per_job_close_at_max_or_window_and_record_one_job,
            one_person_is_forgotten_and_no_one_else,
            retention_prunes_old_rows_and_keeps_work_still_to_do,
            a_job_reads_its_events_context_and_keeps_it_when_the_event_goes,
            the_heartbeat_is_written,
        }
    };
}

pub async fn the_heartbeat_is_written(store: Arc<dyn JobStore>) {
    store.ping(now_ms()).await.expect("the store takes writes");
    store
        .ping(now_ms())
        .await
        .expect("and again: one row, updated");
}

pub async fn unusable_parts_are_kept_with_their_status_and_reason(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    let now = now_ms();
    let refused = Delivery {
        refusal: Some(Refusal::Refused(
            "batch element 3: a track event needs an `event` name".into(),
        )),
        ..delivery("refused-1", 0)
    };
    let unprocessable = Delivery {
        source: Source::CustomerIo,
        raw: "not json".into(),
        refusal: Some(Refusal::Unprocessable(
            "malformed JSON: expected ident at line 1 column 2".into(),
        )),
        ..delivery("unprocessable-1", 0)
    };
    let fresh = store
        .record(vec![refused, unprocessable], now)
        .await
        .unwrap();
    assert_eq!(fresh, [true, true]);
    for (status, event_id, reason, raw) in [
        (
            StatusFilter::Refused,
            "refused-1",
            "batch element 3: a track event needs an `event` name",
            r#"{"messageId":"refused-1"}"#,
        ),
        (
            StatusFilter::Unprocessable,
            "unprocessable-1",
            "malformed JSON: expected ident at line 1 column 2",
            "not json",
        ),
    ] {
        let rows = store
            .events(
                &EventFilter {
                    status: Some(status),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap()
            .rows;
        assert_eq!(rows.len(), 1, "{status:?}");
        assert_eq!(rows[0].event_id, event_id);
        let (detail, jobs) = store.event(rows[0].id).await.unwrap().unwrap();
        assert_eq!(detail.reason.as_deref(), Some(reason));
        assert_eq!(detail.raw, raw);
        assert!(jobs.is_empty(), "an unusable part is never run");
    }
    let minutes = store.event_minutes((now / 60_000) as i64).await.unwrap();
    for status in ["refused", "unprocessable"] {
        assert!(
            minutes.iter().any(|m| m.status == status && m.count >= 1),
            "{status} is tallied: {minutes:?}"
        );
    }
}

pub async fn the_newest_lane_takes_fresh_work_and_keeps_a_persons_persona_order(
    store: Arc<dyn JobStore>,
) {
    let store: &dyn JobStore = &*store;
    let persona = |event_id: &str| NewJob {
        action: JobKind::Action(ActionKind::CreatePersona),
        user_id: Some("same-person".into()),
        ..job("persona", event_id)
    };
    let arrived = |event_id: &str, job: NewJob| Delivery {
        jobs: vec![job],
        ..delivery(event_id, 0)
    };
    // In the order they came: a research job, two persona jobs for one person, a fresh research job.
    store
        .record(
            vec![
                arrived("old", job("t", "old")),
                arrived("p1", persona("p1")),
                arrived("p2", persona("p2")),
                arrived("fresh", job("t", "fresh")),
            ],
            now_ms(),
        )
        .await
        .unwrap();
    let newest = || async {
        store
            .claim_in(now_ms(), 60_000, Lane::Newest)
            .await
            .unwrap()
            .map(|j| (j.id, j.new.event_id))
    };
    let name = |claimed: Option<(u64, String)>| claimed.map(|(_, e)| e);
    assert_eq!(name(newest().await).as_deref(), Some("fresh"));
    // p2 is newer, but p1 (same trigger, same person) is still pending: p1 first.
    let p1 = newest().await.expect("p1 is due");
    assert_eq!(p1.1, "p1");
    // p2 now waits for the running p1, so the newest lane goes on to the rest.
    assert_eq!(name(newest().await).as_deref(), Some("old"));
    assert_eq!(newest().await, None, "p2 waits while p1 runs");
    store
        .finish(p1.0, json!({"ok": true}), vec![])
        .await
        .unwrap();
    assert_eq!(name(newest().await).as_deref(), Some("p2"));
}

async fn drain(store: &dyn JobStore) {
    while let Some(j) = store.claim(now_ms(), 60_000).await.unwrap() {
        store
            .finish(j.id, json!({"drained": true}), vec![])
            .await
            .unwrap();
    }
}

pub async fn records_each_event_once(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    let now = now_ms();
    let fresh = store
        .record(
            vec![delivery("a", 2), delivery("b", 1), delivery("a", 2)],
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        fresh,
        vec![true, true, false],
        "a repeat in the same batch is a duplicate"
    );
    let again = store
        .record(vec![delivery("b", 1), delivery("c", 1)], now)
        .await
        .unwrap();
    assert_eq!(again, vec![false, true]);
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.pending, 4, "2 + 1 + 1 jobs");
    assert!(counts.oldest_pending_ms.is_some());
    drain(store).await;
}

pub async fn the_backlog_counts_what_is_not_done_and_the_oldest_pending(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    let empty = store.backlog().await.unwrap();
    assert!(empty.settled() && empty.oldest_pending_ms.is_none());
    let first = now_ms() - 60_000;
    store.record(vec![delivery("old", 1)], first).await.unwrap();
    let later: Vec<_> = (0..5).map(|i| delivery(&format!("new-{i}"), 1)).collect();
    store.record(later, first + 30_000).await.unwrap();
    // One done, one dead, one running; the oldest (claimed first) is done.
    let done = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    store.finish(done.id, json!({}), vec![]).await.unwrap();
    let dead = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    store.bury(dead.id, "broken".into()).await.unwrap();
    let _running = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    let backlog = store.backlog().await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (backlog.pending, backlog.running, backlog.dead, backlog.held),
        (3, 1, 1, 0)
    );
    assert_eq!(counts.done, 1);
    assert_eq!(
        (counts.pending, counts.running, counts.dead, counts.held),
        (backlog.pending, backlog.running, backlog.dead, backlog.held)
    );
    assert!(!backlog.settled());
    assert_eq!(
        backlog.oldest_pending_ms,
        Some(first + 30_000),
        "the oldest job still pending, not the oldest done"
    );
    assert_eq!(counts.oldest_pending_ms, backlog.oldest_pending_ms);
    drain(store).await;
}

/// The count of done jobs (`/healthz`, the console, `jobs`) stays right as jobs finish and as erasure and
/// retention delete them (SQLite keeps it as they change instead of counting every finished job).
pub async fn the_done_count_follows_outcomes_erasure_and_retention(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    assert_eq!(store.counts().await.unwrap().done, 0);
    let deliveries: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| delivery(id, 1))
        .collect();
    store.record(deliveries, now_ms()).await.unwrap();
    let dead = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    store.bury(dead.id, "broken".into()).await.unwrap();
    drain(store).await;
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.done, counts.dead, counts.pending), (3, 1, 0));
    // Erasure deletes one person's finished job.
    let forgotten = store.upkeep().forget("user-b").await.unwrap();
    assert_eq!(forgotten.jobs, 1);
    assert_eq!(store.counts().await.unwrap().done, 2);
    // Retention deletes every finished job changed before the cut, the dead one too.
    let pruned = store
        .upkeep()
        .prune_jobs(now_ms() + 60_000, 100)
        .await
        .unwrap();
    assert_eq!(pruned, 3);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.done, counts.dead), (0, 0));
}

pub async fn claims_are_exclusive_under_concurrency(store: Arc<dyn JobStore>) {
    let deliveries: Vec<_> = (0..40).map(|i| delivery(&format!("race-{i}"), 1)).collect();
    store.record(deliveries, now_ms()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            while let Some(j) = store.claim(now_ms(), 60_000).await.unwrap() {
                mine.push(j.id);
                store.finish(j.id, json!({}), vec![]).await.unwrap();
            }
            mine
        });
    }
    let all: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 40, "every job claimed");
    assert_eq!(distinct.len(), 40, "no job claimed twice");
}

pub async fn expired_leases_are_taken_over_and_renewed_ones_are_not(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    store
        .record(vec![delivery("lease", 1)], now_ms())
        .await
        .unwrap();
    let first = store.claim(now_ms(), 300).await.unwrap().expect("a job");
    assert_eq!(first.attempts, 1);
    assert!(
        store.claim(now_ms(), 300).await.unwrap().is_none(),
        "held under its lease"
    );
    store.renew_lease(first.id, 60_000).await.unwrap();
    // Past the first lease's end: only the clock can show that the renewal replaced it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        store.claim(now_ms(), 300).await.unwrap().is_none(),
        "the renewed lease still holds"
    );
    store.renew_lease(first.id, 1).await.unwrap();
    // Taken over as soon as the 1 ms lease has run out (on the database's clock), within a bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let taken_over = loop {
        if let Some(job) = store.claim(now_ms(), 60_000).await.unwrap() {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease expired but the job was never taken over"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!((taken_over.id, taken_over.attempts), (first.id, 2));
    store
        .finish(taken_over.id, json!({}), vec![])
        .await
        .unwrap();
}

pub async fn progress_merges_and_follow_ups_land_with_the_outcome(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    store
        .record(vec![delivery("progress", 1)], now_ms())
        .await
        .unwrap();
    let j = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    store
        .merge_progress(
            j.id,
            json!({"attributes": {"plan": "pro"}, "create_sent_ms": 5}),
        )
        .await
        .unwrap();
    store
        .merge_progress(j.id, json!({"create_sent_ms": null, "guards_taken": true}))
        .await
        .unwrap();
    let progress = store.get(j.id).await.unwrap().unwrap().progress;
    assert_eq!(
        serde_json::to_value(progress).unwrap(),
        json!({"attributes": {"plan": "pro"}, "guards_taken": true})
    );
    let mut follow = job("t0", "progress");
    follow.action = JobKind::Delivery(SinkKind::Webhook);
    store
        .finish(j.id, json!({"brief": "b"}), vec![follow])
        .await
        .unwrap();
    let done = store.get(j.id).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.outcome.unwrap()["brief"].clone()),
        (JobState::Done, json!("b"))
    );
    let next = store
        .claim(now_ms(), 60_000)
        .await
        .unwrap()
        .expect("the follow-up");
    assert_eq!(next.new.action, JobKind::Delivery(SinkKind::Webhook));
    store.finish(next.id, json!({}), vec![]).await.unwrap();
}

pub async fn retries_wait_and_finals_are_kept_and_replayable(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    store
        .record(vec![delivery("retry", 3)], now_ms())
        .await
        .unwrap();
    let a = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    store
        .retry_at(a.id, now_ms() + 60_000, "503".into())
        .await
        .unwrap();
    assert_eq!(
        store.next_due_ms().await.unwrap().map(|d| d > now_ms()),
        Some(false),
        "others are due now"
    );
    let b = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    let c = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    assert!(
        store.claim(now_ms(), 60_000).await.unwrap().is_none(),
        "the retried job waits"
    );
    store
        .bury(b.id, "402 credits exhausted".into())
        .await
        .unwrap();
    store.hold(c.id, "cooldown".into()).await.unwrap();
    assert_eq!(
        store.list(Some(JobState::Dead), 10).await.unwrap()[0]
            .last_error
            .as_deref(),
        Some("402 credits exhausted")
    );
    assert_eq!(store.list(Some(JobState::Held), 10).await.unwrap().len(), 1);
    store
        .merge_progress(c.id, json!({"guards_taken": true}))
        .await
        .unwrap();
    store.requeue(c.id, now_ms()).await.unwrap();
    let replayed = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    assert_eq!(replayed.id, c.id);
    assert!(replayed.progress.replay);
    assert!(!replayed.progress.guards_taken);
    store.finish(replayed.id, json!({}), vec![]).await.unwrap();
    assert!(
        store.requeue(999_999, now_ms()).await.is_err(),
        "no such job"
    );
    // Leave the retried one done so later checks start clean.
    store
        .retry_at(a.id, now_ms(), "again".into())
        .await
        .unwrap();
    drain(store).await;
    store.requeue(b.id, now_ms()).await.unwrap();
    drain(store).await;
}

pub async fn guards_are_taken_all_or_nothing(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    store
        .record(vec![delivery("guards", 2)], now_ms())
        .await
        .unwrap();
    let first = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    let second = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    let holds = |id| async move { store.get(id).await.unwrap().unwrap().progress.guards_taken };
    let j = first.id;
    let now = now_ms();
    let cooldown = Guard::Cooldown {
        trigger: "t".into(),
        user: "u".into(),
        window_ms: 60_000,
    };
    let budget = |limit| Guard::Budget {
        scope: "t:hour".into(),
        window_start_ms: now - now % 3_600_000,
        limit,
        label: "t: 2 per hour".into(),
    };
    assert_eq!(
        store
            .take_guards(j, &[cooldown.clone(), budget(2)], now)
            .await
            .unwrap(),
        None
    );
    assert!(
        holds(first.id).await,
        "the job that took its guards is marked in the same transaction"
    );
    let refused = store
        .take_guards(second.id, std::slice::from_ref(&cooldown), now + 1)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&refused, Hold::Cooldown(r) if r.contains("cooldown")),
        "{refused:?}"
    );
    assert!(!holds(second.id).await, "a refused job is not marked");
    assert_eq!(store.take_guards(j, &[budget(2)], now).await.unwrap(), None);
    let spent = store
        .take_guards(j, &[budget(2)], now)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&spent, Hold::Budget(r) if r.contains("t: 2 per hour")),
        "{spent:?}"
    );
    // A refused budget takes nothing else: this user's cooldown stays free.
    let other = Guard::Cooldown {
        trigger: "t".into(),
        user: "v".into(),
        window_ms: 60_000,
    };
    assert!(store
        .take_guards(j, &[other.clone(), budget(2)], now)
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.take_guards(j, &[other], now).await.unwrap(), None);
    assert!(
        store
            .take_guards(j, &[cooldown], now + 60_001)
            .await
            .unwrap()
            .is_none(),
        "after the window"
    );
    for id in [first.id, second.id] {
        store.finish(id, json!({}), vec![]).await.unwrap();
    }
}

pub async fn personas_are_remembered_per_trigger_and_user(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    assert_eq!(store.persona_for("trial", "u1").await.unwrap(), None);
    let p = KnownPersona {
        persona_id: "per_1".into(),
        name: Some("n".into()),
    };
    store
        .remember_persona("trial", "u1", &p, now_ms())
        .await
        .unwrap();
    let q = KnownPersona {
        persona_id: "per_2".into(),
        name: None,
    };
    store
        .remember_persona("trial", "u1", &q, now_ms())
        .await
        .unwrap();
    assert_eq!(store.persona_for("trial", "u1").await.unwrap(), Some(q));
    assert_eq!(store.persona_for("other", "u1").await.unwrap(), None);
}

pub async fn events_are_listed_filtered_and_paged_by_key(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    let now = now_ms();
    let mut batch: Vec<Delivery> = (0..5)
        .map(|i| Delivery {
            name: "Listed".into(),
            ..delivery(&format!("list-{i}"), 1)
        })
        .collect();
    batch.push(Delivery {
        name: "Listed".into(),
        ..delivery("list-ignored", 0)
    });
    store.record(batch, now).await.unwrap();
    store
        .log_events(
            vec![
                Delivery {
                    name: "Listed".into(),
                    ..delivery("list-logged", 0)
                },
                Delivery {
                    name: "Listed".into(),
                    ..delivery("list-0", 0)
                },
            ],
            now,
        )
        .await
        .unwrap();

    let named = |before| EventFilter {
        name: Some("Listed".into()),
        before,
        ..Default::default()
    };
    let first = store.events(&named(None), 4).await.unwrap();
    let next = first.next_before;
    let first = first.rows;
    let ids: Vec<&str> = first.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        ["list-logged", "list-ignored", "list-4", "list-3"],
        "newest first; a logged repeat of list-0 adds no row"
    );
    assert_eq!(
        next,
        Some(first.last().unwrap().id),
        "a full page has a next"
    );
    let second = store.events(&named(next), 4).await.unwrap();
    assert_eq!(second.next_before, None, "the last page has none");
    let second = second.rows;
    let ids: Vec<&str> = second.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["list-2", "list-1", "list-0"], "the next page by key");

    let ignored = store
        .events(
            &EventFilter {
                status: Some(StatusFilter::Ignored),
                ..named(None)
            },
            10,
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(ignored.len(), 2);
    assert!(ignored.iter().all(|e| e.status == "ignored"));

    let by_user = store
        .events(
            &EventFilter {
                user: Some("user-list-3".into()),
                ..Default::default()
            },
            10,
        )
        .await
        .unwrap()
        .rows;
    assert_eq!(by_user.len(), 1);
    assert_eq!(by_user[0].event_id, "list-3");

    // A job state filter: list-1's job dies; only its event is listed as dead.
    let jobs = store.event_jobs(&[by_user[0].id]).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, "pending");
    let mut dead_id = None;
    while let Some(j) = store.claim(now_ms(), 60_000).await.unwrap() {
        if j.new.event_id == "list-1" && j.attempts == 1 {
            store
                .retry_at(j.id, now_ms(), "Mavera 503".into())
                .await
                .unwrap();
        } else if j.new.event_id == "list-1" {
            store
                .bury(j.id, "Mavera 422: bad persona".into())
                .await
                .unwrap();
            dead_id = Some(j.id);
        } else {
            store.finish(j.id, json!({}), vec![]).await.unwrap();
        }
    }
    let dead = store
        .events(
            &EventFilter {
                status: Some(StatusFilter::Job(JobState::Dead)),
                ..named(None)
            },
            10,
        )
        .await
        .unwrap()
        .rows;
    let ids: Vec<&str> = dead.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["list-1"]);

    let (detail, jobs) = store.event(dead[0].id).await.unwrap().unwrap();
    assert_eq!(detail.row.event_id, "list-1");
    assert_eq!(detail.row.user_id.as_deref(), Some("user-list-1"));
    assert!(detail.headers.contains("Segment.io/1.0"));
    assert_eq!(detail.signature, "verified: X-Signature");
    assert_eq!(detail.raw, r#"{"messageId":"list-1"}"#);
    assert_eq!(jobs.len(), 1);
    assert_eq!(Some(jobs[0].id), dead_id);
    let story: Vec<(u64, &str)> = jobs[0]
        .history
        .iter()
        .map(|h| {
            (
                h["attempt"].as_u64().unwrap(),
                h["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        story,
        [(1, "retry"), (2, "dead")],
        "each attempt's end is kept"
    );
    assert_eq!(jobs[0].history[0]["error"], "Mavera 503");
    assert!(store.event(i64::MAX).await.unwrap().is_none());

    let minutes = store.event_minutes((now / 60_000) as i64).await.unwrap();
    let count = |status: &str| -> i64 {
        minutes
            .iter()
            .filter(|m| m.source == "segment" && m.status == status)
            .map(|m| m.count)
            .sum()
    };
    assert!(count("triggered") >= 5, "{minutes:?}");
    assert!(count("ignored") >= 2, "{minutes:?}");
}

const DAY_MS: u64 = 86_400_000;

async fn job_of(store: &dyn JobStore, event_id: &str) -> Option<mavera_triggers::jobs::Job> {
    store
        .list(None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.new.event_id == event_id)
}

async fn event_listed(store: &dyn JobStore, event_id: &str) -> bool {
    store
        .events(&EventFilter::default(), 10_000)
        .await
        .unwrap()
        .rows
        .iter()
        .any(|e| e.event_id == event_id)
}

pub async fn retention_prunes_old_rows_and_keeps_work_still_to_do(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    let now = now_ms();
    let metrics = Metrics::default();
    let retention = Retention {
        events: Some(Duration::from_secs(30 * 86_400)),
        jobs: Some(Duration::from_secs(90 * 86_400)),
    };
    // Two events from 40 days ago: one whose job is done, one whose job still waits; and one from today.
    store
        .record(
            vec![delivery("ret-done", 1), delivery("ret-waiting", 1)],
            now - 40 * DAY_MS,
        )
        .await
        .unwrap();
    store
        .record(vec![delivery("ret-today", 1)], now)
        .await
        .unwrap();
    let done = store.claim(now, 60_000).await.unwrap().unwrap();
    assert_eq!(done.new.event_id, "ret-done");
    store
        .finish(done.id, json!({"brief": "b"}), vec![])
        .await
        .unwrap();

    let pruned = upkeep::prune(&*store.upkeep(), retention, now, &metrics)
        .await
        .unwrap();
    assert_eq!(pruned.events, 1, "only the old event whose work is done");
    assert!(!event_listed(store, "ret-done").await);
    assert!(
        event_listed(store, "ret-waiting").await,
        "its job still runs"
    );
    assert!(event_listed(store, "ret-today").await);
    assert!(
        job_of(store, "ret-done").await.is_some(),
        "the job is kept longer than its event"
    );

    // Three months on: every finished job goes; waiting ones stay.
    let later = now + 91 * DAY_MS;
    let pruned = upkeep::prune(&*store.upkeep(), retention, later, &metrics)
        .await
        .unwrap();
    assert!(pruned.jobs >= 1, "{pruned:?}");
    assert!(job_of(store, "ret-done").await.is_none());
    let waiting = job_of(store, "ret-waiting")
        .await
        .expect("kept: still to do");
    assert_eq!(waiting.state, JobState::Pending);
    let stats = store.upkeep().stats().await.unwrap();
    assert!(
        stats.oldest_event_ms.is_some() && stats.oldest_job_ms.is_some(),
        "{stats:?}"
    );
    // The store still takes work after pruning.
    drain(store).await;
    store.ping(now_ms()).await.unwrap();
    assert!(metrics
        .render()
        .contains("store_rows_pruned_total{table=\"jobs\"}"));
}

pub async fn a_job_reads_its_events_context_and_keeps_it_when_the_event_goes(
    store: Arc<dyn JobStore>,
) {
    let store: &dyn JobStore = &*store;
    let now = now_ms();
    let raw = json!({
        "type": "track", "event": "trial_started", "messageId": "ctx-ref", "userId": "user-ctx",
        "properties": {"plan": "pro", "seats": 12},
        "context": {"traits": {"email": "ctx@example.com"}},
        "timestamp": "2026-12-01T08:00:00.000Z"
    })
    .to_string();
    // As the intake makes it: the job's context is left empty, the event's raw JSON holds it.
    let mut of_event = job("ctx-trigger", "ctx-ref");
    of_event.context = Default::default();
    let event = Delivery {
        raw: raw.clone(),
        user_id: Some("user-ctx".into()),
        jobs: vec![of_event, job("own-trigger", "ctx-ref")],
        ..delivery("ctx-ref", 0)
    };
    store.record(vec![event], now - 40 * DAY_MS).await.unwrap();
    let expected = Source::Segment.provider().full_context(&raw);
    assert_eq!(expected["plan"], "pro", "the event's context: {expected:?}");

    let first = store.claim(now, 60_000).await.unwrap().unwrap();
    let second = store.claim(now, 60_000).await.unwrap().unwrap();
    let (of_event, own) = if first.new.trigger == "ctx-trigger" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        of_event.new.context, expected,
        "claimed: the event's context"
    );
    assert_eq!(
        own.new.context,
        job("own-trigger", "ctx-ref").context,
        "a context of its own is kept as given"
    );
    store
        .finish(of_event.id, json!({"brief": "b"}), vec![])
        .await
        .unwrap();
    store
        .finish(own.id, json!({"brief": "b"}), vec![])
        .await
        .unwrap();
    let read = store.get(of_event.id).await.unwrap().unwrap();
    assert_eq!(read.new.context, expected, "read back: the event's context");

    // The event is older than its retention, its jobs are not: they keep what they read.
    let retention = Retention {
        events: Some(Duration::from_secs(30 * 86_400)),
        jobs: Some(Duration::from_secs(90 * 86_400)),
    };
    let pruned = upkeep::prune(&*store.upkeep(), retention, now, &Metrics::default())
        .await
        .unwrap();
    assert_eq!(pruned.events, 1);
    assert!(!event_listed(store, "ctx-ref").await);
    let kept = store.get(of_event.id).await.unwrap().unwrap();
    assert_eq!(kept.new.context, expected, "after its event went");
    let own_kept = store.get(own.id).await.unwrap().unwrap();
    assert_eq!(own_kept.new.context, own.new.context);
}

pub async fn one_person_is_forgotten_and_no_one_else(store: Arc<dyn JobStore>) {
    let store: &dyn JobStore = &*store;
    let forget_me = Delivery {
        user_id: Some("user-forget-me".into()),
        ..delivery("forget-1", 1)
    };
    let mut job = forget_me.jobs[0].clone();
    job.user_id = Some("user-forget-me".into());
    let forget_me = Delivery {
        jobs: vec![job],
        ..forget_me
    };
    store
        .record(vec![forget_me, delivery("keep-1", 1)], now_ms())
        .await
        .unwrap();
    let persona = KnownPersona {
        persona_id: "per_forget".into(),
        name: None,
    };
    store
        .remember_persona("t0", "user-forget-me", &persona, now_ms())
        .await
        .unwrap();
    let cooldown = Guard::Cooldown {
        trigger: "t0".into(),
        user: "user-forget-me".into(),
        window_ms: 60_000,
    };
    let claimed = store.claim(now_ms(), 60_000).await.unwrap().unwrap();
    assert_eq!(
        store
            .take_guards(claimed.id, &[cooldown], now_ms())
            .await
            .unwrap(),
        None
    );
    let mut follow = job_of(store, "forget-1").await.unwrap().new;
    follow.action = JobKind::Delivery(SinkKind::Webhook);
    store
        .finish(claimed.id, json!({"brief": "about them"}), vec![follow])
        .await
        .unwrap();

    // An event of theirs gathered into a digest that has not run yet.
    store
        .gather(&mavera_triggers::jobs::digest::Gather {
            trigger: "forget_digest".into(),
            key: "k".into(),
            source: Source::Segment,
            action: "research".into(),
            window_ms: 3_600_000,
            max: 5,
            job_id: 990_001,
            user_id: Some("user-forget-me".into()),
            context: json!({"user_id": "user-forget-me", "email": "forget@example.com"}),
            now_ms: now_ms(),
        })
        .await
        .unwrap();
    let removed = store.upkeep().forget("user-forget-me").await.unwrap();
    assert_eq!(
        removed,
        Forgotten {
            events: 1,
            jobs: 2,
            personas: 1,
            cooldowns: 1,
            digest_events: 1,
        },
        "the event, its job and sink delivery, the persona map row, the cooldown, the gathered event"
    );
    assert!(!event_listed(store, "forget-1").await);
    assert!(job_of(store, "forget-1").await.is_none());
    assert_eq!(
        store.persona_for("t0", "user-forget-me").await.unwrap(),
        None
    );
    assert!(
        event_listed(store, "keep-1").await,
        "someone else's event stays"
    );
    assert!(job_of(store, "keep-1").await.is_some());
    assert_eq!(
        store.upkeep().forget("user-forget-me").await.unwrap(),
        Forgotten::default(),
        "a second erasure finds nothing"
    );
    drain(store).await;
}

pub async fn the_audit_trail_lists_newest_first_pages_by_key_and_prunes_by_age(
    store: Arc<dyn JobStore>,
) {
    let store: &dyn JobStore = &*store;
    use mavera_triggers::jobs::audit::{AuditAction, AuditEntry, Via};
    for (n, action) in [
        AuditAction::SignInFailed,
        AuditAction::SignIn,
        AuditAction::Replay,
        AuditAction::Reload,
    ]
    .into_iter()
    .enumerate()
    {
        store
            .audit(&AuditEntry {
                at_ms: 1_000 + n as u64,
                action,
                via: Via::Console,
                client: "198.51.100.7".into(),
                detail: format!("line {n}"),
            })
            .await
            .unwrap();
    }
    let first = store.audit_page(None, 3).await.unwrap();
    let actions: Vec<&str> = first.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["reload", "replay", "sign_in"]);
    assert_eq!(first[0].client, "198.51.100.7");
    assert_eq!(first[0].via, "console");
    let rest = store.audit_page(Some(first[2].id), 3).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].action, "sign_in_failed");
    // Retention: lines older than the cut go, in batches of at most `batch`.
    assert_eq!(store.prune_audit(1_002, 1).await.unwrap(), 1);
    assert_eq!(store.prune_audit(1_002, 10).await.unwrap(), 1);
    assert_eq!(store.prune_audit(1_002, 10).await.unwrap(), 0);
    let kept: Vec<String> = store
        .audit_page(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.detail)
        .collect();
    assert_eq!(kept, ["line 3", "line 2"]);
}

pub async fn digests_gather_once_per_job_close_at_max_or_window_and_record_one_job(
    store: Arc<dyn JobStore>,
) {
    let store: &dyn JobStore = &*store;
    use mavera_triggers::jobs::digest::Gather;
    drain(store).await;
    let now = now_ms();
    let gather = |key: &str, job_id: u64| Gather {
        trigger: "churn_digest".into(),
        key: key.into(),
        source: Source::Segment,
        action: "research".into(),
        window_ms: 3_600_000,
        max: 3,
        job_id: 900_000 + job_id,
        user_id: Some(format!("u{job_id}")),
        context: json!({"user_id": format!("u{job_id}")}),
        now_ms: now,
    };
    let first = store.gather(&gather("smb", 1)).await.unwrap();
    assert_eq!((first.count, first.closed), (1, false));
    // The same job gathered again (a retry) adds nothing.
    assert_eq!(store.gather(&gather("smb", 1)).await.unwrap(), first);
    store.gather(&gather("smb", 2)).await.unwrap();
    let other = store.gather(&gather("enterprise", 3)).await.unwrap();
    assert_ne!(other.digest_id, first.digest_id, "one digest per key");
    let full = store.gather(&gather("smb", 4)).await.unwrap();
    assert_eq!(
        (full.digest_id, full.count, full.closed),
        (first.digest_id, 3, true)
    );
    let open = store.open_digests().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].key.as_str(), open[0].users.clone()),
        ("enterprise", vec!["u3".to_string()])
    );
    // The full digest's job is queued; the open one's window has not ended.
    assert_eq!(store.close_due_digests(now).await.unwrap(), 0);
    let job = store
        .claim(now_ms(), 60_000)
        .await
        .unwrap()
        .expect("the digest's job");
    assert_eq!(job.new.context["digest_id"], json!(first.digest_id));
    assert_eq!(job.new.context["key"], "smb");
    assert_eq!(job.new.context["count"], 3);
    assert_eq!(job.new.action, JobKind::Action(ActionKind::Research));
    let events = store.digest_events(first.digest_id).await.unwrap();
    let users: Vec<&str> = events
        .iter()
        .map(|e| e["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["u1", "u2", "u4"], "in arrival order");
    store
        .finish(job.id, json!({"done": true}), vec![])
        .await
        .unwrap();
    // The window ends: the other digest closes, once.
    assert_eq!(store.close_due_digests(now + 3_600_000).await.unwrap(), 1);
    assert_eq!(store.close_due_digests(now + 3_600_000).await.unwrap(), 0);
    let job = store
        .claim(now_ms(), 60_000)
        .await
        .unwrap()
        .expect("the closed digest's job");
    assert_eq!(job.new.context["key"], "enterprise");
    store
        .finish(job.id, json!({"done": true}), vec![])
        .await
        .unwrap();
    // A gather after the window ended closes the stale digest and opens a new one.
    let stale = Gather {
        now_ms: now + 7_200_000,
        ..gather("enterprise", 5)
    };
    store.gather(&gather("enterprise", 6)).await.unwrap();
    let fresh = store.gather(&stale).await.unwrap();
    assert_eq!(fresh.count, 1, "a new digest");
    drain(store).await;
    assert!(store.claim(now_ms(), 60_000).await.unwrap().is_none());
}
