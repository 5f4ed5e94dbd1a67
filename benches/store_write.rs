//! Group commit cost on the SQLite store (issue #19): events per second and milliseconds per commit for
//! batches of 1, 8, 32 and 128 realistic Segment deliveries (1.1 KB raw event, one job each), through the
//! store's own `Intake::record`. `cargo bench --bench store_write`; see benches/README.md.

mod common;

use std::{sync::Arc, time::Instant};

use mavera_triggers::{
    jobs::{events::RequestMeta, sqlite::SqliteStore, store::Intake, Delivery, JobKind, NewJob},
    sources::Source,
    triggers::ActionKind,
};
use serde_json::{Map, Value};

use common::segment_track;

fn delivery(tag: &str, i: usize) -> Delivery {
    let id = format!("{tag}-{i}");
    let user = format!("u{tag}{i}");
    let raw = segment_track("trial_started", &id, &user);
    let context: Map<String, Value> = serde_json::from_str(&raw).unwrap();
    Delivery {
        source: Source::Segment,
        event_id: id.clone(),
        name: "trial_started".into(),
        user_id: Some(user.clone()),
        raw,
        meta: RequestMeta {
            headers:
                r#"{"content-type":"application/json","x-signature":"abcdef01… (64 characters)"}"#
                    .into(),
            signature: "verified: X-Signature".into(),
        },
        jobs: vec![NewJob {
            trigger: "trial_persona".into(),
            action: JobKind::Action(ActionKind::CreatePersona),
            source: Source::Segment,
            event_id: id,
            user_id: Some(user),
            context,
        }],
        refusal: None,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("w.db").display());
    let store: Arc<SqliteStore> = Arc::new(rt.block_on(SqliteStore::open(&url, true)).unwrap());
    let total: usize = if bench { 40_000 } else { 200 };
    for batch in [1usize, 8, 32, 128] {
        let batches: Vec<Vec<Delivery>> = (0..total / batch)
            .map(|b| {
                (0..batch)
                    .map(|i| delivery(&format!("b{batch}x{b}"), i))
                    .collect()
            })
            .collect();
        let n = batches.len();
        let started = Instant::now();
        rt.block_on(async {
            for deliveries in batches {
                store
                    .record(deliveries, mavera_triggers::jobs::now_ms())
                    .await
                    .unwrap();
            }
        });
        let secs = started.elapsed().as_secs_f64();
        println!(
            "batch {batch:>4}: {:>8.0} events/s, {:.3} ms per commit ({n} commits)",
            (n * batch) as f64 / secs,
            secs * 1000.0 / n as f64
        );
    }
}
