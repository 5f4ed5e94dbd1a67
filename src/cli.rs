//! The command line: `serve`, `dev`, `check-config`, `send`, `healthcheck`.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::SystemTime};

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Mode, Settings},
    jobs::{
        audit::{replayed_detail, AuditAction, AuditEntry, Via},
        now_ms, open_store, JobState,
    },
    sources::Source,
    startup::{preflight, preflight_settings, App},
    telemetry,
    triggers::{Action, TriggerTable},
};

const ABOUT: &str =
    "Segment and Customer.io webhooks in, real-time Mavera personas and research briefs out.";

// Paragraphs are single lines, separated by blank lines: clap wraps them to the terminal's width.
const LONG_ABOUT: &str = "Segment and Customer.io webhooks in, real-time Mavera personas and research briefs out.

mavera-triggers receives Segment (POST /segment) and Customer.io reporting (POST /customerio) webhooks, checks their signatures, drops re-deliveries, and runs the matching triggers of a TOML trigger table: create a Mavera persona, or ask Mave for a research brief (Customer.io events can first be enriched with the customer's attributes). The answer to the sender never waits on Mavera.

First steps:

1. `mavera-triggers dev` runs it locally on 127.0.0.1:8080: unsigned requests are accepted, and without MAVERA_API_KEY each Mavera request is printed instead of sent.

2. `mavera-triggers send segment trial_started`, in another terminal, fires a sample event at it.

3. `mavera-triggers jobs list` shows what it did; `mavera-triggers check-config` validates the trigger table and prints it.

Settings come from the environment (and a .env file): see .env.example for every variable.";

const SEND_EXAMPLES: &str = "Examples:
  mavera-triggers send segment trial_started
  mavera-triggers send segment ./event.json --url https://x.ngrok.app/segment
  mavera-triggers send customerio unsubscribed";

#[derive(Debug, Parser)]
#[command(name = "mavera-triggers", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run in production: every source with a trigger needs its signing secret, and Mavera needs a key.
    /// Refuses to start (and says which variable to set) otherwise.
    Serve(RunArgs),
    /// Run for local development: binds 127.0.0.1, accepts unsigned requests for a source whose secret is
    /// unset (with a loud warning), and without MAVERA_API_KEY prints each Mavera request instead of sending it.
    Dev(RunArgs),
    /// Validate a trigger table and print it (default: MAVERA_TRIGGERS_CONFIG or config/mavera-triggers.toml).
    CheckConfig {
        /// The file to check.
        path: Option<PathBuf>,
    },
    /// Post a sample event or a JSON file to a running server, signed when the source's secret is set, and
    /// print the answer.
    #[command(after_help = SEND_EXAMPLES)]
    Send(SendArgs),
    /// See and fix jobs in the store (DATABASE_URL): list, show one (brief included), replay.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Erase one person: delete everything the store (DATABASE_URL) holds about a user id — events and
    /// payloads, jobs, outcomes and briefs, sink deliveries, cooldowns, the persona map — and leave no copy
    /// in the SQLite files. Prints what was removed; running it again removes nothing. What was already sent
    /// to Mavera or Slack is not reached: erase it there too.
    Forget {
        /// The user id (Segment `userId`, Customer.io customer id) as events carry it.
        #[arg(long = "user")]
        user: String,
    },
    /// Exit 0 when the local server answers GET /healthz (for Docker's HEALTHCHECK).
    Healthcheck {
        /// The health URL to ask (default: http://127.0.0.1:$WEBHOOK_PORT/healthz).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first: state, trigger, action, user, attempts, and the last error or the outcome (a
    /// persona id, a brief's title, a skip reason).
    List {
        /// Only jobs in this state: pending, running, done, dead or held.
        #[arg(long)]
        state: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Everything about one job: its event, attempts, last error and outcome (the brief, in full).
    Show {
        /// The job's id: the first column of `jobs list`.
        id: u64,
    },
    /// Run a finished, dead or held job again (a running server picks it up within a second): one job by its
    /// id, or every dead job with --dead. An operator's replay is not held back by a cooldown; budgets still
    /// apply.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "dead"])))]
    Replay {
        /// The job to replay: the first column of `jobs list`.
        id: Option<u64>,
        /// Replay every dead job instead of one.
        #[arg(long)]
        dead: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Trigger table (overrides MAVERA_TRIGGERS_CONFIG).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Port (overrides WEBHOOK_PORT; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Interface to bind (overrides BIND_ADDR).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// `segment` or `customerio`.
    pub source: Source,
    /// A JSON file to send as it is, or a name: a Segment event (trial_started, plan_upgraded,
    /// feature_milestone, churn_signal, or any name; identify/page/screen/group/alias send that type) or a
    /// Customer.io metric (unsubscribed, bounced, spammed, sent, …).
    pub event: String,
    /// Where to post (default: http://127.0.0.1:$WEBHOOK_PORT/<source>).
    #[arg(long)]
    pub url: Option<String>,
}

pub async fn run(cli: Cli) -> ExitCode {
    let mode = match cli.command {
        Command::Serve(_) => Mode::Serve,
        _ => Mode::Dev,
    };
    let settings = match Settings::from_env(mode) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve(args) | Command::Dev(args) => run_server(settings, args).await,
        Command::CheckConfig { path } => check_config(&settings, path),
        Command::Send(args) => send(&settings, args).await,
        Command::Jobs(command) => jobs(&settings, command).await,
        Command::Forget { user } => forget(&settings, &user).await,
        Command::Healthcheck { url } => {
            let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{}/healthz", settings.port));
            match reqwest::get(&url).await {
                Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The store, or exit code 2 with the reason on stderr.
async fn open_or_say(
    settings: &Settings,
) -> Result<std::sync::Arc<dyn crate::jobs::JobStore>, ExitCode> {
    open_store(settings).await.map_err(|e| {
        eprintln!("error: {e} (DATABASE_URL={})", settings.database_url);
        ExitCode::from(2)
    })
}

async fn forget(settings: &Settings, user: &str) -> ExitCode {
    let store = match open_or_say(settings).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match crate::jobs::upkeep::forget(store.upkeep().as_ref(), user).await {
        Ok(removed) => {
            println!("{}", json!({ "user_id": user, "removed": removed }));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn jobs(settings: &Settings, command: JobsCommand) -> ExitCode {
    let store = match open_or_say(settings).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result: Result<(), String> = async {
        match command {
            JobsCommand::List { state, limit } => {
                let filter = state.as_deref().map(str::parse::<JobState>).transpose()?;
                let jobs = store.list(filter, limit).await.map_err(|e| e.to_string())?;
                println!(
                    "{:>6}  {:<8} {:<18} {:<15} {:<22} {:>3}  last error / outcome",
                    "ID", "STATE", "TRIGGER", "ACTION", "USER", "TRY"
                );
                for j in &jobs {
                    let note = match (&j.last_error, &j.outcome) {
                        (_, Some(o)) if o.get("skipped").is_some() => {
                            o["skipped"].as_str().unwrap_or("").to_string()
                        }
                        // A persona's id, else a brief's title (a dry-run brief has no thread).
                        (_, Some(o)) => ["persona_id", "title", "thread_id"]
                            .iter()
                            .filter_map(|k| o.get(*k))
                            .find(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                            .map(|v| v.to_string())
                            .unwrap_or_default(),
                        (Some(e), None) => e.clone(),
                        (None, None) => String::new(),
                    };
                    println!(
                        "{:>6}  {:<8} {:<18} {:<15} {:<22} {:>3}  {}",
                        j.id,
                        j.state.as_str(),
                        j.new.trigger,
                        j.new.action,
                        j.new
                            .user_id
                            .as_deref()
                            .unwrap_or("-")
                            .chars()
                            .take(22)
                            .collect::<String>(),
                        j.attempts,
                        note.chars().take(100).collect::<String>()
                    );
                }
                let counts = store.counts().await.map_err(|e| e.to_string())?;
                println!(
                    "\n{} shown · pending {} · running {} · done {} · dead {}",
                    jobs.len(),
                    counts.pending,
                    counts.running,
                    counts.done,
                    counts.dead
                );
            }
            JobsCommand::Show { id } => {
                let job = store
                    .get(id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("no job {id}"))?;
                println!("{}", serde_json::to_string_pretty(&job).unwrap_or_default());
                if let Some(brief) = job.outcome.as_ref().and_then(|o| o["brief"].as_str()) {
                    println!("\n--- brief ---\n{brief}");
                }
            }
            JobsCommand::Replay { id, dead } => {
                let ids: Vec<u64> = if dead {
                    store
                        .list(Some(JobState::Dead), 100_000)
                        .await
                        .map_err(|e| e.to_string())?
                        .iter()
                        .map(|j| j.id)
                        .collect()
                } else {
                    id.into_iter().collect()
                };
                let total = ids.len();
                let (action, detail) = match (dead, ids.as_slice()) {
                    (false, [one]) => (AuditAction::Replay, format!("job {one}")),
                    _ => (AuditAction::ReplayAll, replayed_detail("dead", &ids)),
                };
                for (n, id) in ids.iter().copied().enumerate() {
                    store
                        .requeue(id, now_ms())
                        .await
                        .map_err(|e| e.to_string())?;
                    if total > 20 && (n + 1) % 100 == 0 {
                        eprintln!("replayed {}/{total}", n + 1);
                    }
                }
                let entry = AuditEntry {
                    at_ms: now_ms(),
                    action,
                    via: Via::Cli,
                    client: "local".into(),
                    detail,
                };
                if let Err(e) = store.audit(&entry).await {
                    eprintln!("warning: the audit trail did not take this replay: {e}");
                }
                println!(
                    "{total} job(s) queued again; a running server picks them up within a second"
                );
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run_server(mut settings: Settings, args: RunArgs) -> ExitCode {
    telemetry::init(settings.log_json);
    if let Some(p) = args.config {
        settings.config_path = p;
    }
    if let Some(p) = args.port {
        settings.port = p;
    }
    if let Some(b) = args.bind {
        settings.bind_addr = b;
    }
    let table = match TriggerTable::load(&settings.config_path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    settings.apply_file_limits(&table.limits, |k| std::env::var(k).ok());
    let mut missing = preflight_settings(&settings);
    missing.extend(preflight(&settings, &table));
    match settings.mode {
        Mode::Serve if !missing.is_empty() => {
            for m in &missing {
                tracing::error!("cannot start: {m}");
            }
            tracing::error!("`serve` needs every one of these; for local development without them run `mavera-triggers dev`");
            return ExitCode::from(2);
        }
        Mode::Dev => {
            for m in &missing {
                tracing::warn!("DEV MODE: {m}");
            }
            if settings.mavera_dry_run() {
                tracing::warn!("DRY RUN: no MAVERA_API_KEY — every Mavera request is printed here instead of sent");
            }
        }
        Mode::Serve => {}
    }
    let app = match App::build(settings.clone(), table).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let table = app.state().table.load_full();
    let bound = app.local_addr();
    tracing::info!(
        mode = ?settings.mode,
        "listening on http://{bound} — POST /segment, POST /customerio, GET /healthz"
    );
    for t in table.triggers() {
        tracing::info!(trigger = %t.name, source = %t.source, events = %t.events.join(","), action = t.action.kind(), "trigger loaded");
    }
    if settings.admin_token.is_some() {
        if bound.ip().is_unspecified() {
            tracing::info!("web console on http://{bound}/console: every interface, e.g. http://127.0.0.1:{}/console here (sign in with ADMIN_TOKEN)", bound.port());
        } else {
            tracing::info!("web console on http://{bound}/console (sign in with ADMIN_TOKEN)");
        }
        if !bound.ip().is_loopback() && settings.access.trusted_proxies.is_empty() {
            tracing::warn!("the console and admin API listen beyond loopback ({bound}) over plain http: put TLS in front (ngrok, a load balancer) and set TRUSTED_PROXIES to its address. Over plain http browsers drop the console's Secure session cookie, and the admin token crosses the network in clear");
        }
    } else {
        tracing::info!("web console off: set ADMIN_TOKEN to turn on /console and /admin");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(app.state()));
    match app.run_until_stopped(shutdown).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("server error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP: reload the trigger table without a restart.
#[cfg(unix)]
async fn reload_on_sighup(state: crate::state::AppState) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the trigger table");
        let result = state.reload_and_log();
        state
            .audit(
                crate::jobs::audit::AuditAction::Reload,
                crate::jobs::audit::Via::Signal,
                "local",
                crate::routes::admin::reload_detail(&result),
            )
            .await;
    }
}

async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: no new requests; workers finish the job they hold");
    token.cancel();
}

fn check_config(settings: &Settings, path: Option<PathBuf>) -> ExitCode {
    let path = path.unwrap_or_else(|| settings.config_path.clone());
    let table = match TriggerTable::load(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{}: {} trigger(s), all templates compile\n",
        path.display(),
        table.triggers().len()
    );
    println!(
        "{:<20} {:<11} {:<32} {:<15} {:<22} when",
        "TRIGGER", "SOURCE", "EVENTS", "ACTION", "ENRICH"
    );
    for t in table.triggers() {
        let enrich = t.enrich.map(|_| "customerio_attributes").unwrap_or("-");
        let action = match &t.action {
            Action::CreatePersona { .. } => "create_persona",
            Action::Research { .. } => "research",
        };
        println!(
            "{:<20} {:<11} {:<32} {:<15} {:<22} {}",
            t.name,
            t.source,
            t.events.join(","),
            action,
            enrich,
            t.condition_source().unwrap_or("-")
        );
        if let Some(d) = &t.digest {
            println!(
                "{:<20} digest: events gathered by `{}`; the action runs once per group, {} after its first event or at {} events (`events`, `key`, `count` in its templates)",
                "",
                d.by_source.as_deref().unwrap_or("(one group)"),
                humantime::format_duration(d.window),
                d.max
            );
        }
        for sink in &t.sinks {
            if matches!(
                sink,
                crate::triggers::config::SinkSpec::Customerio { .. }
                    | crate::triggers::config::SinkSpec::Segment { .. }
            ) {
                println!("{:<20} writes back to {}", "", sink.kind());
            }
        }
    }
    let show = |secrets: &[crate::config::Secret]| {
        if secrets.is_empty() {
            "not set".to_string()
        } else {
            secrets
                .iter()
                .map(|s| s.fingerprint())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!("\nsettings (secrets as fingerprints):");
    println!(
        "  SEGMENT_SHARED_SECRET  {}",
        show(&settings.segment_secrets)
    );
    println!(
        "  CIO_WEBHOOK_SECRET     {}",
        show(&settings.cio_webhook_secrets)
    );
    println!(
        "  MAVERA_API_KEY         {}",
        show(settings.mavera_api_key.as_slice())
    );
    println!(
        "  CIO_APP_KEY            {}",
        show(settings.cio_app_key.as_slice())
    );
    println!("  MAVERA_BASE_URL        {}", settings.mavera_base_url);
    println!("  CIO_APP_BASE_URL       {}", settings.cio_app_base_url);
    let serve = Settings {
        mode: Mode::Serve,
        ..settings.clone()
    };
    let mut missing = preflight_settings(&serve);
    missing.extend(preflight(&serve, &table));
    if missing.is_empty() {
        println!("\n`serve` would start with these settings.");
    } else {
        println!("\n`serve` would refuse to start:");
        for m in missing {
            println!("  - {m}");
        }
    }
    ExitCode::SUCCESS
}

async fn send(settings: &Settings, args: SendArgs) -> ExitCode {
    let provider = args.source.provider().describe();
    let path = std::path::Path::new(&args.event);
    if !path.exists() && (args.event.contains('/') || args.event.ends_with(".json")) {
        eprintln!(
            "error: no such file: {}. `send` posts a JSON file that exists, or a sample by name (such as \
             trial_started: no `/`, no `.json`).",
            args.event
        );
        return ExitCode::from(2);
    }
    let body = if path.is_file() {
        match std::fs::read(&args.event) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", args.event);
                return ExitCode::from(2);
            }
        }
    } else {
        serde_json::to_vec(&(provider.sample)(&args.event)).expect("JSON")
    };
    let url = args
        .url
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/{}", settings.port, args.source));
    let mut headers: Vec<(&str, String)> = vec![("content-type", "application/json".into())];
    let secrets = crate::routes::webhook::source_settings(settings, args.source).secrets;
    let signed = secrets.first().map(|secret| {
        headers.extend((provider.sign)(secret, &body, SystemTime::now()));
        provider.signed_with
    });
    let mut request = reqwest::Client::new().post(&url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    println!("→ POST {url}");
    println!(
        "  signed: {}",
        signed.unwrap_or("no (the secret is not set; only `dev` accepts this)")
    );
    println!("{}", String::from_utf8_lossy(&body));
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            println!("← {status}\n{text}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!(
                "error: cannot reach {url}: {}. Is the server running (`mavera-triggers dev`)?",
                crate::clients::cause_chain(&e.without_url())
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every text clap shows, with where it comes from.
    fn texts(command: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        let path = format!("{path} {}", command.get_name());
        for text in [command.get_about(), command.get_long_about()]
            .into_iter()
            .flatten()
        {
            out.push((path.clone(), text.to_string()));
        }
        for arg in command.get_arguments() {
            for text in [arg.get_help(), arg.get_long_help()].into_iter().flatten() {
                out.push((format!("{path} {}", arg.get_id()), text.to_string()));
            }
        }
        for sub in command.get_subcommands() {
            texts(sub, &path, out);
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_is_described() {
        fn check(command: &clap::Command, path: &str) {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" {
                    assert!(
                        arg.get_help().is_some(),
                        "{path}: `{id}` has no description"
                    );
                }
            }
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                check(sub, &path);
            }
        }
        check(&Cli::command(), "");
    }

    #[test]
    fn help_texts_leave_wrapping_to_clap() {
        // A line break inside a paragraph is wrapped again by clap, leaving stubs such as `webhooks,` alone.
        let mut all = Vec::new();
        texts(&Cli::command(), "", &mut all);
        assert!(all.len() > 20, "{all:?}");
        for (place, text) in all {
            let paragraphs_only = text.replace("\n\n", "");
            assert!(
                !paragraphs_only.contains('\n'),
                "{place}: a hand-broken line in {text:?}"
            );
        }
    }
}
