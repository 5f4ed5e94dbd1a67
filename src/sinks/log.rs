//! The log sink: a persona line, or the brief as a block (the seed's "CHURN ALERT" layout).

use serde_json::Value;

use crate::jobs::Job;

const RULE: &str = "============================================================";

/// Prints an outcome at info.
pub fn report(job: &Job, outcome: &Value) {
    match outcome["action"].as_str() {
        Some("create_persona" | "update_persona") => tracing::info!(
            job = job.id,
            trigger = %job.new.trigger,
            "{} persona: {} — {}",
            if outcome["action"] == "update_persona" { "Updated" } else { "Created" },
            outcome["persona_id"].as_str().unwrap_or("?"),
            outcome["name"].as_str().unwrap_or("?"),
        ),
        Some("research") => {
            let title = outcome["title"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| {
                    format!(
                        "RESEARCH BRIEF: {} | {}",
                        job.new.trigger,
                        job.new.user_id.as_deref().unwrap_or("unknown")
                    )
                });
            let summary = outcome["summary"]
                .as_str()
                .map(|s| format!("{s}\n"))
                .unwrap_or_default();
            let sources = outcome["sources"].as_array().map(Vec::len).unwrap_or(0);
            tracing::info!(
                job = job.id,
                trigger = %job.new.trigger,
                "\n{RULE}\n{title}\n{summary}{RULE}\n{}\n\nSources: {sources}",
                outcome["brief"].as_str().unwrap_or(""),
            );
        }
        _ => {}
    }
}
