//! Micro-benchmarks of the per-request hot path (issue #8). `cargo bench --bench hot_path`; see
//! benches/README.md. Each benchmark measures for 2 s, so the whole run takes well under a minute.

mod common;

use std::{
    fmt::Write as _,
    hint::black_box,
    path::Path,
    time::{Duration, SystemTime},
};

use axum::http::{HeaderMap, HeaderValue};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mavera_triggers::{
    config::Secret,
    dedupe::DedupeMemory,
    sources::{
        customerio::{self, Parsed},
        segment, Event,
    },
    triggers::TriggerTable,
};
use serde_json::{json, Value};

use common::{
    cio_event, cio_signature, segment_signature, segment_track, CIO_SECRET, SEGMENT_SECRET,
};

fn segment_headers(body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        segment::SIGNATURE_HEADER,
        HeaderValue::from_str(&segment_signature(body)).unwrap(),
    );
    h
}

fn cio_headers(body: &[u8]) -> HeaderMap {
    let (ts, sig) = cio_signature(body);
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        customerio::TIMESTAMP_HEADER,
        HeaderValue::from_str(&ts).unwrap(),
    );
    h.insert(
        customerio::SIGNATURE_HEADER,
        HeaderValue::from_str(&sig).unwrap(),
    );
    h
}

fn segment_event(name: &str) -> Event {
    let body = segment_track(name, "ajs-next-1732541457974-7f3c2a91", "usr_k8m2n4p7");
    let verified = segment::verify(&HeaderMap::new(), body.as_bytes(), &[], true).unwrap();
    segment::parse(&verified).unwrap().events.remove(0)
}

fn cio_unsubscribed() -> Event {
    let body = cio_event("unsubscribed", "email", "01E4C4CT6YDC7Y5M7FE1GWWPQJ", "42");
    let verified = customerio::verify(
        &HeaderMap::new(),
        body.as_bytes(),
        &[],
        true,
        Duration::ZERO,
        SystemTime::now(),
    )
    .unwrap();
    match customerio::parse(&verified) {
        Parsed::Event(e) => *e,
        Parsed::Unprocessable(part) => panic!("{}", part.refusal.reason()),
    }
}

fn table() -> TriggerTable {
    TriggerTable::load(Path::new(common::CONFIG)).expect("the shipped trigger table loads")
}

fn sources(c: &mut Criterion) {
    let secrets = [Secret::new(SEGMENT_SECRET)];
    let body = segment_track(
        "trial_started",
        "ajs-next-1732541457974-7f3c2a91",
        "usr_k8m2n4p7",
    );
    let bytes = body.as_bytes();
    let headers = segment_headers(bytes);
    let mut g = c.benchmark_group("segment");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function(format!("verify ({} B body)", bytes.len()), |b| {
        b.iter(|| segment::verify(black_box(&headers), black_box(bytes), &secrets, false).unwrap())
    });
    let verified = segment::verify(&headers, bytes, &secrets, false).unwrap();
    // What dedupe and trigger matching need: the event's head (id, name, type, user).
    g.bench_function("parse + normalise (head)", |b| {
        b.iter(|| segment::parse(black_box(&verified)).unwrap())
    });
    // What a matching event costs besides: the whole template context, built when a trigger wants it.
    g.bench_function("parse + full context", |b| {
        b.iter(|| {
            let events = segment::parse(black_box(&verified)).unwrap();
            black_box(events.events[0].context().len())
        })
    });
    g.bench_function("verify + parse", |b| {
        b.iter(|| {
            let v =
                segment::verify(black_box(&headers), black_box(bytes), &secrets, false).unwrap();
            segment::parse(&v).unwrap()
        })
    });
    g.finish();

    let secrets = [Secret::new(CIO_SECRET)];
    let body = cio_event("unsubscribed", "email", "01E4C4CT6YDC7Y5M7FE1GWWPQJ", "42");
    let bytes = body.as_bytes();
    let headers = cio_headers(bytes);
    let tolerance = Duration::from_secs(300);
    let mut g = c.benchmark_group("customerio");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function(format!("verify + parse ({} B body)", bytes.len()), |b| {
        b.iter(|| {
            let v = customerio::verify(
                black_box(&headers),
                black_box(bytes),
                &secrets,
                false,
                tolerance,
                SystemTime::now(),
            )
            .unwrap();
            customerio::parse(&v)
        })
    });
    g.finish();
}

