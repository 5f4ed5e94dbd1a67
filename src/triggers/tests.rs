//! The trigger table: loading, validation messages, matching, rendering.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::*;

fn shipped() -> TriggerTable {
    TriggerTable::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/mavera-triggers.toml"
    )))
    .expect("the shipped config loads")
}

fn ctx(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn table(toml: &str) -> TriggerTable {
    TriggerTable::from_toml(toml, "t.toml").expect("the table compiles")
}

fn error_of(toml: &str) -> String {
    TriggerTable::from_toml(toml, "my.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn the_shipped_table_has_the_seeds_four_triggers_and_the_churn_alert() {
    let table = shipped();
    let names: Vec<_> = table.triggers().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "trial_started",
            "plan_upgraded",
            "feature_milestone",
            "churn_signal",
            "cio_churn_alert"
        ]
    );
    let cio = table.get("cio_churn_alert").unwrap();
    assert_eq!(cio.events, ["unsubscribed", "bounced", "spammed"]);
    assert!(cio.decides_in_job());
}

#[test]
fn missing_values_render_as_unknown() {
    let table = shipped();
    let t = table.get("trial_started").unwrap();
    let ctx = table.prepare(t, ctx(json!({"user_id": "u1"}))).unwrap();
    let Rendered::CreatePersona { body } = table.render(t, &ctx).unwrap() else {
        panic!()
    };
    assert_eq!(
        body["description"],
        "Real-time persona created when user u1 started a trial. Plan: unknown. Source: unknown."
    );
}

#[test]
fn the_classification_reproduces_classify_persona() {
    let table = shipped();
    let t = table.get("cio_churn_alert").unwrap();
    let cases = [
        (
            json!({"plan_type": "Pro", "mrr": "850", "industry": "fintech"}),
            "High-MRR Fintech (Pro plan)",
            true,
        ),
        (
            json!({"plan_type": "enterprise", "mrr": "abc", "industry": "health care", "usage_tier": "HIGH"}),
            "Enterprise Health Care (high usage)",
            true,
        ),
        (
            json!({"plan_type": "starter", "mrr": "600"}),
            "High-MRR General (Starter plan)",
            false,
        ),
        (json!({}), "Free General User", false),
    ];
    for (attributes, persona_type, fires) in cases {
        let prepared = table
            .prepare(t, ctx(json!({"attributes": attributes})))
            .unwrap();
        assert_eq!(prepared["persona_type"], persona_type, "{attributes}");
        assert_eq!(
            table.condition_holds(t, &prepared).unwrap(),
            fires,
            "{attributes}"
        );
    }
}

#[test]
fn unknown_keys_are_rejected_with_file_and_line() {
    let err = error_of("[[triggers]]\nname = \"a\"\nsource = \"segment\"\nevents = [\"x\"]\nspeed = 3\n[triggers.research]\nmessage = \"m\"\n");
    assert!(err.starts_with("my.toml:"), "{err}");
    assert!(err.contains("unknown field `speed`"), "{err}");
}

#[test]
fn a_bad_template_names_the_trigger_and_the_key() {
    let err = error_of("[[triggers]]\nname = \"broken\"\nsource = \"segment\"\nevents = [\"x\"]\n[triggers.research]\nmessage = \"{{ user_id \"\n");
    assert!(
        err.contains("my.toml: trigger `broken`, key `research.message`"),
        "{err}"
    );
    let err = error_of("[[triggers]]\nname = \"filter\"\nsource = \"segment\"\nevents = [\"x\"]\n[triggers.research]\nmessage = \"{{ user_id | nosuchfilter }}\"\n");
    assert!(
        err.contains("trigger `filter`, key `research.message`"),
        "{err}"
    );
    assert!(
        err.contains("nosuchfilter") || err.contains("unknown filter"),
        "{err}"
    );
}

