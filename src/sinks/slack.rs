//! The Slack sink: an incoming-webhook message with the brief as blocks, cut to Slack's limits (a header of
//! 150 characters, sections of 3,000, at most 50 blocks) with the job id where the full text is kept.

use serde_json::{json, Value};

use super::{send, SinkError};

const HEADER_CHARS: usize = 150;
const SECTION_CHARS: usize = 3000;
/// Brief sections per message: enough for a long brief, far under Slack's 50 blocks.
const MAX_SECTIONS: usize = 4;

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

/// Splits text into chunks of at most `max` characters, at line breaks where possible.
fn chunks(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        if current.chars().count() + line.chars().count() > max && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        if line.chars().count() > max {
            let chars: Vec<char> = line.chars().collect();
            for piece in chars.chunks(max) {
                out.push(piece.iter().collect());
            }
        } else {
            current.push_str(line);
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}

/// The Slack message for one outcome.
pub fn message(job_id: u64, delivery: &Value) -> Value {
    let outcome = &delivery["outcome"];
    let trigger = delivery["trigger"].as_str().unwrap_or("trigger");
    let mut blocks = Vec::new();
    let (title, fallback) = if delivery["type"] == "brief" {
        let title = outcome["title"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                format!(
                    "Research brief: {trigger} | {}",
                    delivery["user_id"].as_str().unwrap_or("unknown")
                )
            });
        (title.clone(), title)
    } else {
        let verb = if outcome["action"] == "update_persona" {
            "updated"
        } else {
            "created"
        };
        let title = format!(
            "Persona {verb}: {}",
            outcome["name"].as_str().unwrap_or("?")
        );
        (title.clone(), title)
    };
    blocks.push(json!({"type": "header", "text": {"type": "plain_text", "text": cut(&title, HEADER_CHARS), "emoji": false}}));
    if let Some(summary) = outcome["summary"].as_str() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(summary, SECTION_CHARS)}}));
    }
    if let Some(brief) = outcome["brief"].as_str() {
        let parts = chunks(brief, SECTION_CHARS);
        let truncated = parts.len() > MAX_SECTIONS;
        for part in parts.into_iter().take(MAX_SECTIONS) {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": part}}));
        }
        if truncated {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
                "text": format!("Brief cut to fit Slack. Full text: `mavera-triggers jobs show {}`", delivery["job_id"])}]}));
        }
        let sources: Vec<String> = outcome["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .take(5)
            .filter_map(|s| {
                let url = s["url"].as_str()?;
                let title = s["title"].as_str().unwrap_or(url);
                Some(format!(
                    "<{url}|{}>",
                    cut(&title.replace(['<', '>', '|'], " "), 80)
                ))
            })
            .collect();
        if !sources.is_empty() {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Sources: {}", sources.join(" · "))}]}));
        }
    } else if let Some(id) = outcome["persona_id"].as_str() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("Mavera persona `{id}`")}}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": format!("mavera-triggers · trigger `{trigger}` · job {} · delivery {job_id}", delivery["job_id"])}]}));
    json!({ "text": cut(&fallback, 3000), "blocks": blocks })
}

pub async fn post(
    http: &reqwest::Client,
    url: &str,
    job_id: u64,
    delivery: &Value,
) -> Result<Value, SinkError> {
    let status = send("Slack", http.post(url).json(&message(job_id, delivery))).await?;
    Ok(json!({ "sink": "slack", "status": status }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_brief_is_cut_to_slacks_limits_with_a_pointer_to_the_full_text() {
        let brief = (0..400)
            .map(|i| format!("line {i}: {}\n", "x".repeat(80)))
            .collect::<String>();
        let delivery = json!({"type": "brief", "trigger": "t", "job_id": 7, "user_id": "u",
            "outcome": {"action": "research", "title": "T".repeat(400), "brief": brief, "sources": []}});
        let m = message(9, &delivery);
        let blocks = m["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50);
        assert_eq!(
            blocks[0]["text"]["text"].as_str().unwrap().chars().count(),
            HEADER_CHARS
        );
        for b in blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() <= SECTION_CHARS);
            }
        }
        assert!(m.to_string().contains("jobs show 7"));
    }
}