fn dedupe(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedupe");
    // Production size: 1,000,000 ids, 24 h. Half full, so lookups walk a realistically large map.
    // (Under `cargo test`, criterion runs each benchmark once: a small map keeps that quick.)
    let known: u64 = if std::env::args().any(|a| a == "--bench") {
        500_000
    } else {
        1_000
    };
    let memory = DedupeMemory::new(Duration::from_secs(24 * 3600), 1_000_000);
    let mut key = String::with_capacity(64);
    for i in 0..known {
        key.clear();
        let _ = write!(key, "segment:ajs-next-{i:012}");
        memory.first_sighting(&key);
    }
    let mut i = 0u64;
    g.bench_function("first_sighting: seen (re-delivery)", |b| {
        b.iter(|| {
            i = (i + 7919) % known;
            key.clear();
            let _ = write!(key, "segment:ajs-next-{i:012}");
            assert!(!memory.first_sighting(black_box(&key)));
        })
    });
    let mut n = 1_000_000_000u64;
    g.bench_function("first_sighting: new id", |b| {
        b.iter(|| {
            n += 1;
            key.clear();
            let _ = write!(key, "segment:ajs-next-{n:012}");
            assert!(memory.first_sighting(black_box(&key)));
        })
    });
    g.finish();
}

fn triggers(c: &mut Criterion) {
    let table = table();
    let trial = segment_event("trial_started");
    let other = segment_event("button_clicked");
    let unsubscribed = cio_unsubscribed();
    let mut g = c.benchmark_group("triggers");
    g.bench_function("matching: trial_started (1 match)", |b| {
        b.iter(|| table.matching(black_box(&trial)).count())
    });
    g.bench_function("matching: button_clicked (no match)", |b| {
        b.iter(|| table.matching(black_box(&other)).count())
    });
    g.bench_function("matching: cio unsubscribed (1 match)", |b| {
        b.iter(|| table.matching(black_box(&unsubscribed)).count())
    });

    // cio_churn_alert after enrichment: three vars (one of them a multi-branch template), a `when`, and a
    // research action with title, summary and a 20-line message.
    let churn = table
        .get("cio_churn_alert")
        .expect("shipped trigger")
        .clone();
    let mut ctx = unsubscribed.context().clone();
    let attributes: Value = json!({
        "plan_type": "pro", "mrr": "850", "industry": "fintech", "tenure_days": "342",
        "usage_tier": "high", "last_active_at": "1732541458", "email": "jane@acme.example"
    });
    ctx.insert("attributes".into(), attributes);
    g.bench_function("prepare + render: cio_churn_alert", |b| {
        b.iter_batched(
            || ctx.clone(),
            |ctx| {
                let ctx = table.prepare(&churn, ctx).unwrap();
                table.render(&churn, &ctx).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("prepare + when + render: cio_churn_alert", |b| {
        b.iter_batched(
            || ctx.clone(),
            |ctx| {
                let ctx = table.prepare(&churn, ctx).unwrap();
                assert!(table.condition_holds(&churn, &ctx).unwrap());
                table.render(&churn, &ctx).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    let persona = table.get("trial_started").expect("shipped trigger").clone();
    g.bench_function("prepare + render: trial_started persona", |b| {
        b.iter_batched(
            || trial.context().clone(),
            |ctx| {
                let ctx = table.prepare(&persona, ctx).unwrap();
                table.render(&persona, &ctx).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = sources, dedupe, triggers
}
criterion_main!(hot_path);
