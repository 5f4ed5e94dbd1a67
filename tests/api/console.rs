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
        tweak: Box::new(|s| s.admin_token = Some(mavera_triggers::config::Secret::new(TOKEN))),
        ..Options::default()
    })
    .await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
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
    let page = app
        .http
        .get(format!("{}/console/briefs", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
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
