//! The web console in a real browser: headless Chromium driven through chromedriver (WebDriver, fantoccini)
//! against the real app. Without Chromium or chromedriver these tests are reported skipped (ignored, with one
//! `SKIPPED` line; `tests/common/skip.rs`); with `REQUIRE_BROWSER=1` (CI) that is a failure instead.
//! `scripts/install-browser.sh` installs both.
//! `CONSOLE_SCREENSHOTS=<folder>` saves a PNG of each page visited, named `console-<page>.png`.

use std::{
    future::Future,
    io::{Read, Seek},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{elements::Element, error::CmdError, Client, ClientBuilder, Locator};
use mavera_triggers::jobs::JobState;
use serde_json::json;
use wiremock::{
    matchers::{method, path},
    Mock, ResponseTemplate,
};

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../common/skip.rs"]
mod skip;

use helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "browser-admin-token-7";
/// Longest wait for anything in the browser: a page, an element, a navigation.
const WAIT: Duration = Duration::from_secs(20);

fn main() -> std::process::ExitCode {
    let tests = vec![
        skip::Test {
            name: "without_the_token_the_browser_gets_the_login_form_and_a_wrong_token_is_refused",
            run: || {
                skip::block_on(
                    2,
                    without_the_token_the_browser_gets_the_login_form_and_a_wrong_token_is_refused(
                    ),
                )
            },
        },
        skip::Test {
            name: "signing_in_through_the_form_opens_the_overview_and_keeps_the_session",
            run: || {
                skip::block_on(
                    2,
                    signing_in_through_the_form_opens_the_overview_and_keeps_the_session(),
                )
            },
        },
        skip::Test {
            name: "an_event_leads_from_the_events_page_to_its_detail_and_its_rendered_brief",
            run: || {
                skip::block_on(
                    2,
                    an_event_leads_from_the_events_page_to_its_detail_and_its_rendered_brief(),
                )
            },
        },
        skip::Test {
            name: "a_dead_letter_is_replayed_with_its_button_and_then_succeeds",
            run: || {
                skip::block_on(
                    2,
                    a_dead_letter_is_replayed_with_its_button_and_then_succeeds(),
                )
            },
        },
        skip::Test {
            name: "under_the_content_security_policy_the_stylesheet_applies_no_request_leaves_and_sign_out_ends_the_session",
            run: || {
                skip::block_on(
                    2,
                    under_the_content_security_policy_the_stylesheet_applies_no_request_leaves_and_sign_out_ends_the_session(),
                )
            },
        },
    ];
    skip::run_suite("browser tests", "REQUIRE_BROWSER", what_is_missing(), tests)
}

async fn console_app() -> TestApp {
    spawn_with(Options {
        tweak: Box::new(|s| {
            s.access.admin_token = Some(mavera_triggers::config::Secret::new(TOKEN))
        }),
        ..Options::default()
    })
    .await
}

/// chromedriver on a free loopback port, in a process group of its own so that dropping it also ends the
/// Chromium it started (a panicking test never gets to close its session). Its output goes to a temp file,
/// printed when a test fails.
struct Driver {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Driver {
    async fn start(chromedriver: &Path) -> Driver {
        let mut last_log = String::new();
        // A free port can be taken by someone else between our probe and chromedriver's bind: try again.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let log = tempfile::NamedTempFile::new().expect("a temp file for chromedriver's log");
            let child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg("--log-level=WARNING")
                .stdin(Stdio::null())
                .stdout(log.reopen().unwrap())
                .stderr(log.reopen().unwrap())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
            let mut driver = Driver { child, port, log };
            if driver.ready().await {
                return driver;
            }
            last_log = driver.output();
        }
        panic!("chromedriver did not become ready; its output:\n{last_log}");
    }

    /// Polls `/status` until chromedriver answers ready, it exits, or [`WAIT`] runs out.
    async fn ready(&mut self) -> bool {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let status = http
                .get(format!("{}/status", self.url()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(r) = status {
                if let Ok(body) = r.json::<serde_json::Value>().await {
                    if body["value"]["ready"] == true {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The end of chromedriver's output (what Chromium said when it would not start is at the end).
    fn output(&self) -> String {
        let mut text = String::new();
        let mut file = self.log.reopen().unwrap();
        file.rewind().unwrap();
        file.read_to_string(&mut text).ok();
        let cut = text.len().saturating_sub(16_000);
        let cut = (cut..=text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[cut..].to_string()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the process group chromedriver leads (process_group(0)
        // made its pid the group id); it touches no memory.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        self.child.wait().ok();
        if std::thread::panicking() {
            eprintln!(
                "--- chromedriver output (port {}) ---\n{}\n--- end of chromedriver output ---",
                self.port,
                self.output()
            );
        }
    }
}

/// Where chromedriver is: on the PATH, else Debian's place for it.
fn find_chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("chromedriver"))
        .chain([PathBuf::from("/usr/bin/chromedriver")])
        .find(|p| p.is_file())
}

/// `Some` when Chromium or chromedriver is missing here.
fn what_is_missing() -> Option<skip::Missing> {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).is_file() {
        missing.push(format!("{CHROMIUM} is missing"));
    }
    if find_chromedriver().is_none() {
        missing.push("chromedriver is not on the PATH nor in /usr/bin".to_string());
    }
    (!missing.is_empty()).then(|| skip::Missing {
        what: missing.join(", "),
        install: "bash scripts/install-browser.sh",
    })
}

/// One headless Chromium with a fresh profile, pointed at one app.
struct Browser {
    client: Client,
    base: String,
    screenshots: Option<PathBuf>,
    // Dropped in this order: the session's client, then chromedriver with Chromium, then the profile.
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Panics when Chromium or chromedriver is missing: `main` reports the tests skipped before that.
    async fn start(app: &TestApp) -> Browser {
        if let Some(missing) = what_is_missing() {
            panic!("{}: run `{}`", missing.what, missing.install);
        }
        let chromedriver = find_chromedriver().expect("found by what_is_missing");
        let driver = Driver::start(&chromedriver).await;
        let profile = tempfile::tempdir().expect("a temp folder for Chromium's profile");
        let capabilities = json!({
            "browserName": "chrome",
            "timeouts": { "pageLoad": WAIT.as_millis() as u64, "script": 10_000, "implicit": 0 },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&driver.url()),
        )
        .await;
        let client = match session {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => panic!(
                "Chromium did not start through chromedriver: {e}\nchromedriver output:\n{}",
                driver.output()
            ),
            Err(_) => panic!(
                "no WebDriver session within 60 s\nchromedriver output:\n{}",
                driver.output()
            ),
        };
        Browser {
            client,
            base: app.address.clone(),
            screenshots: std::env::var_os("CONSOLE_SCREENSHOTS").map(PathBuf::from),
            _driver: driver,
            _profile: profile,
        }
    }

    /// Ends the WebDriver session (Chromium quits); dropping the browser then stops chromedriver.
    async fn close(self) {
        self.client.clone().close().await.ok();
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {path} in the browser: {e}"));
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.path().to_string())
            .unwrap_or_default()
    }

    async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Polls `probe` until it gives a value; after [`WAIT`], fails naming `what`, the page and its text.
    async fn until<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "waited {WAIT:?} for {what}; the browser is at {} showing:\n{}",
                    self.path().await,
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_path(&self, expected: &str) {
        self.until(&format!("the path {expected}"), || async move {
            (self.path().await == expected).then_some(())
        })
        .await
    }

    async fn wait_for_text(&self, text: &str) {
        self.until(&format!("the text {text:?}"), || async move {
            self.body_text().await.contains(text).then_some(())
        })
        .await
    }

    async fn element(&self, xpath: &str) -> Element {
        self.until(&format!("an element {xpath}"), || async move {
            self.client.find(Locator::XPath(xpath)).await.ok()
        })
        .await
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|all| all.len())
            .unwrap_or_else(|e| panic!("find_all {css}: {e}"))
    }

    /// Clicks `element` and waits until the page it was on is gone (a form posted to the same URL leaves
    /// the path as it was, so the path cannot tell).
    async fn click_and_wait(&self, element: &Element) {
        let old_page = self
            .client
            .find(Locator::Css("html"))
            .await
            .expect("a page is loaded");
        element.click().await.expect("the element takes a click");
        self.until("the next page to load", || {
            let old_page = &old_page;
            async move {
                match old_page.tag_name().await {
                    Err(CmdError::Standard(e))
                        if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                    {
                        Some(())
                    }
                    _ => None,
                }
            }
        })
        .await;
        // The new document exists; wait for its body before anyone reads it.
        self.until("the new page's body", || async move {
            self.client.find(Locator::Css("body")).await.ok()
        })
        .await;
    }

    /// Fills the login form's `token` field and presses its submit button.
    async fn submit_token(&self, token: &str) {
        let field = self.element("//form//input[@name='token']").await;
        field.clear().await.ok();
        field
            .send_keys(token)
            .await
            .expect("the token field takes keys");
        let submit = self
            .element("//form[.//input[@name='token']]//button[@type='submit']")
            .await;
        self.click_and_wait(&submit).await;
    }

    /// Signs in through the form, as a person would, and checks the overview opened.
    async fn sign_in(&self) {
        self.goto("/console/login").await;
        self.submit_token(TOKEN).await;
        self.wait_for_path("/console").await;
        self.expect_heading("Overview").await;
    }

    async fn expect_heading(&self, title: &str) {
        let h1 = self.element("//h1").await;
        assert_eq!(
            h1.text().await.unwrap().trim(),
            title,
            "the page at {}",
            self.path().await
        );
    }

    /// With `CONSOLE_SCREENSHOTS` set, saves the page as `console-<page>.png` in that folder.
    async fn screenshot(&self, page: &str) {
        let Some(dir) = &self.screenshots else {
            return;
        };
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("CONSOLE_SCREENSHOTS={}: {e}", dir.display()));
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot of {page}: {e}"));
        let file = dir.join(format!("console-{page}.png"));
        std::fs::write(&file, png).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

async fn without_the_token_the_browser_gets_the_login_form_and_a_wrong_token_is_refused() {
    let app = console_app().await;
    let browser = Browser::start(&app).await;

    // Step 1: the console sends a visitor without a session to the login form.
    browser.goto("/console").await;
    browser.wait_for_path("/console/login").await;
    browser.element("//form//input[@name='token']").await;
    browser.screenshot("login").await;

    // Step 2: a wrong token is refused with a message, and no session.
    browser.submit_token("not-the-admin-token").await;
    browser.wait_for_text("That is not the admin token.").await;
    assert_eq!(browser.path().await, "/console/login");

    // Step 3: the dead letters stay out of reach.
    browser.goto("/console/dead").await;
    browser.wait_for_path("/console/login").await;
    browser.element("//form//input[@name='token']").await;
    let heading = browser.element("//h1").await.text().await.unwrap();
    assert_ne!(heading.trim(), "Dead letters");
    assert_eq!(
        browser.count("form button[type=submit]").await,
        1,
        "only the sign-in button"
    );
    browser.close().await;
}

async fn signing_in_through_the_form_opens_the_overview_and_keeps_the_session() {
    let app = console_app().await;
    let browser = Browser::start(&app).await;

    // Step 1: the form, the right token, the overview.
    browser.sign_in().await;
    browser.wait_for_text("dead letters").await;

    // Step 2: Chromium stored the session cookie, Secure as it is, although the console is plain
    // http://127.0.0.1 (a loopback origin counts as secure), and sends it on the next page load.
    let cookie = browser
        .client
        .get_named_cookie("mt_console")
        .await
        .expect("Chromium kept the console's session cookie");
    assert_eq!(
        (cookie.secure(), cookie.http_only()),
        (Some(true), Some(true))
    );
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    browser.goto("/console/briefs").await;
    browser.wait_for_path("/console/briefs").await;
    browser.expect_heading("Research briefs").await;

    // Step 3: the triggers page, and its test form run in dry run (the form carries its CSRF token).
    browser.goto("/console/triggers").await;
    browser.wait_for_path("/console/triggers").await;
    browser.wait_for_text("plan_upgraded").await;
    browser.screenshot("triggers").await;
    let run = browser
        .element("//button[normalize-space(.)='Run through the triggers']")
        .await;
    browser.click_and_wait(&run).await;
    browser.wait_for_path("/console/triggers/test").await;
    browser.wait_for_text("POST /personas").await;
    browser.wait_for_text("Segment RT: Trial User").await;
    browser.screenshot("triggers-dry-run").await;
    assert!(app.jobs().await.is_empty(), "a dry run records nothing");
    browser.close().await;
}

async fn an_event_leads_from_the_events_page_to_its_detail_and_its_rendered_brief() {
    let app = console_app().await;
    // Before any mock that expects calls: a skipped test must not fail on wiremock's check at drop.
    let browser = Browser::start(&app).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_browser", "object": "mave_message", "thread_id": "thr_browser", "role": "assistant",
            "content": "## Upgrade brief\nUsers upgrade after a capacity moment.\n\n<script>document.title = 'pwned'</script>\n\n**Call within 4 hours.**",
            "sources": [{ "title": "Report", "url": "https://research.example/r", "domain": "research.example" }],
            "usage": { "credits_used": 25 }, "created_at": "2026-11-25T10:00:01Z"
        })))
        .expect(1)
        .mount(&app.mavera)
        .await;

    // Step 1: a signed Segment event for the research trigger, worked off by the runner, and a few that
    // match no trigger (listed too, as ignored).
    for i in 0..3 {
        let ignored = json!({"type": "track", "event": "Button Clicked", "messageId": format!("browser-click-{i}"), "userId": "u-browser"});
        assert_eq!(app.post_segment(&ignored.to_string()).await.status(), 200);
    }
    let message_id = "browser-upgrade-1";
    let body = json!({
        "type": "track", "event": "plan_upgraded", "messageId": message_id, "userId": "u-browser",
        "timestamp": "2026-11-25T10:00:00.000Z",
        "properties": { "previous_plan": "starter", "new_plan": "pro" }
    })
    .to_string();
    let (status, answer) = answer(app.post_segment(&body).await).await;
    assert_eq!((status, &answer["triggered"]), (200, &json!(1)), "{answer}");
    assert_eq!(app.settle().await.done, 1);
    let job = app.jobs().await.remove(0);
    assert_eq!(
        (job.new.trigger.as_str(), job.state),
        ("plan_upgraded", JobState::Done)
    );

    // Step 2: the events page links the event by its messageId.
    browser.sign_in().await;
    browser.goto("/console/events").await;
    browser.wait_for_path("/console/events").await;
    let link = browser
        .element(&format!(
            "//a[starts-with(@href, '/console/events/') and contains(., '{message_id}')]"
        ))
        .await;
    browser.screenshot("events").await;
    browser.click_and_wait(&link).await;

    // Step 3: the detail page: the messageId, the signature result, the trigger, the brief's link.
    assert!(
        browser.path().await.starts_with("/console/events/"),
        "{}",
        browser.path().await
    );
    for text in [message_id, "verified", "plan_upgraded"] {
        browser.wait_for_text(text).await;
    }
    browser.screenshot("event-detail").await;
    let read = browser
        .element("//a[normalize-space(.)='Read the brief']")
        .await;
    let brief_path = format!("/console/briefs/{}", job.id);
    // The resolved href: the same whether the page wrote the path or the whole URL.
    let href = read.prop("href").await.unwrap().unwrap_or_default();
    assert_eq!(href, format!("{}{brief_path}", app.address));
    browser.click_and_wait(&read).await;

    // Step 4: the brief: Markdown rendered to a heading, and no script made it into the article.
    browser.wait_for_path(&brief_path).await;
    let heading = browser
        .element("//article//*[self::h1 or self::h2][normalize-space(.)='Upgrade brief']")
        .await;
    assert!(["h1", "h2"].contains(&heading.tag_name().await.unwrap().as_str()));
    browser.wait_for_text("Call within 4 hours.").await;
    assert_eq!(browser.count("article script").await, 0);
    assert_ne!(browser.client.title().await.unwrap(), "pwned");
    browser.screenshot("brief").await;

    // Step 5: the overview counts it, with the ignored ones, and the credits Mave reported.
    browser.goto("/console").await;
    browser.wait_for_path("/console").await;
    browser.wait_for_text("25.0").await;
    // The chart's bar for this minute: 3 ignored events (and 1 triggered).
    browser
        .element(
            "//*[local-name()='svg']//*[local-name()='title' and normalize-space(.)='3 ignored']",
        )
        .await;
    browser
        .element(
            "//*[local-name()='svg']//*[local-name()='title' and normalize-space(.)='1 triggered']",
        )
        .await;
    browser.screenshot("overview").await;
    browser.close().await;
    app.mavera.verify().await;
}

async fn a_dead_letter_is_replayed_with_its_button_and_then_succeeds() {
    let app = console_app().await;
    let browser = Browser::start(&app).await;
    // 422 is final (src/jobs/retry.rs): the first attempt dead-letters the job.
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "error": { "message": "Persona description is too short", "type": "invalid_request_error", "code": "invalid_description" }
        })))
        .up_to_n_times(1)
        .expect(1)
        .named("the failing create")
        .mount(&app.mavera)
        .await;

    // Step 1: a persona-creating event whose job dies on Mavera's final error.
    let body = json!({
        "type": "track", "event": "trial_started", "messageId": "browser-dead-1", "userId": "u-browser-dead",
        "properties": { "plan": "pro", "source": "ads" }
    })
    .to_string();
    assert_eq!(app.post_segment(&body).await.status(), 200);
    assert_eq!(app.settle().await.dead, 1);
    let id = app.jobs().await[0].id;

    // Step 2: Mavera works again; the job's Replay button in the browser puts it back in the queue.
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "per_browser", "object": "custom_persona", "name": "x", "credits_charged": 300
        })))
        .expect(1)
        .named("the successful create")
        .mount(&app.mavera)
        .await;
    browser.sign_in().await;
    browser.goto("/console/dead").await;
    browser.expect_heading("Dead letters").await;
    browser
        .wait_for_text("Persona description is too short")
        .await;
    browser.screenshot("dead").await;
    let replay = browser
        .element(&format!(
            "//form[.//input[@name='id' and @value='{id}']]//button[normalize-space(.)='Replay']"
        ))
        .await;
    browser.click_and_wait(&replay).await;
    browser.wait_for_path("/console/dead").await;

    // Step 3: drained, it runs again, and this time Mavera creates the persona.
    app.settle().await;
    let job = app
        .state
        .jobs
        .store
        .get(id)
        .await
        .unwrap()
        .expect("the job");
    assert_eq!(
        job.state,
        JobState::Done,
        "the replayed job: {:?}",
        job.last_error
    );
    assert_eq!(job.outcome.as_ref().unwrap()["persona_id"], "per_browser");
    let creates = app
        .mavera
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/api/v1/personas")
        .count();
    assert_eq!(creates, 2, "one failed create, one replayed create");
    app.mavera.verify().await;

    // Step 4: the page has nothing left to replay.
    browser.client.refresh().await.unwrap();
    browser.wait_for_text("No dead letters.").await;
    browser.screenshot("dead-replayed").await;
    browser.close().await;
}

