//! The active trigger table, and a form that runs a test event through it in dry run: nothing is recorded,
//! nothing is sent.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
    Form,
};
use minijinja::{context, Value};
use serde::Deserialize;

use super::layout::{render, time};
use crate::{
    clients::customerio::dry_run_attributes,
    sources::{Source, SourceSettings},
    state::AppState,
    triggers::{config::SinkSpec, Plan, Planned, TriggerTable},
};

fn sink_label(sink: &SinkSpec) -> String {
    match sink {
        SinkSpec::Log => "log".into(),
        SinkSpec::File { path } => format!("file {path}"),
        // A Slack webhook URL is a credential: only its kind is shown.
        SinkSpec::Slack { .. } => "slack".into(),
        SinkSpec::Webhook { url, secret } => format!(
            "webhook {}{}",
            reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "(url)".into()),
            if secret.is_some() { " (signed)" } else { "" }
        ),
        SinkSpec::Customerio {
            attributes, event, ..
        } => write_back_label("customerio", attributes.keys(), event.as_deref()),
        SinkSpec::Segment { traits, event, .. } => {
            write_back_label("segment", traits.keys(), event.as_deref())
        }
    }
}

/// `customerio: attributes mavera_persona_id, last_brief; event mavera_brief_ready`.
fn write_back_label<'a>(
    kind: &str,
    keys: impl Iterator<Item = &'a String>,
    event: Option<&str>,
) -> String {
    let keys: Vec<&str> = keys.map(String::as_str).collect();
    let mut parts = Vec::new();
    if !keys.is_empty() {
        parts.push(format!("sets {}", keys.join(", ")));
    }
    if let Some(event) = event {
        parts.push(format!("event {event}"));
    }
    format!("{kind}: {}", parts.join("; "))
}

/// The trigger table, for `trigger_table.html`.
fn table_view(table: &TriggerTable) -> Value {
    let triggers: Vec<Value> = table
        .triggers()
        .iter()
        .map(|t| {
            let sinks: Vec<String> = if t.sinks.is_empty() {
                vec!["log".into()]
            } else {
                t.sinks.iter().map(sink_label).collect()
            };
            context! {
                name => t.name,
                source => t.source.as_str(),
                events => t.events,
                action => t.action.kind(),
                condition => t.condition_source(),
                cooldown => t.cooldown.map(|c| humantime::format_duration(c).to_string()),
                sinks,
            }
        })
        .collect();
    context! { path => table.path, triggers }
}

/// The test-event form, for `trigger_form.html`.
fn form_view(source: Source, body: &str) -> Value {
    let sources: Vec<&str> = Source::all().iter().map(|s| s.as_str()).collect();
    context! { sources, source => source.as_str(), body }
}

/// The digests still gathering: what they hold and when they close. Shown when one is open or a trigger
/// gathers digests.
async fn open_digests(state: &AppState) -> Value {
    let open = match state.jobs.store.open_digests().await {
        Ok(open) => open,
        Err(e) => return context! { error => e.to_string() },
    };
    let gathers = state
        .table
        .load()
        .triggers()
        .iter()
        .any(|t| t.digest.is_some());
    let rows: Vec<Value> = open
        .iter()
        .map(|d| {
            context! {
                trigger => d.trigger,
                key => d.key,
                count => d.count,
                max => d.max,
                users => d.users,
                opened => time(d.opened_ms),
                closes => time(d.closes_ms),
            }
        })
        .collect();
    context! { shown => gathers || !rows.is_empty(), rows }
}

pub async fn show(State(state): State<AppState>) -> Response {
    let table = state.table.load_full();
    // The form starts with the first provider's sample; the others' are shown to copy.
    let (first, others) = Source::all()
        .split_first()
        .expect("a provider is registered");
    let other_samples: Vec<Value> = others
        .iter()
        .map(|s| {
            let described = s.provider().describe();
            context! { title => described.title, sample => described.console_sample.replace('\n', " ") }
        })
        .collect();
    render(
        StatusCode::OK,
        "triggers.html",
        context! {
            title => "Triggers",
            table => table_view(&table),
            digests => open_digests(&state).await,
            csrf => super::csrf_for(&state),
            form => form_view(*first, first.provider().describe().console_sample),
            other_samples,
        },
    )
}

#[derive(Deserialize)]
pub struct TestEvent {
    csrf: String,
    source: Source,
    body: String,
}

/// Parses a test body as its source would, without a signature.
fn parse(source: Source, body: &[u8]) -> Result<Vec<crate::sources::Event>, String> {
    let provider = source.provider();
    let settings = SourceSettings::unsigned();
    let parsed = provider
        .verify(
            &settings,
            &HeaderMap::new(),
            body,
            std::time::SystemTime::now(),
        )
        .and_then(|verified| provider.parse(&settings, &verified, Ok(())))
        .map_err(|e| e.to_string())?;
    match parsed.unusable.first() {
        Some(part) => Err(format!(
            "{}: {}",
            provider.describe().kept_answer,
            part.refusal.reason()
        )),
        None => Ok(parsed.events),
    }
}

/// What one trigger would do with a test event, for `triggers.html`.
fn plan_view(p: &Planned) -> Value {
    let outcome = match &p.outcome {
        Plan::Send { method, path, body } => context! {
            send => context! {
                method,
                path,
                body => serde_json::to_string_pretty(body).unwrap_or_default(),
            },
        },
        Plan::Gather { key, window, max } => context! {
            gather => context! { key, window, max },
        },
        Plan::Skipped { reason } => context! { skipped => reason },
        Plan::Failed { error } => context! { failed => error },
    };
    context! { trigger => p.trigger, action => p.action, ..outcome }
}

pub async fn test(State(state): State<AppState>, Form(form): Form<TestEvent>) -> Response {
    if !super::csrf_ok(&state, &form.csrf) {
        return super::csrf_refused();
    }
    let table = state.table.load_full();
    let results = match parse(form.source, form.body.as_bytes()) {
        Err(error) => context! { error },
        Ok(events) => {
            let attributes = dry_run_attributes();
            let events: Vec<Value> = events
                .iter()
                .map(|event| {
                    let plans = table.dry_run(event, &attributes);
                    context! {
                        id => event.id,
                        name => event.name,
                        user => event.user_id.as_deref().unwrap_or("unknown"),
                        plans => plans.iter().map(plan_view).collect::<Vec<_>>(),
                    }
                })
                .collect();
            context! { events }
        }
    };
    render(
        StatusCode::OK,
        "triggers.html",
        context! {
            title => "Test event: dry run",
            results,
            csrf => super::csrf_for(&state),
            form => form_view(form.source, &form.body),
            table => table_view(&table),
        },
    )
}
