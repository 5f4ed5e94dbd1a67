//! Safe on a public URL: weak tokens refused by `serve`, wrong tokens throttled per client (behind trusted
//! proxies too), sessions that expire and sign out, an audit trail, and protective headers on every page.

use std::{process::Stdio, time::Duration};

use mavera_triggers::{access::session, config::Secret};
use serde_json::json;
use wiremock::{
    matchers::{method, path},
    Mock, ResponseTemplate,
};

use crate::helpers::*;

const TOKEN: &str = "3f9a1c0e7b2d4f6a8c1e3b5d7f9a2c4e";

/// A console app that locks a client out after `failures` wrong tokens, for `lockout`.
async fn guarded_app(
    failures: u32,
    lockout: Duration,
    trusted: &'static str,
    ttl: Duration,
) -> TestApp {
    spawn_with(Options {
        tweak: Box::new(move |s| {
            s.access.admin_token = Some(Secret::new(TOKEN));
            s.access.auth_max_failures = failures;
            s.access.auth_lockout = lockout;
            s.access.trusted_proxies = mavera_triggers::config::parse_trusted(trusted).unwrap();
            s.access.session_ttl = ttl;
        }),
        ..Options::default()
    })
    .await
}

async fn login(app: &TestApp, token: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = no_redirects()
        .post(format!("{}/console/login", app.address))
        .form(&[("token", token)]);
    if let Some(xff) = forwarded_for {
        request = request.header("x-forwarded-for", xff);
    }
    request.send().await.unwrap()
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn serve_refuses_a_weak_admin_token_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    for (token, says) in [
        ("change-me", "placeholder"),
        ("ADMINTOKEN-0f1e2d", "at least 32"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mavera-triggers"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ADMIN_TOKEN", token)
            .env("SEGMENT_SHARED_SECRET", SEGMENT_SECRET)
            .env("CIO_WEBHOOK_SECRET", CIO_SECRET)
            .env("MAVERA_API_KEY", MAVERA_KEY)
            .env("CIO_APP_KEY", CIO_APP_KEY)
            .env("WEBHOOK_PORT", "0")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/t.db", dir.path().display()),
            )
            .env(
                "MAVERA_TRIGGERS_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config/mavera-triggers.toml"),
            )
            .stdin(Stdio::null())
            .output()
            .expect("run the binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(text.contains("ADMIN_TOKEN"), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(text.contains("openssl rand -hex 32"), "{text}");
        assert!(!text.contains(token), "the token is quoted: {text}");
    }
}

#[tokio::test]
async fn wrong_tokens_lock_a_client_out_everywhere_until_retry_after() {
    let app = guarded_app(3, Duration::from_secs(1), "", Duration::from_secs(3600)).await;
    // Three wrong tokens are each answered as wrong; the third locks the client out.
    for wrong in ["wrong-1", "wrong-2", "wrong-3"] {
        assert_eq!(login(&app, wrong, None).await.status(), 401);
    }
    // While locked, even the right token is not checked, on every door.
    let right = login(&app, TOKEN, None).await;
    assert_eq!(right.status(), 429);
    assert_eq!(retry_after(&right), 1);
    let admin = app.get_as("/admin/jobs", TOKEN).await;
    assert_eq!(admin.status(), 429);
    assert!(retry_after(&admin) >= 1);
    let page = no_redirects()
        .get(format!("{}/console/events", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 429);
    let wait = retry_after(&page);

    tokio::time::sleep(Duration::from_secs(wait)).await;
    let after = login(&app, TOKEN, None).await;
    assert_eq!(after.status(), 303, "the lockout lifts after Retry-After");

    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "mavera_triggers_auth_failures_total"), 3.0);
    assert_eq!(metric(&metrics, "mavera_triggers_auth_lockouts_total"), 1.0);
}

#[tokio::test]
async fn wrong_bearer_tokens_on_the_admin_api_are_throttled_too() {
    let app = guarded_app(2, Duration::from_secs(60), "", Duration::from_secs(3600)).await;
    let call = |token: &'static str| {
        app.http
            .post(format!("{}/admin/reload", app.address))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(call("nope-1").await.unwrap().status(), 401);
    assert_eq!(call("nope-2").await.unwrap().status(), 401);
    let locked = call(TOKEN).await.unwrap();
    assert_eq!(locked.status(), 429);
    assert_eq!(retry_after(&locked), 60);
    let body: serde_json::Value = locked.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("60 s"), "{body}");
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_address_is_the_client_and_an_untrusted_one_is_ignored() {
    // Behind a trusted proxy on loopback: each address behind it has its own count.
    let app = guarded_app(
        2,
        Duration::from_secs(60),
        "127.0.0.1",
        Duration::from_secs(3600),
    )
    .await;
    login(&app, "x", Some("198.51.100.1")).await;
    login(&app, "x", Some("198.51.100.1")).await;
    assert_eq!(login(&app, TOKEN, Some("198.51.100.1")).await.status(), 429);
    // A forged first entry does not dodge it: the proxy appended the real address last.
    assert_eq!(
        login(&app, "x", Some("203.0.113.50, 198.51.100.1"))
            .await
            .status(),
        429
    );
    // Someone else behind the same proxy is not locked out by that flood.
    assert_eq!(login(&app, TOKEN, Some("198.51.100.2")).await.status(), 303);

    // Without trusting the proxy, the header changes nothing: rotating it does not dodge the limit.
    let app = guarded_app(2, Duration::from_secs(60), "", Duration::from_secs(3600)).await;
    login(&app, "x", Some("198.51.100.1")).await;
    login(&app, "x", Some("198.51.100.2")).await;
    assert_eq!(login(&app, TOKEN, Some("198.51.100.3")).await.status(), 429);
}

