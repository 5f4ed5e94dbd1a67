//! The throwaway-Postgres harness itself: start, create a database, query through a pool,
//! restart under the pool, query again, and clean up on drop (also on panic).

#[path = "common/pg.rs"]
mod pg;
#[path = "common/skip.rs"]
mod skip;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

fn accepts_tcp(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

fn main() -> std::process::ExitCode {
    let missing = pg::what_is_missing().map(skip::Missing::from);
    let tests = vec![
        skip::Test {
            name: "start_query_restart_query_drop",
            run: || skip::block_on(2, start_query_restart_query_drop()),
        },
        skip::Test {
            name: "drop_on_panic_stops_the_server_and_removes_the_dir",
            run: drop_on_panic_stops_the_server_and_removes_the_dir,
        },
    ];
    skip::run_suite("Postgres harness", "REQUIRE_POSTGRES", missing, tests)
}

async fn start_query_restart_query_drop() {
    let pg = pg::TestPostgres::start();
    pg.create_database("harness");
    assert_eq!(
        pg.url("harness"),
        format!("postgres://postgres@127.0.0.1:{}/harness", pg.port)
    );

    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&pg.url("harness"))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", pg.log_tail()));
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(db, "harness");
    let pid_before: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();

    pg.restart();
    assert!(pg.is_running());

    // The pooled connection died with the old server; the pool tests it before handing it out
    // and opens a new one. The data survived the restart.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("query after restart: {e}\n{}", pg.log_tail()));
    assert_eq!(one, 1);
    let pid_after: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_ne!(
        pid_before, pid_after,
        "expected a new backend after restart"
    );
    assert!(pg.log_tail().contains("received fast shutdown request"));

    pool.close().await;
    let (port, data_dir) = (pg.port, pg.data_dir().to_path_buf());
    assert!(data_dir.join("PG_VERSION").exists());
    drop(pg);
    assert!(!accepts_tcp(port), "server still up on {port} after drop");
    assert!(
        !data_dir.exists(),
        "{} not removed on drop",
        data_dir.display()
    );
}

fn drop_on_panic_stops_the_server_and_removes_the_dir() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let pg = pg::TestPostgres::start();
        pg.execute(
            "postgres",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
        );
        tx.send((pg.port, pg.data_dir().to_path_buf())).unwrap();
        panic!("deliberate panic with a running server");
    });
    assert!(result.is_err());
    let (port, data_dir) = rx.recv().unwrap();
    assert!(!accepts_tcp(port), "server still up on {port} after panic");
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
}