#[test]
fn a_trigger_needs_exactly_one_action_and_some_events() {
    let none = error_of("[[triggers]]\nname = \"a\"\nsource = \"segment\"\nevents = [\"x\"]\n");
    assert!(
        none.contains("neither is set") && none.contains("Fix:"),
        "{none}"
    );
    let both = error_of("[[triggers]]\nname = \"a\"\nsource = \"segment\"\nevents = [\"x\"]\n[triggers.research]\nmessage = \"m\"\n[triggers.create_persona]\nname = \"n\"\ndescription = \"d\"\n");
    assert!(both.contains("both are set"), "{both}");
    let no_events = error_of("[[triggers]]\nname = \"a\"\nsource = \"segment\"\nevents = []\n[triggers.research]\nmessage = \"m\"\n");
    assert!(no_events.contains("key `events`"), "{no_events}");
    let dup = error_of("[[triggers]]\nname = \"a\"\nsource = \"segment\"\nevents = [\"x\"]\n[triggers.research]\nmessage = \"m\"\n[[triggers]]\nname = \"a\"\nsource = \"segment\"\nevents = [\"y\"]\n[triggers.research]\nmessage = \"m\"\n");
    assert!(dup.contains("used twice"), "{dup}");
    let source = error_of("[[triggers]]\nname = \"a\"\nsource = \"stripe\"\nevents = [\"x\"]\n[triggers.research]\nmessage = \"m\"\n");
    assert!(source.contains("stripe"), "{source}");
}

#[test]
fn a_missing_file_says_which_and_how_to_fix_it() {
    let err = TriggerTable::load(Path::new("/nonexistent/triggers.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/triggers.toml") && err.contains("MAVERA_TRIGGERS_CONFIG"),
        "{err}"
    );
}

#[test]
fn a_condition_filters_segment_events_and_a_wildcard_matches_all() {
    let table = table("[[triggers]]\nname = \"big\"\nsource = \"segment\"\nevents = [\"*\"]\nwhen = \"properties.amount | number > 100\"\n[triggers.research]\nmessage = \"{{ event }}\"\n");
    let t = table.get("big").unwrap();
    assert!(table
        .condition_holds(t, &ctx(json!({"properties": {"amount": 150}})))
        .unwrap());
    assert!(!table
        .condition_holds(t, &ctx(json!({"properties": {"amount": "50"}})))
        .unwrap());
    assert!(!table.condition_holds(t, &ctx(json!({}))).unwrap());
}

#[test]
fn persona_fields_are_templates_too() {
    let table = table("[[triggers]]\nname = \"p\"\nsource = \"segment\"\nevents = [\"x\"]\n[triggers.create_persona]\nname = \"P {{ user_id }}\"\ndescription = \"d\"\nfields = { type = \"B2B\", goals = [\"grow {{ plan }}\"], weight = 3 }\n");
    let t = table.get("p").unwrap();
    let Rendered::CreatePersona { body } = table
        .render(t, &ctx(json!({"user_id": "u9", "plan": "pro"})))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        body,
        json!({"type": "B2B", "goals": ["grow pro"], "weight": 3, "name": "P u9", "description": "d"})
    );
}

#[test]
fn alerts_default_to_the_log_and_bad_settings_name_the_alerts_table() {
    assert_eq!(shipped().alerts, AlertSettings::default());
    let table = TriggerTable::from_toml(
        "[alerts]\nsinks = [{ type = \"file\", path = \"alerts.jsonl\" }]\nrepeat = \"30m\"\nbacklog_age = \"5m\"\n",
        "my.toml",
    )
    .unwrap();
    assert_eq!(table.alerts.repeat, std::time::Duration::from_secs(1800));
    assert_eq!(
        table.alerts.backlog_age,
        std::time::Duration::from_secs(300)
    );
    assert_eq!(
        table.alerts.upstream_down,
        std::time::Duration::from_secs(300)
    );
    let err = error_of("[alerts]\nrepeat = \"often\"\n");
    assert!(err.contains("[alerts]") && err.contains("repeat"), "{err}");
    let err = error_of(
        "[alerts]\nsinks = [{ type = \"slack\", webhook_url = \"${NO_SUCH_ALERT_HOOK}\" }]\n",
    );
    assert!(err.contains("NO_SUCH_ALERT_HOOK"), "{err}");
    assert!(error_of("[alerts]\nrepaet = \"1h\"\n").contains("repaet"));
    let err = error_of("[alerts]\nsinks = [{ type = \"segment\", event = \"x\" }]\n");
    assert!(err.contains("sinks[0]") && err.contains("webhook"), "{err}");
}

