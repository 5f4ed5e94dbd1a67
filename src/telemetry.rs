//! Logging: `RUST_LOG` (default `info`), human-readable, or JSON with `LOG_FORMAT=json`; and what a log line may
//! show of a person.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colour());
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Whether human-readable lines are coloured: only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>). Piped into `docker logs`, a file or a collector, a line carries no escape codes
/// (and costs less to format).
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// An email address as a log line may show it: the first character of its local part and the domain
/// (`j***@acme.example`). Anything that is not an address is returned as it is.
pub fn mask_email(text: &str) -> std::borrow::Cow<'_, str> {
    match text.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}").into()
        }
        _ => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::mask_email;

    #[test]
    fn an_email_keeps_its_first_letter_and_domain_only() {
        assert_eq!(mask_email("jane.doe@acme.example"), "j***@acme.example");
        assert_eq!(mask_email("émile@b.co"), "é***@b.co");
        assert_eq!(mask_email("user-42"), "user-42");
        assert_eq!(mask_email("@handle"), "@handle");
    }
}
