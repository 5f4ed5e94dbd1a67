//! The documentation cannot drift: every relative link in README.md and docs/*.md resolves (file and
//! `#anchor`), every setting the code reads is listed in `.env.example` and docs/configuration.md, and the
//! `rust-version` in Cargo.toml (and the README) is what the locked dependencies need.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use mavera_triggers::config::{Mode, Settings};
use pulldown_cmark::{Event, Parser, Tag, TagEnd};

/// Read outside `Settings`: `RUST_LOG` by tracing's `EnvFilter` (src/telemetry.rs).
const READ_ELSEWHERE: &[&str] = &["RUST_LOG"];

/// In `.env.example` for the Docker Compose file and the shipped trigger table, not read by the server itself.
const NOT_SETTINGS: &[&str] = &["POSTGRES_PASSWORD", "SLACK_WEBHOOK_URL"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped, spaces as `-`;
/// a repeated heading gets `-1`, `-2`, … appended.
fn github_slug(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

struct Page {
    anchors: BTreeSet<String>,
    links: Vec<String>,
}

fn read_page(path: &Path) -> Page {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut anchors = BTreeSet::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut links = Vec::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(&text) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let slug = github_slug(&heading.take().unwrap_or_default());
                let n = seen.entry(slug.clone()).or_insert(0);
                anchors.insert(if *n == 0 {
                    slug.clone()
                } else {
                    format!("{slug}-{n}")
                });
                *n += 1;
            }
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => links.push(dest_url.to_string()),
            _ => {}
        }
    }
    Page { anchors, links }
}

fn is_external(link: &str) -> bool {
    link.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic())
    })
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut pages: HashMap<PathBuf, Page> = HashMap::new();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let page = read_page(&file);
        for link in page.links.iter().filter(|l| !is_external(l)) {
            checked += 1;
            let (target, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target_path = if target.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(target)
            };
            let shown = format!("{} → {link}", file.strip_prefix(repo()).unwrap().display());
            if !target_path.exists() {
                broken.push(format!("{shown}: no such file"));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            if target_path.extension().is_none_or(|e| e != "md") {
                broken.push(format!(
                    "{shown}: an anchor into a file that is not Markdown"
                ));
                continue;
            }
            let canonical = target_path.canonicalize().unwrap();
            let target_page = pages
                .entry(canonical.clone())
                .or_insert_with(|| read_page(&canonical));
            if !target_page.anchors.contains(anchor) {
                broken.push(format!(
                    "{shown}: no heading with anchor #{anchor} (there are: {})",
                    target_page
                        .anchors
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        pages.insert(file.canonicalize().unwrap(), page);
    }
    assert!(
        checked > 50,
        "only {checked} relative links found: is the parser reading the files?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn github_slugs_follow_githubs_rules() {
    assert_eq!(github_slug("Try it in 60 seconds"), "try-it-in-60-seconds");
    assert_eq!(
        github_slug("Point Segment and Customer.io at it"),
        "point-segment-and-customerio-at-it"
    );
    assert_eq!(
        github_slug("The trigger table, by example"),
        "the-trigger-table-by-example"
    );
    assert_eq!(
        github_slug("REQUIRE_POSTGRES and skips"),
        "require_postgres-and-skips"
    );
    let page = read_page(&repo().join("docs/http-api.md"));
    assert!(
        page.anchors.contains("the-customerio-timestamp-risk"),
        "{:?}",
        page.anchors
    );
}

/// Every name `Settings` asks the environment for, found by loading settings through a recording lookup.
fn settings_the_code_reads() -> BTreeSet<String> {
    let asked = RefCell::new(BTreeSet::new());
    for mode in [Mode::Serve, Mode::Dev] {
        Settings::from_lookup(mode, |name| {
            asked.borrow_mut().insert(name.to_string());
            None
        })
        .expect("defaults load");
    }
    let mut names = asked.into_inner();
    names.extend(READ_ELSEWHERE.iter().map(|s| s.to_string()));
    names
}

/// `NAME=` lines of `.env.example`, commented out or not.
fn env_example_names() -> BTreeSet<String> {
    std::fs::read_to_string(repo().join(".env.example"))
        .unwrap()
        .lines()
        .filter_map(|line| {
            let line = line.trim_start_matches('#').trim();
            let (name, _) = line.split_once('=')?;
            (!name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .then(|| name.to_string())
        })
        .collect()
}

/// The first column of the settings table in docs/configuration.md: `| `NAME` | … |`.
fn configuration_doc_names() -> BTreeSet<String> {
    std::fs::read_to_string(repo().join("docs/configuration.md"))
        .unwrap()
        .lines()
        .filter_map(|line| {
            let name = line.strip_prefix("| `")?.split_once('`')?.0;
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                .then(|| name.to_string())
        })
        .collect()
}

#[test]
fn every_setting_the_code_reads_is_in_env_example_and_the_configuration_reference() {
    let code = settings_the_code_reads();
    assert!(code.len() > 30, "the recording lookup saw only {code:?}");
    let example: BTreeSet<String> = env_example_names()
        .into_iter()
        .filter(|n| !NOT_SETTINGS.contains(&n.as_str()))
        .collect();
    let doc = configuration_doc_names();
    let missing_example: Vec<_> = code.difference(&example).collect();
    let stale_example: Vec<_> = example.difference(&code).collect();
    let missing_doc: Vec<_> = code.difference(&doc).collect();
    let stale_doc: Vec<_> = doc.difference(&code).collect();
    assert!(
        missing_example.is_empty() && stale_example.is_empty(),
        ".env.example: missing {missing_example:?}, not read by the code {stale_example:?}"
    );
    assert!(
        missing_doc.is_empty() && stale_doc.is_empty(),
        "docs/configuration.md: missing {missing_doc:?}, not read by the code {stale_doc:?}"
    );
}

#[test]
fn the_configuration_reference_lists_its_settings_in_a_table() {
    // Guards the parser above: a reformatted table must not make the drift check vacuous.
    let doc = configuration_doc_names();
    assert!(
        doc.contains("MAVERA_API_KEY") && doc.contains("DATABASE_URL"),
        "{doc:?}"
    );
}

fn parse_version(v: &str) -> (u64, u64, u64) {
    let mut parts = v
        .split('.')
        .map(|p| p.parse::<u64>().expect("a numeric version"));
    let major = parts.next().unwrap_or(0);
    (major, parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn rust_version_is_what_the_locked_dependencies_need_and_the_readme_says_it() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(repo())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let ours = packages
        .iter()
        .find(|p| p["name"] == "mavera-triggers")
        .and_then(|p| p["rust_version"].as_str())
        .expect("Cargo.toml sets rust-version");
    let (needed, by) = packages
        .iter()
        .filter(|p| p["name"] != "mavera-triggers")
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((
                parse_version(v),
                format!(
                    "{} {} (needs {v})",
                    p["name"].as_str()?,
                    p["version"].as_str()?
                ),
            ))
        })
        .max()
        .expect("some dependency declares a rust-version");
    assert_eq!(
        parse_version(ours),
        needed,
        "Cargo.toml says rust-version = {ours:?}, but the newest requirement in Cargo.lock is {by}"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let said = format!("Rust {}.{} or newer", needed.0, needed.1);
    assert!(readme.contains(&said), "the README should say `{said}`");
}
