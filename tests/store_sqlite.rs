//! The store conformance tests on the embedded SQLite store.

#[path = "common/conformance.rs"]
mod conformance;

use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_passes_the_store_conformance_tests() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/conformance.db", dir.path().display());
    let store = mavera_triggers::jobs::sqlite::SqliteStore::open(&url, true)
        .await
        .unwrap();
    conformance::run_all(Arc::new(store)).await;
}
