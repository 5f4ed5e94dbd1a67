//! `send`: fires a sample (or a file's) Segment event or Customer.io metric at a running server.

use std::{process::ExitCode, time::SystemTime};

use crate::config::Settings;

use super::SendArgs;

pub(super) async fn send(settings: &Settings, args: SendArgs) -> ExitCode {
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
        .unwrap_or_else(|| format!("http://127.0.0.1:{}/{}", settings.server.port, args.source));
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
