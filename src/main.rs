//! The `mavera-triggers` binary: parse the command line, run it.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // `.env` never overrides a variable that is already set.
    let _ = dotenvy::dotenv();
    let cli = mavera_triggers::cli::Cli::parse();
    mavera_triggers::cli::run(cli).await
}
