//! The active trigger table, and a form that runs a test event through it in dry run: nothing is recorded,
//! nothing is sent.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Form,
};
use serde::Deserialize;

use super::layout::{badge, esc, page};
use crate::{
    clients::customerio::dry_run_attributes,
    sources::{Source, SourceSettings},
    state::AppState,
    triggers::{config::SinkSpec, Plan, TriggerTable},
};

fn sink_label(sink: &SinkSpec) -> String {
    match sink {
        SinkSpec::Log => "log".into(),
        SinkSpec::File { path } => format!("file {}", esc(path)),
        // A Slack webhook URL is a credential: only its kind is shown.
        SinkSpec::Slack { .. } => "slack".into(),
        SinkSpec::Webhook { url, secret } => format!(
            "webhook {}{}",
            esc(&reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "(url)".into())),
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
    esc(&format!("{kind}: {}", parts.join("; ")))
}

fn table_html(table: &TriggerTable) -> String {
    let rows: String = table
        .triggers()
        .iter()
        .map(|t| {
            let sinks: Vec<String> = if t.sinks.is_empty() {
                vec!["log".into()]
            } else {
                t.sinks.iter().map(sink_label).collect()
            };
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.name),
                t.source,
                esc(&t.events.join(", ")),
                esc(t.action.kind()),
                t.condition_source().map(|c| format!("<code>{}</code>", esc(c))).unwrap_or_else(|| "—".into()),
                t.cooldown
                    .map(|c| humantime::format_duration(c).to_string())
                    .unwrap_or_else(|| "—".into()),
                sinks.join(", ")
            )
        })
        .collect();
    format!(
        "<p class=meta>From <code>{}</code>. <code>POST /admin/reload</code> or SIGHUP reads it again.</p>\
         <table><tr><th>trigger</th><th>source</th><th>events / metrics</th><th>action</th><th>when</th><th>cooldown</th><th>sinks</th></tr>{rows}</table>",
        esc(&table.path)
    )
}

fn form_html(csrf: &str, source: Source, body: &str) -> String {
    let option = |s: Source| {
        format!(
            "<option value=\"{s}\"{}>{s}</option>",
            if s == source { " selected" } else { "" }
        )
    };
    format!(
        "<section><h2>Send a test event (dry run)</h2>\
         <p class=meta>Runs the event through the active trigger table and shows what each trigger would send to Mavera. Nothing is recorded or sent; no signature is needed. Customer.io triggers use a sample pro-plan profile for the customer look-up.</p>\
         <form method=post action=\"/console/triggers/test\"><input type=hidden name=csrf value=\"{csrf}\">\
         <p><label>source <select name=source>{}</select></label></p>\
         <p><textarea name=body rows=12 cols=90 spellcheck=false>{}</textarea></p>\
         <button type=submit>Run through the triggers</button></form></section>",
        Source::all().iter().map(|&s| option(s)).collect::<String>(),
        esc(body)
    )
}

/// The digests still gathering: what they hold and when they close.
async fn open_digests_html(state: &AppState) -> String {
    let open = match state.jobs.store.open_digests().await {
        Ok(open) => open,
        Err(e) => return format!("<p role=alert>{}</p>", esc(&e.to_string())),
    };
    if open.is_empty() {
        return if state
            .table
            .load()
            .triggers()
            .iter()
            .any(|t| t.digest.is_some())
        {
            "<section><h2>Open digests</h2><p>None gathering now.</p></section>".into()
        } else {
            String::new()
        };
    }
    let rows: String = open
        .iter()
        .map(|d| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{} of {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.trigger),
                esc(if d.key.is_empty() { "—" } else { &d.key }),
                d.count,
                d.max,
                esc(&d.users.join(", ")),
                super::layout::time(d.opened_ms),
                super::layout::time(d.closes_ms),
            )
        })
        .collect();
    format!(
        "<section><h2>Open digests</h2><table><tr><th>trigger</th><th>key</th><th>events</th><th>about</th><th>opened</th><th>closes</th></tr>{rows}</table></section>"
    )
}

pub async fn show(State(state): State<AppState>) -> Response {
    let table = state.table.load_full();
    let csrf = super::csrf_for(&state);
    // The form starts with the first provider's sample; the others' are shown to copy.
    let (first, others) = Source::all()
        .split_first()
        .expect("a provider is registered");
    let other_samples: String = others
        .iter()
        .map(|s| {
            format!(
                "<p class=meta>{} sample: <code>{}</code></p>",
                s.provider().describe().title,
                esc(&s.provider().describe().console_sample.replace('\n', " "))
            )
        })
        .collect();
    page(
        "Triggers",
        &format!(
            "{}{}{}{other_samples}",
            table_html(&table),
            open_digests_html(&state).await,
            form_html(&csrf, *first, first.provider().describe().console_sample),
        ),
    )
    .into_response()
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

pub async fn test(State(state): State<AppState>, Form(form): Form<TestEvent>) -> Response {
    if !super::csrf_ok(&state, &form.csrf) {
        return super::csrf_refused();
    }
    let table = state.table.load_full();
    let results = match parse(form.source, form.body.as_bytes()) {
        Err(e) => format!("<p role=alert>{}</p>", esc(&e)),
        Ok(events) => {
            let attributes = dry_run_attributes();
            events
                .iter()
                .map(|event| {
                    let plans = table.dry_run(event, &attributes);
                    let items: String = plans
                        .iter()
                        .map(|p| {
                            let detail = match &p.outcome {
                                Plan::Send { method, path, body } => format!(
                                    "{} would send <code>{method} {path}</code><pre>{}</pre>",
                                    badge("triggered"),
                                    esc(&serde_json::to_string_pretty(body).unwrap_or_default())
                                ),
                                Plan::Gather { key, window, max } => format!(
                                    "{} would be gathered into the digest <code>{}</code>: the action runs once for all its events when {window} have passed since its first event, or at {max} events",
                                    badge("pending"),
                                    esc(if key.is_empty() { "(one digest for the trigger)" } else { key })
                                ),
                                Plan::Skipped { reason } => {
                                    format!("{} {}", badge("skipped"), esc(reason))
                                }
                                Plan::Failed { error } => {
                                    format!("{} {}", badge("failed"), esc(error))
                                }
                            };
                            format!(
                                "<article><h3><code>{}</code> · {}</h3>{detail}</article>",
                                esc(&p.trigger),
                                esc(p.action)
                            )
                        })
                        .collect();
                    let items = if plans.is_empty() {
                        "<p>No trigger matches: the server would answer 200 and ignore it.</p>"
                            .to_string()
                    } else {
                        items
                    };
                    format!(
                        "<section><h2>Event <code>{}</code> · {} · user {}</h2>{items}</section>",
                        esc(&event.id),
                        esc(&event.name),
                        esc(event.user_id.as_deref().unwrap_or("unknown"))
                    )
                })
                .collect()
        }
    };
    let csrf = super::csrf_for(&state);
    (
        StatusCode::OK,
        page(
            "Test event: dry run",
            &format!(
                "{results}{}{}",
                form_html(&csrf, form.source, &form.body),
                table_html(&table)
            ),
        ),
    )
        .into_response()
}
