//! Suites that need a program the machine may not have (PostgreSQL, Chromium) run under this harness
//! (libtest-mimic, `harness = false`), so a missing program makes their tests *ignored* in the harness's own
//! count (`0 passed; 0 failed; 4 ignored`), never passed. One `SKIPPED` line says what is missing and the
//! command that installs it. With `<REQUIRE_VAR>=1` (CI) the tests run anyway and fail on what is missing;
//! `--include-ignored` does the same.
//!
//! Include it from a test binary with `#[path = "common/skip.rs"] mod skip;` (adjust the path).
#![allow(dead_code)]

use std::io::Write;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Trial};

/// A program (or user) a suite needs and does not find, and how to get it.
pub struct Missing {
    /// What is missing, e.g. "initdb, pg_ctl and postgres are not on PATH nor in /usr/lib/postgresql/*/bin".
    pub what: String,
    /// The command that installs it, e.g. "sudo apt-get install postgresql".
    pub install: &'static str,
}

impl From<(String, &'static str)> for Missing {
    fn from((what, install): (String, &'static str)) -> Self {
        Missing { what, install }
    }
}

/// A test of the suite: its name and body (a panic fails it).
pub struct Test {
    pub name: &'static str,
    pub run: fn(),
}

/// Runs `tests` as the binary's harness. `missing` is `Some` when the suite cannot run here: then, unless
/// `require_var` is `1`, every test is reported ignored after one `SKIPPED` line on stderr.
pub fn run_suite(
    suite: &str,
    require_var: &str,
    missing: Option<Missing>,
    tests: Vec<Test>,
) -> ExitCode {
    let args = Arguments::from_args();
    let required = std::env::var(require_var).as_deref() == Ok("1");
    let skip = match &missing {
        Some(m) if !required => {
            // Straight to stderr, so it shows whatever the harness captures.
            writeln!(
                std::io::stderr(),
                "SKIPPED {suite}: {}. Install: `{}`. {require_var}=1 turns this skip into a failure.",
                m.what,
                m.install
            )
            .ok();
            true
        }
        _ => false,
    };
    let trials = tests
        .into_iter()
        .map(|t| {
            let run = t.run;
            Trial::test(t.name, move || {
                run();
                Ok(())
            })
            .with_ignored_flag(skip)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// Runs an async test body on a fresh runtime, as `#[tokio::test(flavor = "multi_thread")]` does.
pub fn block_on<F: std::future::Future<Output = ()>>(worker_threads: usize, body: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(body)
}
