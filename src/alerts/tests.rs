//! The alert conditions and their firing memory, on snapshots with a fixed clock.

use super::*;

const MIN: u64 = 60_000;

fn holds(kind: AlertKind) -> Vec<(AlertKind, Option<Condition>)> {
    vec![(
        kind,
        Some(Condition {
            message: "m".into(),
            details: json!({}),
        }),
    )]
}

#[test]
fn a_condition_fires_once_folds_repeats_until_repeat_and_recovers_once() {
    let mut alerter = Alerter::default();
    let repeat = Duration::from_secs(3600);
    let kind = AlertKind::BacklogStale;
    let first = alerter.step(0, repeat, holds(kind));
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].state, AlertState::Firing);
    for t in [1, 15, 59] {
        assert!(
            alerter.step(t * MIN, repeat, holds(kind)).is_empty(),
            "folded at {t} min"
        );
    }
    let again = alerter.step(60 * MIN, repeat, holds(kind));
    assert_eq!(again.len(), 1, "sent again after `repeat`");
    let recovered = alerter.step(61 * MIN, repeat, vec![(kind, None)]);
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].state, AlertState::Recovered);
    assert!(
        alerter
            .step(62 * MIN, repeat, vec![(kind, None)])
            .is_empty(),
        "recovered once"
    );
    assert_eq!(
        alerter.step(63 * MIN, repeat, holds(kind)).len(),
        1,
        "a new start fires"
    );
}

#[test]
fn a_delivery_has_the_documented_shape() {
    let notice = Notice {
        kind: AlertKind::CreditsExhausted,
        state: AlertState::Firing,
        message: "m".into(),
        details: json!({"since": "1m"}),
        at_ms: 0,
    };
    assert_eq!(
        notice.delivery(),
        json!({"type": "alert", "alert": "credits_exhausted", "state": "firing", "message": "m",
               "at": "1970-01-01T00:00:00Z", "details": {"since": "1m"}})
    );
}

/// The verdict on `kind` for a snapshot at minute 100.
fn verdict(kind: AlertKind, s: Snapshot, dead_known: u64) -> Option<Condition> {
    let s = Snapshot {
        now_ms: 100 * MIN,
        ..s
    };
    conditions(&s, &AlertSettings::default(), dead_known)
        .into_iter()
        .find(|(k, _)| *k == kind)
        .and_then(|(_, c)| c)
}

#[test]
fn each_kind_holds_exactly_when_its_condition_does() {
    use AlertKind::*;
    let quiet = Snapshot {
        dead: Some(2),
        ..Snapshot::default()
    };
    for kind in AlertKind::ALL {
        assert_eq!(
            verdict(kind, quiet.clone(), 2),
            None,
            "{kind:?} in a quiet snapshot"
        );
    }
    let credits = Snapshot {
        credits_exhausted_ms: 99 * MIN,
        ..Snapshot::default()
    };
    assert!(verdict(CreditsExhausted, credits, 0).is_some());
    let budget = |at| Snapshot {
        budget_hold_ms: at,
        ..Snapshot::default()
    };
    assert!(verdict(BudgetSpent, budget(95 * MIN), 0).is_some());
    assert_eq!(
        verdict(BudgetSpent, budget(80 * MIN), 0),
        None,
        "no hold for 20 minutes"
    );
    let dead = verdict(
        DeadLetters,
        Snapshot {
            dead: Some(5),
            ..Snapshot::default()
        },
        2,
    )
    .unwrap();
    assert_eq!(dead.details["new"], 3);
    let pending = |at| Snapshot {
        oldest_pending_ms: Some(at),
        ..Snapshot::default()
    };
    assert!(
        verdict(BacklogStale, pending(85 * MIN), 0).is_some(),
        "15 minutes old"
    );
    assert_eq!(
        verdict(BacklogStale, pending(90 * MIN), 0),
        None,
        "10 minutes old"
    );
    let failing = |since| Snapshot {
        failing: vec![("Mavera", since)],
        ..Snapshot::default()
    };
    let down = verdict(UpstreamDown, failing(95 * MIN), 0).unwrap();
    assert!(down.message.starts_with("Mavera"), "{}", down.message);
    assert_eq!(
        verdict(UpstreamDown, failing(97 * MIN), 0),
        None,
        "3 minutes"
    );
    let store = Snapshot {
        store_error: Some("disk full".into()),
        ..Snapshot::default()
    };
    assert_eq!(
        verdict(StoreUnwritable, store, 0).unwrap().details["error"],
        "disk full"
    );
}
