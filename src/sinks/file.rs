//! The file sink: one JSON object per line, appended.

use std::{io::Write, path::Path};

use serde_json::{json, Value};

use super::SinkError;

/// One writer at a time, so concurrent deliveries never interleave their lines.
static WRITE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn append(path: &str, delivery: &Value) -> Result<Value, SinkError> {
    let line = serde_json::to_string(delivery).map_err(|e| SinkError::Final(e.to_string()))?;
    let path_owned = path.to_string();
    let _one = WRITE.lock().await;
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let path = Path::new(&path_owned);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.write_all(format!("{line}\n").as_bytes())?;
        file.sync_data()
    })
    .await
    .map_err(|e| SinkError::Transient(e.to_string()))?
    .map_err(|e| SinkError::Transient(format!("cannot write {path}: {e}")))?;
    Ok(json!({ "sink": "file", "path": path }))
}