#[test]
fn a_missing_tenure_or_amount_renders_n_a_without_its_unit() {
    let table = shipped();
    let summary = |trigger: &str, context: Value| {
        let t = table.get(trigger).unwrap();
        let prepared = table.prepare(t, ctx(context)).unwrap();
        let Rendered::Research {
            summary, message, ..
        } = table.render(t, &prepared).unwrap()
        else {
            panic!("{trigger} is a research trigger")
        };
        (summary.unwrap(), message)
    };
    let (missing, message) = summary(
        "cio_churn_alert",
        json!({"metric": "bounced", "attributes": {"plan_type": "pro"}}),
    );
    assert_eq!(missing, "MRR: N/A | Tenure: N/A | Plan: pro");
    assert!(message.contains("MRR: N/A\nTENURE: N/A\n"), "{message}");
    let (present, message) = summary(
        "cio_churn_alert",
        json!({"attributes": {"plan_type": "pro", "mrr": "850", "tenure_days": "342"}}),
    );
    assert_eq!(present, "MRR: $850 | Tenure: 342d | Plan: pro");
    assert!(
        message.contains("MRR: $850\nTENURE: 342 days\n"),
        "{message}"
    );
    let (missing, _) = summary("churn_signal", json!({"user_id": "u1"}));
    assert_eq!(missing, "LTV: N/A | Tenure: N/A");
    let (present, _) = summary(
        "churn_signal",
        json!({"user_id": "u1", "ltv": 0, "tenure_days": 97}),
    );
    assert_eq!(present, "LTV: $0 | Tenure: 97d");
}

#[test]
fn a_template_sees_every_name_it_reads_however_it_reads_it() {
    // Each template is given only the context's names it reads (render::reads_of): loops, filters, `set`,
    // a `vars` entry, a condition, bracket access, a slice (which minijinja's own analysis misses) and a
    // nested path must all still find their values.
    let table = table(concat!(
        "[[triggers]]\nname = \"p\"\nsource = \"segment\"\nevents = [\"x\"]\n",
        "when = \"properties['plan'] == 'pro' and seats > 1\"\n",
        "vars = { seats = \"{{ properties.seats | default(0) }}\" }\n",
        "[triggers.create_persona]\n",
        "name = \"{% set who = user_id %}P {{ who }} {{ traits.company | upper }} {{ anonymous_id[:4] }}\"\n",
        "description = \"{% for k in properties %}{{ k }}={{ properties[k] }};{% endfor %} {{ context.page.path }}\"\n",
        "fields = { seats = \"{{ seats }}\", missing = \"{{ nowhere.at_all }}\" }\n",
    ));
    let t = table.get("p").unwrap();
    let event = ctx(json!({
        "user_id": "u9",
        "anonymous_id": "anon-7f3c",
        "properties": {"plan": "pro", "seats": 5},
        "traits": {"company": "acme"},
        "context": {"page": {"path": "/trial"}},
        "payload": {"big": "x".repeat(2000)},
    }));
    let prepared = table.prepare(t, event).unwrap();
    assert!(table.condition_holds(t, &prepared).unwrap());
    let Rendered::CreatePersona { body } = table.render(t, &prepared).unwrap() else {
        panic!()
    };
    assert_eq!(
        body,
        json!({
            "seats": "5",
            "missing": "unknown",
            "name": "P u9 ACME anon",
            "description": "plan=pro;seats=5; /trial",
        })
    );
    assert!(
        !table
            .reads
            .values()
            .any(|names| names.iter().any(|n| n == "payload")),
        "no template reads the payload, so none is given it"
    );
}

#[test]
fn a_template_that_may_read_anything_is_given_the_whole_context() {
    let table = table(concat!(
        "[[triggers]]\nname = \"p\"\nsource = \"segment\"\nevents = [\"x\"]\n",
        "[triggers.create_persona]\nname = \"P {{ user_id }}\"\ndescription = \"{{ debug() }}\"\n",
    ));
    let t = table.get("p").unwrap();
    let Rendered::CreatePersona { body } = table
        .render(t, &ctx(json!({"user_id": "u9", "plan": "gold"})))
        .unwrap()
    else {
        panic!()
    };
    let description = body["description"].as_str().unwrap();
    assert!(description.contains("gold"), "{description}");
}
