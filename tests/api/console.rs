//! The web console: off without a token, a login that sets a safe cookie, Bearer for scripts, briefs rendered
//! inert.

use serde_json::json;
use wiremock::{
    matchers::{method, path},
    Mock, ResponseTemplate,
};

use crate::helpers::*;

const TOKEN: &str = "console-admin-token-1";

async fn console_app() -> TestApp {
    spawn_with(Options {
        tweak: Box::new(|s| {
            s.access.admin_token = Some(mavera_triggers::config::Secret::new(TOKEN))
        }),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn the_console_is_off_without_a_token() {
    let app = spawn_app().await;
    for page in ["/console", "/console/login", "/console/briefs"] {
        let r = app
            .http
            .get(format!("{}{page}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{page}");
    }
}

#[tokio::test]
async fn signing_in_sets_a_safe_cookie_and_opens_the_pages() {
    let app = console_app().await;
    let http = no_redirects();
    let refused = http
        .get(format!("{}/console", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 303);
    assert_eq!(refused.headers()["location"], "/console/login");

    let wrong = http
        .post(format!("{}/console/login", app.address))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let ok = http
        .post(format!("{}/console/login", app.address))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(
        !cookie.contains(TOKEN),
        "the cookie is not the token itself"
    );
    let session = cookie.split(';').next().unwrap();
    let overview = http
        .get(format!("{}/console", app.address))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    assert!(overview.text().await.unwrap().contains("dead letters"));
    let forged = http
        .get(format!("{}/console", app.address))
        .header("cookie", "mt_console=00ff")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 303);
}

#[tokio::test]
async fn scripts_use_the_bearer_token_and_briefs_render_inert() {
    let app = console_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/mave/chat"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "content": "## Win-back plan\n<script>alert('x')</script>\n[open](javascript:alert(1))\n**Call within 4 hours.**",
            "sources": [{"title": "Study", "url": "https://research.example/s"}]
        })))
        .expect(1)
        .mount(&app.mavera)
        .await;
    let body = json!({"type": "track", "event": "plan_upgraded", "messageId": "console-1", "userId": "u-console", "properties": {"new_plan": "pro"}}).to_string();
    app.post_segment(&body).await;
    app.settle().await;
    let page = app.get_as("/console/briefs", TOKEN).await;
    assert_eq!(page.status(), 200);
    let list = page.text().await.unwrap();
    assert!(
        !list.contains("<script>alert") && !list.contains("javascript:"),
        "{list}"
    );
    assert!(
        list.contains("<h2>Win-back plan</h2>"),
        "the list shows each brief rendered: {list}"
    );
    let link = list
        .split("<a href=\"/console/briefs/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a link to the brief")
        .to_string();
    let html = app
        .get_as(&format!("/console/briefs/{link}"), TOKEN)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<h2>Win-back plan</h2>")
            && html.contains("<strong>Call within 4 hours.</strong>"),
        "{html}"
    );
    assert!(
        !html.contains("<script>alert") && !html.contains("javascript:"),
        "{html}"
    );
    assert!(html.contains("https://research.example/s"));
    app.mavera.verify().await;
}

#[tokio::test]
async fn a_dead_letter_is_replayed_from_the_console_and_succeeds() {
    let app = console_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(402).set_body_json(json!({"error": {"message": "Credits exhausted", "type": "billing_error", "code": "credits_exhausted"}})))
        .up_to_n_times(1)
        .expect(1)
        .mount(&app.mavera)
        .await;
    let body = json!({"type": "track", "event": "trial_started", "messageId": "console-dead-1", "userId": "u-console-dead", "properties": {}}).to_string();
    app.post_segment(&body).await;
    assert_eq!(app.settle().await.dead, 1);

    let http = no_redirects();
    let page = http
        .get(format!("{}/console/dead", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Credits exhausted"), "{page}");
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let id = app.jobs().await[0].id.to_string();

    let forged = http
        .post(format!("{}/console/dead/replay", app.address))
        .bearer_auth(TOKEN)
        .form(&[("csrf", "forged"), ("id", &id)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "per_console"})))
        .expect(1)
        .mount(&app.mavera)
        .await;
    let replayed = http
        .post(format!("{}/console/dead/replay", app.address))
        .bearer_auth(TOKEN)
        .form(&[("csrf", csrf.as_str()), ("id", &id)])
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 303);
    let counts = app.settle().await;
    assert_eq!((counts.done, counts.dead), (1, 0));
    app.mavera.verify().await;
}

