//! `check-config`: validates the trigger table and prints what it will do.

use std::{path::PathBuf, process::ExitCode};

use crate::{
    config::{Mode, Settings},
    preflight::{preflight, preflight_settings},
    triggers::{Action, TriggerTable},
};

pub(super) fn check_config(settings: &Settings, path: Option<PathBuf>) -> ExitCode {
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
    let show = |secrets: &[crate::secret::Secret]| {
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
        show(&settings.segment.secrets)
    );
    println!(
        "  CIO_WEBHOOK_SECRET     {}",
        show(&settings.customerio.webhook_secrets)
    );
    println!(
        "  MAVERA_API_KEY         {}",
        show(settings.mavera.api_key.as_slice())
    );
    println!(
        "  CIO_APP_KEY            {}",
        show(settings.customerio.app_key.as_slice())
    );
    println!("  MAVERA_BASE_URL        {}", settings.mavera.base_url);
    println!(
        "  CIO_APP_BASE_URL       {}",
        settings.customerio.app_base_url
    );
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
