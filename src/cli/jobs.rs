//! `jobs` (list, show, replay) and `forget`: the store, administered from the command line.

use std::process::ExitCode;

use serde_json::json;

use crate::{
    config::Settings,
    jobs::{
        audit::{replayed_detail, AuditAction, AuditEntry, Via},
        now_ms, JobState,
    },
};

use super::{open_or_say, JobsCommand};

pub(super) async fn forget(settings: &Settings, user: &str) -> ExitCode {
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

pub(super) async fn jobs(settings: &Settings, command: JobsCommand) -> ExitCode {
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
