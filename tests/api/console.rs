//! The web console in a real browser: Chromium driven over WebDriver (chromedriver), against
//! the real app on a random port with a GitHub double. Skipped with a message where Chromium
//! is not installed, unless `RUNLINK_REQUIRE_EXTERNAL=1` (CI). Screenshots of every page go
//! to `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::common::*;

const UI_TOKEN: &str = "console-token";
const SCRIPT_TITLE: &str = "Disk on web-2 is full <script>alert('x')</script>";

/// A chromedriver process and a headless Chromium session through it.
struct Browser {
    client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

async fn browser() -> Option<Browser> {
    let (Some(driver), Some(chromium)) = (
        find_program(&["chromedriver"]),
        find_program(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        assert!(
            std::env::var("RUNLINK_REQUIRE_EXTERNAL").is_err(),
            "RUNLINK_REQUIRE_EXTERNAL is set but Chromium or chromedriver is missing (scripts/install-deps.sh)"
        );
        eprintln!("console browser test skipped: chromium and chromedriver are not installed");
        return None;
    };
    let port = crate::common::process::free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => {
                return Some(Browser {
                    client,
                    driver: child,
                });
            }
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "chromedriver did not start a session: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn screenshots() -> PathBuf {
    let dir = repo_path("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The text of element `id` once the page that has it has loaded (a click returns before
/// the navigation it starts has finished).
async fn settled(client: &Client, id: &str) -> String {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn text_of(client: &Client) -> String {
    client
        .find(Locator::Css("main"))
        .await
        .expect("page has a main")
        .text()
        .await
        .unwrap()
}

/// The app with a GitHub double that refuses comments on issue 99 (a dead letter).
async fn app_with(dir: &Path, extra: &str) -> (TestApp, wiremock::MockServer) {
    let github = github_double().await;
    Mock::given(method("POST"))
        .and(path("/repos/acme/ops/issues/99/comments"))
        .respond_with(ResponseTemplate::new(422).set_body_string("validation failed"))
        .with_priority(1)
        .mount(&github)
        .await;
    let app = TestApp::spawn(test_config(dir, &github.uri(), extra)).await;
    (app, github)
}

async fn post_issues(app: &TestApp) {
    for (n, title) in [
        (1, "Disk on logs-1 will fill up within 4 hours"),
        (2, SCRIPT_TITLE),
        (3, "Invoice PDFs have the wrong logo"),
        (99, "Replica db-2 is 45 seconds behind the primary"),
    ] {
        let response = app
            .post_github_signed("issues", &format!("d-{n}"), &issue_opened(n, title, ""))
            .await;
        assert_eq!(response.status(), 202);
    }
    app.drained(Duration::from_secs(15)).await;
}

#[tokio::test]
async fn every_page_shows_what_runlink_did_and_ticket_text_stays_text() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _github) = app_with(dir.path(), "").await;
    post_issues(&app).await;
    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    let page = |p: &str| app.url(p);

    c.goto(&page("/ui")).await.unwrap();
    let overview = text_of(c).await;
    assert!(overview.contains("The last 24 hours"), "{overview}");
    assert_eq!(
        c.find(Locator::Id("received"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "4"
    );
    assert!(overview.contains("1\ndead letters"), "{overview}");
    assert!(
        !c.find_all(Locator::Css("svg.chart rect"))
            .await
            .unwrap()
            .is_empty()
    );
    shoot(c, "overview").await;

    c.goto(&page("/ui/tickets")).await.unwrap();
    let list = text_of(c).await;
    assert!(
        list.contains(SCRIPT_TITLE),
        "the title is shown as text: {list}"
    );
    assert!(c.find_all(Locator::Css("script")).await.unwrap().is_empty());
    shoot(c, "tickets").await;
    c.goto(&page("/ui/tickets?q=invoice")).await.unwrap();
    let found = text_of(c).await;
    assert!(
        found.contains("Invoice PDFs") && !found.contains("logs-1"),
        "{found}"
    );
    c.goto(&page("/ui/tickets?outcome=none")).await.unwrap();
    assert!(text_of(c).await.contains("Invoice PDFs"));

    c.goto(&page("/ui/tickets?q=logs")).await.unwrap();
    c.find(Locator::LinkText("github:acme/ops#1"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let ticket = text_of(c).await;
    assert!(ticket.contains("host/disk-full.md"), "{ticket}");
    assert!(ticket.contains("queued for github"), "{ticket}");
    assert!(ticket.contains("delivery attempt 1: Delivered"), "{ticket}");
    assert!(
        ticket.contains("First steps"),
        "the comment as posted: {ticket}"
    );
    shoot(c, "ticket").await;

    c.goto(&page("/ui/runbooks")).await.unwrap();
    let runbooks = text_of(c).await;
    assert!(runbooks.contains("host/disk-full.md"), "{runbooks}");
    shoot(c, "runbooks").await;
    c.goto(&page("/ui/runbook?id=host/disk-full.md"))
        .await
        .unwrap();
    assert!(text_of(c).await.contains("github:acme/ops#1"));

    c.goto(&page("/ui/coverage")).await.unwrap();
    let coverage = text_of(c).await;
    assert!(
        coverage.contains("Invoice PDFs have the wrong logo"),
        "{coverage}"
    );
    shoot(c, "coverage").await;

    c.goto(&page("/ui/playground")).await.unwrap();
    let form = c.form(Locator::Css("form.playground")).await.unwrap();
    form.set_by_name("title", "Node worker-17 went NotReady")
        .await
        .unwrap();
    form.submit().await.unwrap();
    let result = settled(c, "result").await;
    assert!(result.contains("kubernetes/node-down.md"), "{result}");
    assert!(result.contains("Comment (github.md.j2)"), "{result}");
    shoot(c, "playground").await;

    c.goto(&page("/ui/dead")).await.unwrap();
    let dead = text_of(c).await;
    assert!(dead.contains("HTTP 422"), "{dead}");
    shoot(c, "dead-letters").await;
    c.find(Locator::Css("button.retry-one"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = settled(c, "retried").await;
    assert_eq!(notice, "1 delivery(ies) queued again.");

    // Every console response says what may run on it.
    let response = app.get("/ui/tickets").await;
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    // Without the form's CSRF token nothing is retried.
    let forged = app
        .client
        .post(app.url("/ui/dead/retry"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", "forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    drop(browser);
    app.stop().await;
}

#[tokio::test]
async fn with_a_token_the_console_needs_a_login_and_retry_needs_it_and_csrf() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _github) = app_with(
        dir.path(),
        &format!("[server]\nui_token = \"{UI_TOKEN}\"\n"),
    )
    .await;
    post_issues(&app).await;
    // Without a session: pages send to the login form, a retry is refused.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = plain.get(app.url("/ui/tickets")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/ui/login");
    let response = plain
        .post(app.url("/ui/dead/retry"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A session without the page's CSRF token is refused too.
    let login = plain
        .post(app.url("/ui/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", UI_TOKEN))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let response = plain
        .post(app.url("/ui/dead/retry"))
        .header("Cookie", &session)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", "forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let Some(browser) = browser().await else {
        return;
    };
    let c = &browser.client;
    c.goto(&app.url("/ui/dead")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    let form = c.form(Locator::Css("form.login")).await.unwrap();
    form.set_by_name("token", "wrong").await.unwrap();
    form.submit().await.unwrap();
    settled(c, "failed").await;
    shoot(c, "login").await;
    let form = c.form(Locator::Css("form.login")).await.unwrap();
    form.set_by_name("token", UI_TOKEN).await.unwrap();
    form.submit().await.unwrap();
    settled(c, "received").await;
    c.goto(&app.url("/ui/dead")).await.unwrap();
    c.find(Locator::Id("retry-all"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = settled(c, "retried").await;
    assert_eq!(notice, "1 delivery(ies) queued again.");
    drop(browser);
    app.stop().await;
}

#[tokio::test]
async fn the_console_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _github) = app_with(dir.path(), "[server]\nui = false\n").await;
    assert_eq!(app.get("/ui").await.status(), 404);
    assert_eq!(app.get("/ui/tickets").await.status(), 404);
    app.stop().await;
}
