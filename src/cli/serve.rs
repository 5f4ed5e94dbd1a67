//! `serve` and `dev`: build the app, run it until a signal, reload the trigger table on SIGHUP.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::{
    config::{Mode, Settings},
    preflight::{preflight, preflight_settings},
    startup::App,
    telemetry,
    triggers::TriggerTable,
};

use super::RunArgs;

pub(super) async fn run_server(mut settings: Settings, args: RunArgs) -> ExitCode {
    telemetry::init(settings.server.log_json);
    if let Some(p) = args.config {
        settings.config_path = p;
    }
    if let Some(p) = args.port {
        settings.server.port = p;
    }
    if let Some(b) = args.bind {
        settings.server.bind_addr = b;
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
    if settings.access.admin_token.is_some() {
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