/// Posts to the console with the admin's Bearer token.
async fn console_get(app: &TestApp, page: &str) -> (u16, String) {
    let r = no_redirects()
        .get(format!("{}{page}", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The event log is written beside the acknowledgement: waits until `page` shows `text`.
async fn until_listed(app: &TestApp, page: &str, text: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, html) = console_get(app, page).await;
        assert_eq!(status, 200, "{html}");
        if html.contains(text) {
            return html;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{page} never showed {text}: {html}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn form_token(html: &str) -> String {
    html.split(r#"name="csrf" value=""#)
        .nth(1)
        .or_else(|| html.split("name=csrf value=\"").nth(1))
        .expect("a form with a CSRF token")
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn every_event_is_listed_and_its_page_shows_masked_headers_signature_and_jobs() {
    let app = console_app().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/personas"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "per_listed"})))
        .expect(1)
        .mount(&app.mavera)
        .await;
    let matching = json!({"type": "track", "event": "trial_started", "messageId": "ev-listed-1", "userId": "u-listed", "properties": {"plan": "pro"}}).to_string();
    let sig = mavera_triggers::sources::signature::sign_sha1(
        &mavera_triggers::config::Secret::new(SEGMENT_SECRET),
        matching.as_bytes(),
    );
    let r = app
        .post(
            "/segment",
            matching.as_bytes(),
            &[
                ("content-type", "application/json".into()),
                ("x-signature", sig.clone()),
                ("authorization", "Basic c2VjcmV0LXVzZXI6cGFzcw==".into()),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let ignored = json!({"type": "track", "event": "Page Scrolled", "messageId": "ev-ignored-1", "userId": "u-other"}).to_string();
    assert_eq!(app.post_segment(&ignored).await.status(), 200);
    app.settle().await;

    let list = until_listed(&app, "/console/events", "ev-ignored-1").await;
    assert!(
        list.contains("ev-listed-1") && list.contains("trial_started"),
        "{list}"
    );
    let only_ignored = until_listed(&app, "/console/events?status=ignored", "ev-ignored-1").await;
    assert!(!only_ignored.contains("ev-listed-1"), "{only_ignored}");
    let (_, by_user) = console_get(&app, "/console/events?user=u-listed").await;
    assert!(by_user.contains("ev-listed-1") && !by_user.contains("ev-ignored-1"));
    let (_, done) = console_get(&app, "/console/events?status=done&source=segment").await;
    assert!(done.contains("ev-listed-1") && !done.contains("ev-ignored-1"));
    let (status, _) = console_get(&app, "/console/events?status=exploded").await;
    assert_eq!(status, 400, "an unknown status is a clear 400");

    let link = list
        .split("<a href=\"/console/events/")
        .skip(1)
        .find(|part| part.contains("ev-listed-1"))
        .and_then(|part| part.split('"').next())
        .expect("a link to the event's page")
        .to_string();
    let (status, page) = console_get(&app, &format!("/console/events/{link}")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<span class=\"badge verified\">verified</span> X-Signature, HMAC-SHA1"),
        "{page}"
    );
    assert!(page.contains("<code>trial_started</code>"), "{page}");
    assert!(
        page.contains("per_listed"),
        "the persona's Mavera id: {page}"
    );
    assert!(
        page.contains("&quot;messageId&quot;: &quot;ev-listed-1&quot;"),
        "raw body: {page}"
    );
    assert!(
        page.contains(&sig[..8]) && !page.contains(&sig),
        "the signature is cut: {page}"
    );
    assert!(
        !page.contains("c2VjcmV0LXVzZXI6cGFzcw"),
        "credentials are masked: {page}"
    );
    assert!(page.contains("•••• (masked)"), "{page}");
    assert!(
        page.contains("<span class=\"badge done\">done</span>"),
        "{page}"
    );
    let (status, _) = console_get(&app, "/console/events/999999").await;
    assert_eq!(status, 404);
    app.mavera.verify().await;
}

#[tokio::test]
async fn the_events_list_goes_page_by_page_by_key() {
    let app = console_app().await;
    let batch: Vec<serde_json::Value> = (0..60)
        .map(|i| json!({"type": "track", "event": "Paged", "messageId": format!("paged-{i:02}"), "userId": "u-paged"}))
        .collect();
    let r = app
        .post_segment(&serde_json::Value::from(batch).to_string())
        .await;
    assert_eq!(r.status(), 200);
    let first = until_listed(&app, "/console/events?name=Paged", "paged-59").await;
    assert_eq!(first.matches("<tr><td>").count(), 50, "{first}");
    assert!(first.contains("paged-10") && !first.contains("paged-09"));
    let older = first
        .split("href=\"/console/events?name=Paged&amp;before=")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a link to older events")
        .to_string();
    let (_, second) =
        console_get(&app, &format!("/console/events?name=Paged&before={older}")).await;
    assert_eq!(second.matches("<tr><td>").count(), 10, "{second}");
    assert!(
        second.contains("paged-09") && second.contains("paged-00") && !second.contains("paged-10")
    );
    assert!(
        !second.contains("Older →"),
        "the last page has no next link"
    );
}

#[tokio::test]
async fn the_triggers_page_runs_a_test_event_in_dry_run_and_needs_the_form_token() {
    let app = console_app().await;
    let (status, page) = console_get(&app, "/console/triggers").await;
    assert_eq!(status, 200);
    for name in ["trial_started", "plan_upgraded", "cio_churn_alert"] {
        assert!(page.contains(&format!("<code>{name}</code>")), "{page}");
    }
    let csrf = form_token(&page);
    let event = json!({"type": "track", "event": "trial_started", "messageId": "dry-1", "userId": "u-dry", "properties": {"plan": "team", "source": "ads"}}).to_string();
    let forged = test_event(&app, "nope", "segment", event.as_str()).await;
    assert_eq!(forged.status(), 403);
    let ran = test_event(&app, csrf.as_str(), "segment", event.as_str()).await;
    assert_eq!(ran.status(), 200);
    let html = ran.text().await.unwrap();
    assert!(html.contains("POST /personas"), "{html}");
    assert!(html.contains("Segment RT: Trial User — u-dry"), "{html}");
    assert!(html.contains("Plan: team. Source: ads."), "{html}");

    let cio = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/samples/customerio-customer-unsubscribed.json"
    ))
    .unwrap_or_else(|_| {
        json!({"metric": "unsubscribed", "event_id": "01E4C4CT6YDC7Y5M7FE1GWWPQJ", "object_type": "customer", "timestamp": 1613063089,
               "data": {"customer_id": "0200000001", "identifiers": {"id": "42"}}}).to_string()
    });
    let ran = test_event(&app, csrf.as_str(), "customerio", cio.as_str())
        .await
        .text()
        .await
        .unwrap();
    assert!(
        ran.contains("<code>cio_churn_alert</code>") && ran.contains("POST /mave/chat"),
        "{ran}"
    );
    let broken = test_event(&app, csrf.as_str(), "segment", "{not json")
        .await
        .text()
        .await
        .unwrap();
    assert!(broken.contains("malformed JSON"), "{broken}");
    // Nothing was recorded or sent.
    assert!(app.jobs().await.is_empty());
    assert!(app.mavera.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_overview_counts_events_per_source_and_outcome_with_a_chart() {
    let app = console_app().await;
    for i in 0..3 {
        let e = json!({"type": "track", "event": "Ignored Thing", "messageId": format!("ov-{i}"), "userId": "u-ov"}).to_string();
        app.post_segment(&e).await;
    }
    // The event log is written a moment after the answers, possibly in more than one batch: wait for all three.
    for i in 0..3 {
        until_listed(
            &app,
            "/console/events?name=Ignored%20Thing",
            &format!("ov-{i}"),
        )
        .await;
    }
    let (status, html) = console_get(&app, "/console").await;
    assert_eq!(status, 200);
    assert!(html.contains("<svg"), "{html}");
    assert!(
        html.contains("3 ignored"),
        "the chart's current minute: {html}"
    );
    assert!(
        html.contains("<tr><td>segment</td><td><span class=\"badge ignored\">ignored</span></td><td>3</td><td>3</td></tr>"),
        "{html}"
    );
    for label in [
        "queue depth",
        "oldest pending",
        "Mavera credits used",
        "Upstream health",
    ] {
        assert!(html.contains(label), "{label}: {html}");
    }
}

/// Posts the triggers page's test-event form.
async fn test_event(app: &TestApp, csrf: &str, source: &str, body: &str) -> reqwest::Response {
    no_redirects()
        .post(format!("{}/console/triggers/test", app.address))
        .bearer_auth(TOKEN)
        .form(&[("csrf", csrf), ("source", source), ("body", body)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_overview_shows_the_stores_size_its_oldest_rows_and_the_retention() {
    let app = console_app().await;
    let e = json!({"type": "track", "event": "Ignored Thing", "messageId": "store-1", "userId": "u-st"})
        .to_string();
    app.post_segment(&e).await;
    until_listed(&app, "/console/events?name=Ignored%20Thing", "store-1").await;
    let store = app.state.jobs.store.upkeep();
    let retention = mavera_triggers::jobs::upkeep::Retention::from_settings(&app.state.settings);
    mavera_triggers::jobs::upkeep::prune(
        &*store,
        retention,
        mavera_triggers::jobs::now_ms(),
        &app.state.metrics,
    )
    .await
    .unwrap();
    let (status, html) = console_get(&app, "/console").await;
    assert_eq!(status, 200);
    for shown in [
        "<h2>Store</h2>",
        "store size",
        "oldest event kept",
        "<b>0s</b>oldest event kept",
        "rows pruned since start",
        "Retention: events kept 30 days, jobs kept 90 days; pruned every 10m.",
    ] {
        assert!(html.contains(shown), "{shown}: {html}");
    }
}

#[tokio::test]
async fn a_hostile_event_name_and_user_show_escaped_on_every_page_that_displays_them() {
    let app = console_app().await;
    let name = "<script>alert(1)</script>";
    let user = "u\"><img src=x onerror=alert(2)>";
    let event = json!({"type": "track", "event": name, "messageId": "hostile-1", "userId": user})
        .to_string();
    assert_eq!(app.post_segment(&event).await.status(), 200);
    let list = until_listed(&app, "/console/events", "hostile-1").await;
    let link = list
        .split("<a href=\"/console/events/")
        .nth(1)
        .and_then(|part| part.split('"').next())
        .expect("a link to the event's page")
        .to_string();
    let (_, detail) = console_get(&app, &format!("/console/events/{link}")).await;
    // The filter form puts both values back into its inputs' attributes.
    let query = format!(
        "/console/events?name={}&user={}",
        percent(name),
        percent(user)
    );
    let (_, filtered) = console_get(&app, &query).await;
    assert!(
        filtered.contains("value=\"u&quot;&gt;&lt;img src=x onerror=alert(2)&gt;\""),
        "{filtered}"
    );
    let (_, triggers) = console_get(&app, "/console/triggers").await;
    let dry_run = test_event(&app, &form_token(&triggers), "segment", &event)
        .await
        .text()
        .await
        .unwrap();
    for (page, html) in [
        ("list", &list),
        ("event", &detail),
        ("filtered list", &filtered),
        ("dry run", &dry_run),
    ] {
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page} shows the name: {html}"
        );
        assert!(
            html.contains("u&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"),
            "{page} shows the user: {html}"
        );
        assert!(
            !html.contains("<script>") && !html.contains("<img src=x"),
            "{page} escapes both: {html}"
        );
    }
}

fn percent(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}