#[tokio::test]
async fn sessions_expire_are_renewed_while_used_and_sign_out() {
    let ttl = Duration::from_secs(3600);
    let app = guarded_app(10, Duration::from_secs(60), "", ttl).await;
    let http = no_redirects();
    let token = Secret::new(TOKEN);
    let get = |cookie: String| {
        http.get(format!("{}/console", app.address))
            .header("cookie", format!("{}={cookie}", session::COOKIE))
            .send()
    };
    // Past its lifetime: back to the sign-in page, which says why.
    let expired = get(session::issue(&token, unix_now() - 3601))
        .await
        .unwrap();
    assert_eq!(expired.status(), 303);
    assert_eq!(expired.headers()["location"], "/console/login?expired=1");
    assert!(expired.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let form = http
        .get(format!("{}/console/login?expired=1", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(form.contains("Your session ended"), "{form}");

    // Used after ten minutes: served, and renewed for another full lifetime.
    let used = get(session::issue(&token, unix_now() - 600)).await.unwrap();
    assert_eq!(used.status(), 200);
    let renewed = used.headers()["set-cookie"].to_str().unwrap();
    assert!(renewed.contains("Max-Age=3600"), "{renewed}");
    // Fresh: served without a new cookie.
    let fresh = get(session::issue(&token, unix_now())).await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert!(fresh.headers().get("set-cookie").is_none());
    // The old cookie of the previous format (a fixed value per token) no longer opens anything.
    assert_eq!(get("0123abcd".repeat(8)).await.unwrap().status(), 303);

    // Sign-out clears the cookie, and the page offers it.
    let page = get(session::issue(&token, unix_now()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("action=\"/console/logout\""), "{page}");
    let out = http
        .post(format!("{}/console/logout", app.address))
        .header(
            "cookie",
            format!("{}={}", session::COOKIE, session::issue(&token, unix_now())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(out.headers()["location"], "/console/login");
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    // Without a session, signing out is not something another site can do for you.
    let cross = http
        .post(format!("{}/console/logout", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.headers()["location"], "/console/login");
    assert!(cross.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn the_audit_page_lists_sign_ins_failed_ones_a_replay_and_a_reload_newest_first() {
    let app = guarded_app(10, Duration::from_secs(60), "", Duration::from_secs(3600)).await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "id": "per_1", "object": "custom_persona", "name": "x"
        })))
        .mount(&app.mavera)
        .await;
    let body = json!({
        "type": "track", "event": "trial_started", "messageId": "audit-1", "userId": "usr_audit",
        "properties": {"plan": "pro"}
    })
    .to_string();
    assert_eq!(app.post_segment(&body).await.status(), 200);
    app.settle().await;
    let job = app.jobs().await[0].id;

    assert_eq!(login(&app, "not-it", None).await.status(), 401);
    let ok = login(&app, TOKEN, None).await;
    let cookie = ok.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let replay = app
        .http
        .post(format!("{}/admin/jobs/{job}/replay", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 202);
    let reload = app
        .http
        .post(format!("{}/admin/reload", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);

    let page = no_redirects()
        .get(format!("{}/console/audit", app.address))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = |needle: &str| {
        page.find(needle)
            .unwrap_or_else(|| panic!("{needle} not on the audit page:\n{page}"))
    };
    let (reloaded, replayed, signed_in, failed) = (
        at(">reload<"),
        at(&format!("job {job}")),
        at(">sign_in<"),
        at(">sign_in_failed<"),
    );
    assert!(
        reloaded < replayed && replayed < signed_in && signed_in < failed,
        "newest first:\n{page}"
    );
    assert!(page.contains("wrong token on the sign-in form"), "{page}");
    assert!(page.contains("127.0.0.1"), "the client is recorded: {page}");
    assert!(!page.contains("not-it"), "a wrong token is never stored");
}

#[tokio::test]
async fn every_console_answer_carries_the_protective_headers() {
    let app = guarded_app(10, Duration::from_secs(60), "", Duration::from_secs(3600)).await;
    let cookie = format!(
        "{}={}",
        session::COOKIE,
        session::issue(&Secret::new(TOKEN), unix_now())
    );
    let http = no_redirects();
    for page in [
        "/console",
        "/console/login",
        "/console/events",
        "/console/briefs",
        "/console/dead",
        "/console/triggers",
        "/console/audit",
        "/console/style.css",
        "/console/events/999999",
        "/console/no-such-page",
    ] {
        for with_session in [true, false] {
            let mut request = http.get(format!("{}{page}", app.address));
            if with_session {
                request = request.header("cookie", &cookie);
            }
            let r = request.send().await.unwrap();
            let h = r.headers();
            let csp = h["content-security-policy"].to_str().unwrap();
            for directive in [
                "default-src 'none'",
                "frame-ancestors 'none'",
                "style-src 'self'",
            ] {
                assert!(csp.contains(directive), "{page}: {csp}");
            }
            assert!(!csp.contains("script-src"), "no script is allowed: {csp}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{page}");
            assert_eq!(h["referrer-policy"], "no-referrer", "{page}");
        }
    }
    let css = http
        .get(format!("{}/console/style.css", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let html = http
        .get(format!("{}/console", app.address))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "inline styles would be blocked by the policy"
    );
}