async fn under_the_content_security_policy_the_stylesheet_applies_no_request_leaves_and_sign_out_ends_the_session(
) {
    let app = console_app().await;
    let browser = Browser::start(&app).await;
    browser.sign_in().await;

    // The policy admits the console's own stylesheet: the navigation bar is painted by it.
    let background = browser
        .client
        .execute(
            "return getComputedStyle(document.querySelector('nav')).backgroundColor",
            vec![],
        )
        .await
        .expect("read the nav's style");
    assert_eq!(background, serde_json::json!("rgb(29, 35, 48)"));
    // And refuses anything else: a request from the page is blocked by `default-src 'none'`.
    let fetched = browser
        .client
        .execute_async(
            "const done = arguments[0]; fetch('/console/style.css').then(() => done('sent'), e => done('blocked: ' + e));",
            vec![],
        )
        .await
        .expect("run the probe");
    assert!(
        fetched.as_str().unwrap_or("").starts_with("blocked"),
        "a page request got through the policy: {fetched}"
    );

    // Sign out: back to the form, and the console is closed to this browser again.
    let sign_out = browser
        .element("//form[@action='/console/logout']//button")
        .await;
    browser.click_and_wait(&sign_out).await;
    browser.wait_for_path("/console/login").await;
    assert!(
        browser.client.get_named_cookie("mt_console").await.is_err(),
        "the session cookie is gone"
    );
    browser.goto("/console/events").await;
    browser.wait_for_path("/console/login").await;
    browser.close().await;
}
