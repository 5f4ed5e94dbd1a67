//! The command line: `serve`, `dev`, `check-config`, `send`, `jobs`, `forget`, `healthcheck`. This file holds
//! the clap types and the dispatch; each command group has its own file.

mod check;
mod jobs;
mod send;
mod serve;

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::{
    config::{Mode, Settings},
    jobs::open_store,
    sources::Source,
};

const ABOUT: &str =
    "Segment and Customer.io webhooks in, real-time Mavera personas and research briefs out.";

// Paragraphs are single lines, separated by blank lines: clap wraps them to the terminal's width.
const LONG_ABOUT: &str = "Segment and Customer.io webhooks in, real-time Mavera personas and research briefs out.

mavera-triggers receives Segment (POST /segment) and Customer.io reporting (POST /customerio) webhooks, checks their signatures, drops re-deliveries, and runs the matching triggers of a TOML trigger table: create a Mavera persona, or ask Mave for a research brief (Customer.io events can first be enriched with the customer's attributes). The answer to the sender never waits on Mavera.

First steps:

1. `mavera-triggers dev` runs it locally on 127.0.0.1:8080: unsigned requests are accepted, and without MAVERA_API_KEY each Mavera request is printed instead of sent.

2. `mavera-triggers send segment trial_started`, in another terminal, fires a sample event at it.

3. `mavera-triggers jobs list` shows what it did; `mavera-triggers check-config` validates the trigger table and prints it.

Settings come from the environment (and a .env file): see .env.example for every variable.";

const SEND_EXAMPLES: &str = "Examples:
  mavera-triggers send segment trial_started
  mavera-triggers send segment ./event.json --url https://x.ngrok.app/segment
  mavera-triggers send customerio unsubscribed";

#[derive(Debug, Parser)]
#[command(name = "mavera-triggers", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run in production: every source with a trigger needs its signing secret, and Mavera needs a key.
    /// Refuses to start (and says which variable to set) otherwise.
    Serve(RunArgs),
    /// Run for local development: binds 127.0.0.1, accepts unsigned requests for a source whose secret is
    /// unset (with a loud warning), and without MAVERA_API_KEY prints each Mavera request instead of sending it.
    Dev(RunArgs),
    /// Validate a trigger table and print it (default: MAVERA_TRIGGERS_CONFIG or config/mavera-triggers.toml).
    CheckConfig {
        /// The file to check.
        path: Option<PathBuf>,
    },
    /// Post a sample event or a JSON file to a running server, signed when the source's secret is set, and
    /// print the answer.
    #[command(after_help = SEND_EXAMPLES)]
    Send(SendArgs),
    /// See and fix jobs in the store (DATABASE_URL): list, show one (brief included), replay.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Erase one person: delete everything the store (DATABASE_URL) holds about a user id — events and
    /// payloads, jobs, outcomes and briefs, sink deliveries, cooldowns, the persona map — and leave no copy
    /// in the SQLite files. Prints what was removed; running it again removes nothing. What was already sent
    /// to Mavera or Slack is not reached: erase it there too.
    Forget {
        /// The user id (Segment `userId`, Customer.io customer id) as events carry it.
        #[arg(long = "user")]
        user: String,
    },
    /// Exit 0 when the local server answers GET /healthz (for Docker's HEALTHCHECK).
    Healthcheck {
        /// The health URL to ask (default: http://127.0.0.1:$WEBHOOK_PORT/healthz).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first: state, trigger, action, user, attempts, and the last error or the outcome (a
    /// persona id, a brief's title, a skip reason).
    List {
        /// Only jobs in this state: pending, running, done, dead or held.
        #[arg(long)]
        state: Option<String>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Everything about one job: its event, attempts, last error and outcome (the brief, in full).
    Show {
        /// The job's id: the first column of `jobs list`.
        id: u64,
    },
    /// Run a finished, dead or held job again (a running server picks it up within a second): one job by its
    /// id, or every dead job with --dead. An operator's replay is not held back by a cooldown; budgets still
    /// apply.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "dead"])))]
    Replay {
        /// The job to replay: the first column of `jobs list`.
        id: Option<u64>,
        /// Replay every dead job instead of one.
        #[arg(long)]
        dead: bool,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Trigger table (overrides MAVERA_TRIGGERS_CONFIG).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Port (overrides WEBHOOK_PORT; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Interface to bind (overrides BIND_ADDR).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<IpAddr>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// `segment` or `customerio`.
    pub source: Source,
    /// A JSON file to send as it is, or a name: a Segment event (trial_started, plan_upgraded,
    /// feature_milestone, churn_signal, or any name; identify/page/screen/group/alias send that type) or a
    /// Customer.io metric (unsubscribed, bounced, spammed, sent, …).
    pub event: String,
    /// Where to post (default: http://127.0.0.1:$WEBHOOK_PORT/<source>).
    #[arg(long)]
    pub url: Option<String>,
}

pub async fn run(cli: Cli) -> ExitCode {
    let mode = match cli.command {
        Command::Serve(_) => Mode::Serve,
        _ => Mode::Dev,
    };
    let settings = match Settings::from_env(mode) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve(args) | Command::Dev(args) => serve::run_server(settings, args).await,
        Command::CheckConfig { path } => check::check_config(&settings, path),
        Command::Send(args) => send::send(&settings, args).await,
        Command::Jobs(command) => jobs::jobs(&settings, command).await,
        Command::Forget { user } => jobs::forget(&settings, &user).await,
        Command::Healthcheck { url } => {
            let url =
                url.unwrap_or_else(|| format!("http://127.0.0.1:{}/healthz", settings.server.port));
            match reqwest::get(&url).await {
                Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The store, or exit code 2 with the reason on stderr.
async fn open_or_say(
    settings: &Settings,
) -> Result<std::sync::Arc<dyn crate::jobs::JobStore>, ExitCode> {
    open_store(settings).await.map_err(|e| {
        eprintln!("error: {e} (DATABASE_URL={})", settings.store.database_url);
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every text clap shows, with where it comes from.
    fn texts(command: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        let path = format!("{path} {}", command.get_name());
        for text in [command.get_about(), command.get_long_about()]
            .into_iter()
            .flatten()
        {
            out.push((path.clone(), text.to_string()));
        }
        for arg in command.get_arguments() {
            for text in [arg.get_help(), arg.get_long_help()].into_iter().flatten() {
                out.push((format!("{path} {}", arg.get_id()), text.to_string()));
            }
        }
        for sub in command.get_subcommands() {
            texts(sub, &path, out);
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_is_described() {
        fn check(command: &clap::Command, path: &str) {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" {
                    assert!(
                        arg.get_help().is_some(),
                        "{path}: `{id}` has no description"
                    );
                }
            }
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                check(sub, &path);
            }
        }
        check(&Cli::command(), "");
    }

    #[test]
    fn help_texts_leave_wrapping_to_clap() {
        // A line break inside a paragraph is wrapped again by clap, leaving stubs such as `webhooks,` alone.
        let mut all = Vec::new();
        texts(&Cli::command(), "", &mut all);
        assert!(all.len() > 20, "{all:?}");
        for (place, text) in all {
            let paragraphs_only = text.replace("\n\n", "");
            assert!(
                !paragraphs_only.contains('\n'),
                "{place}: a hand-broken line in {text:?}"
            );
        }
    }
}
