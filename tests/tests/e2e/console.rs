//! The console in a real browser: headless Chromium driven over WebDriver (`chromedriver`,
//! started here) against a real `switchboard serve`. The flow a new user takes: paste a key,
//! enable `lead-nurture` from the gallery through its form and test-run it (three outbox
//! items), build a two-step workflow by drag and drop and save it, break it with an unknown
//! goto and see the error on that block, fire its webhook and watch the run finish live, see
//! the usage chart; a workflow named like markup shows as text. Screenshots of each page go to
//! `$CARGO_TARGET_DIR/console-screenshots/` (not committed; CI keeps them as artifacts).
//!
//! Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`).
//! Without them the test prints a notice and passes, unless `CI=true`, where it fails.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::crash::{free_port, server_log, start_with};
use crate::support::{Backend, TempDir, TestDb};

/// How long the browser may take to show something.
const PATIENCE: Duration = Duration::from_secs(20);

/// A program on the PATH, or `None`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
}

/// Headless Chromium under a chromedriver of its own; dropped, both stop.
struct Browser {
    client: Client,
    driver: Child,
    /// chromedriver's port and the session, to end it on drop.
    port: u16,
    session: Option<String>,
    shots: PathBuf,
}

impl Drop for Browser {
    /// Ends the WebDriver session, which quits Chromium, before chromedriver is killed: a test
    /// that fails half-way would otherwise leave the browser running without its driver.
    fn drop(&mut self) {
        self.end_session();
        let _ = self.driver.start_kill();
    }
}

impl Browser {
    /// Ends the session (Chromium quits); dropping then only stops chromedriver.
    async fn quit(mut self) {
        self.client.clone().close().await.unwrap();
        self.session = None;
    }

    /// `DELETE /session/{id}` to chromedriver, blocking (this runs in `Drop`).
    fn end_session(&self) {
        use std::io::Read;
        let Some(session) = &self.session else { return };
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!("DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port);
        // The answer comes once the session (and Chromium) has ended; its first bytes suffice.
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read(&mut [0; 512]);
        }
    }
}

impl Browser {
    /// Starts chromedriver and a session, or `None` (with a notice) when either program is
    /// missing outside CI. Under `CI=true` a missing browser fails the test.
    async fn start() -> Option<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chromium = std::env::var_os("CHROME_BIN").map(PathBuf::from).or_else(|| which("chromium")).or_else(|| which("chromium-browser"));
        let (Some(chromium), Some(driver)) = (chromium, which("chromedriver")) else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("the console tests need chromium and chromedriver under CI=true: apt-get install chromium chromium-driver");
            }
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: chromium or chromedriver is missing; the console browser test is skipped (apt-get install chromium chromium-driver; set CI=true to fail instead)"
            );
            return None;
        };
        let port = free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{url}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900", "--force-device-scale-factor=1"],
            }),
        );
        let client =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new()).capabilities(caps).connect(&url).await.expect("a WebDriver session");
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
        let shots = target.join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        let session = client.session_id().await.ok().flatten();
        Some(Browser { client, driver, port, session, shots })
    }

    /// The first element matching `css`, waiting for it.
    async fn find(&self, css: &str) -> Element {
        self.client.wait().at_most(PATIENCE).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// Waits until `check` holds (a script returning a boolean), failing with `what`.
    async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.client.execute(script, vec![]).await.unwrap() == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.client.execute("return document.querySelector('main').innerText", vec![]).await.unwrap();
                panic!("timed out waiting for {what}; the page says:\n{}", text.as_str().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element matching `css`, finding it again if a redraw replaced it between
    /// finding and clicking (pages redraw as live events arrive).
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.find(css).await.click().await {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("could not click {css}: {e}"),
            }
        }
    }

    /// The text of the element matching `css`.
    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// Types into the field matching `css`, replacing what it held.
    async fn fill(&self, css: &str, value: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let field = self.find(css).await;
            match async {
                field.clear().await?;
                field.send_keys(value).await
            }
            .await
            {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("could not fill {css}: {e}"),
            }
        }
    }

    /// Saves a screenshot as `<name>.png`.
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Drags `from` onto the flow below its last block, with real pointer events.
    async fn drag_to_flow_end(&self, from: &str) {
        let source = self.find(from).await;
        let end = self.find("#canvas .end-node").await;
        let mouse = MouseActions::new("mouse".into())
            .then(PointerAction::MoveToElement { element: source, duration: None, x: 0.0, y: 0.0 })
            .then(PointerAction::Down { button: fantoccini::actions::MOUSE_BUTTON_LEFT })
            .then(PointerAction::MoveBy { duration: Some(Duration::from_millis(100)), x: 20.0, y: 10.0 })
            .then(PointerAction::MoveToElement { element: end.clone(), duration: Some(Duration::from_millis(300)), x: 0.0, y: -14.0 })
            .then(PointerAction::Pause { duration: Duration::from_millis(100) })
            .then(PointerAction::Up { button: fantoccini::actions::MOUSE_BUTTON_LEFT });
        self.client.perform_actions(mouse).await.unwrap();
        self.client.release_actions().await.unwrap();
    }

    async fn goto(&self, base: &str, hash: &str) {
        self.client.goto(&format!("{base}/console{hash}")).await.unwrap();
    }
}

async fn api(http: &reqwest::Client, method: reqwest::Method, url: String, key: &str, body: Option<Value>) -> Value {
    let mut req = http.request(method.clone(), &url).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let answer: Value = res.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{method} {url}: {status} {answer}");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let Some(browser) = Browser::start().await else { return };
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let data = TempDir::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let server = start_with(&db.url, &data, port, &[("SWITCHBOARD_PUBLIC_URL", &base)]).await;
    let http = reqwest::Client::new();
    let key = server.account_key(&http, "Studio Ada").await;
    for provider in ["twilio", "smtp", "crm"] {
        let new = json!({ "provider": provider, "name": format!("{provider}-sandbox"), "sandbox": true });
        api(&http, reqwest::Method::POST, format!("{base}/v1/connections"), &key, Some(new)).await;
    }
    let markup = "<img src=x onerror=alert(1)>";
    let hostile = json!({ "name": markup, "trigger": { "manual": {} }, "steps": [{ "id": "note", "action": "log", "input": { "message": "hi" } }] });
    api(&http, reqwest::Method::POST, format!("{base}/v1/workflows"), &key, Some(hostile)).await;

    // The console's answers carry a strict CSP; `/` leads to it.
    let page = http.get(format!("{base}/console")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
    browser.client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(browser.client.current_url().await.unwrap().path(), "/console");
    // Every later page is the same document (hash navigation): collect any policy violation,
    // script error or unhandled rejection from here to the end.
    let watch = "window.__problems = []; \
        document.addEventListener('securitypolicyviolation', e => window.__problems.push('CSP ' + e.violatedDirective + ' ' + e.blockedURI)); \
        window.addEventListener('error', e => window.__problems.push('error ' + e.message)); \
        window.addEventListener('unhandledrejection', e => window.__problems.push('rejection ' + (e.reason && e.reason.message || e.reason)));";
    browser.client.execute(watch, vec![]).await.unwrap();

    // The key: a wrong one is refused in words, the right one opens the console.
    browser.fill("input[name=api-key]", "sk_wrong").await;
    browser.click("#key-form button[type=submit]").await;
    browser.until("the refusal", "const e = document.querySelector('#key-form [role=alert]'); return !!e && e.innerText.includes('unknown API key')").await;
    browser.shot("01-key").await;
    browser.fill("input[name=api-key]", &key).await;
    browser.click("#key-form button[type=submit]").await;

    // The gallery, lead-nurture's form, a test run with three outbox items, then turning it on.
    browser.find(".template-card[data-slug=lead-nurture]").await;
    browser.shot("02-templates").await;
    browser.click(".template-card[data-slug=lead-nurture] a.button").await;
    browser.fill("#template-form input[name=business_name]", "Studio Ada").await;
    browser.fill("#template-form input[name=sender]", "+15550001111").await;
    browser.fill("#template-form input[name=from_email]", "hello@studio.example").await;
    browser.click("#test-run").await;
    browser.until("three outbox items", "return document.querySelectorAll('.outbox-item').length === 3").await;
    let kinds: Vec<String> = {
        let mut out = Vec::new();
        for item in browser.client.find_all(Locator::Css(".outbox-item")).await.unwrap() {
            out.push(item.attr("data-kind").await.unwrap().unwrap_or_default());
        }
        out
    };
    assert_eq!(kinds, ["sms.send", "email.send", "crm.create_task"]);
    browser.shot("03-template-test-run").await;
    browser.click("#turn-on").await;
    browser.until("the template on", "return document.querySelector('#template-form').innerText.includes('is on')").await;
    let workflows = api(&http, reqwest::Method::GET, format!("{base}/v1/workflows"), &key, None).await;
    let nurture = workflows["workflows"].as_array().unwrap().iter().find(|w| w["name"] == "Lead nurture").expect("lead-nurture enabled");
    assert_eq!(nurture["enabled"], true, "{nurture}");

    // A two-step workflow by drag and drop (pointer events), one block added and removed by
    // keyboard, properties filled, saved.
    browser.goto(&base, "#/workflows/new").await;
    browser.find(".palette-item[data-kind=log]").await;
    browser.drag_to_flow_end(".palette-item[data-kind=log]").await;
    browser.until("the first block", "return document.querySelectorAll('#canvas .block').length === 1").await;
    browser.drag_to_flow_end(".palette-item[data-kind=delay]").await;
    browser.until("the second block", "return document.querySelectorAll('#canvas .block').length === 2").await;
    browser.find(".palette-item[data-kind=end]").await.send_keys(&Key::Enter.to_string()).await.unwrap();
    browser.until("a block added by keyboard", "return document.querySelectorAll('#canvas .block').length === 3").await;
    browser.find("#canvas .block[data-index='2']").await.send_keys(&Key::Delete.to_string()).await.unwrap();
    browser.until("the block removed by keyboard", "return document.querySelectorAll('#canvas .block').length === 2").await;
    assert_eq!(browser.text("#canvas .block[data-index='0'] .kind").await, "log");
    assert_eq!(browser.text("#canvas .block[data-index='1'] .kind").await, "delay");
    // Alt+↑ moves a block up, Alt+↓ back down (modifiers stay pressed until Key::Null).
    let alt = |arrow: Key| format!("{}{}{}", Key::Alt, arrow, Key::Null);
    browser.find("#canvas .block[data-index='1']").await.send_keys(&alt(Key::Up)).await.unwrap();
    browser
        .until(
            "delay moved up by keyboard",
            "const k = document.querySelector(\"#canvas .block[data-index='0'] .kind\"); return !!k && k.textContent === 'delay'",
        )
        .await;
    browser.find("#canvas .block[data-index='0']").await.send_keys(&alt(Key::Down)).await.unwrap();
    browser
        .until("delay moved back down", "const k = document.querySelector(\"#canvas .block[data-index='1'] .kind\"); return !!k && k.textContent === 'delay'")
        .await;
    browser.click("#canvas .block[data-index='0']").await;
    browser.fill("#props [name=message]", "lead {{ event.name }}").await;
    browser.click("#canvas .block[data-index='1']").await;
    browser.fill("#props input[name=delay]", "6s").await;
    browser.click("#trigger-node").await;
    browser.fill("#props input[name=name]", "Console flow").await;
    browser.click("#save-workflow").await;
    browser.until("the saved workflow", "return !!document.querySelector('#saved')").await;
    browser.shot("04-editor").await;
    let saved = api(&http, reqwest::Method::GET, format!("{base}/v1/workflows"), &key, None).await;
    let flow = saved["workflows"].as_array().unwrap().iter().find(|w| w["name"] == "Console flow").expect("the built workflow").clone();
    assert_eq!(flow["steps"][0]["action"], "log", "{flow}");
    assert_eq!(flow["steps"][1]["delay"], "6s", "{flow}");
    assert_eq!(flow["trigger"], json!({ "webhook": {} }), "{flow}");

    // Broken: an unknown goto, shown on the block it belongs to; then mended.
    browser.click("#canvas .block[data-index='0']").await;
    browser.click("#props details summary").await;
    browser.fill("#props input[name=on_error]", "goto nowhere").await;
    browser.click("#save-workflow").await;
    browser
        .until(
            "the error on the block",
            "const e = document.querySelector(\"#canvas .block[data-index='0'] .block-errors\"); return !!e && e.innerText.includes('nowhere')",
        )
        .await;
    assert!(browser.client.find_all(Locator::Css("#canvas .block[data-index='1'] .block-errors")).await.unwrap().is_empty(), "only the broken block shows it");
    // …and on its field in the properties panel.
    assert!(browser.text("#props .field-error").await.contains("nowhere"));
    browser.find("#props input[name=on_error][aria-invalid=true]").await;
    browser.shot("05-editor-error").await;
    browser.click("#canvas .block[data-index='0']").await;
    let details = browser.find("#props details").await;
    if details.attr("open").await.unwrap().is_none() {
        browser.click("#props details summary").await;
    }
    browser.find("#props input[name=on_error]").await.clear().await.unwrap();
    // clear() fires no input event: an edit that does.
    browser.find("#props input[name=on_error]").await.send_keys("x").await.unwrap();
    browser.find("#props input[name=on_error]").await.send_keys(&Key::Backspace.to_string()).await.unwrap();
    browser.click("#save-workflow").await;
    browser
        .until("the mended workflow saved", "return !!document.querySelector('#saved') && document.querySelector('#saved').innerText.includes('version 2')")
        .await;

    // Its webhook, fired from the console; the run's timeline finishes live.
    browser.click("#fire-webhook").await;
    // The page reads the run once, then only listens: "waiting" turning into "succeeded" is
    // the event stream at work.
    browser
        .until(
            "the run waiting in its delay",
            "const s = document.querySelector(\"#run-timeline [data-step='delay_1']\"); return !!s && s.innerText.includes('Waiting until')",
        )
        .await;
    browser.shot("06-run-live").await;
    browser.until("the run finished live", "const s = document.querySelector('#run-status'); return !!s && s.innerText.trim() === 'succeeded'").await;
    browser.until("both steps in the timeline", "return document.querySelectorAll('#run-timeline .step.step-succeeded').length === 2").await;
    browser.shot("07-run-finished").await;

    // Runs: filtered by status; a waiting run cancelled from its page.
    let slow = json!({ "name": "Slow", "trigger": { "manual": {} }, "steps": [{ "id": "later", "delay": "1h" }] });
    let slow = api(&http, reqwest::Method::POST, format!("{base}/v1/workflows"), &key, Some(slow)).await;
    let started = api(&http, reqwest::Method::POST, format!("{base}/v1/workflows/{}/runs", slow["id"].as_str().unwrap()), &key, Some(json!({}))).await;
    let slow_run = started["run_id"].as_str().unwrap();
    browser.goto(&base, "#/runs?status=succeeded").await;
    browser.find(".table tbody tr").await;
    browser
        .until(
            "only succeeded runs",
            "const b = [...document.querySelectorAll('.table tbody .badge')]; return b.length > 0 && b.every(x => x.textContent === 'succeeded')",
        )
        .await;
    browser.shot("08-runs").await;
    browser.goto(&base, &format!("#/runs/{slow_run}")).await;
    browser.until("the run waiting", "const s = document.querySelector('#run-status'); return !!s && s.innerText.trim() === 'waiting'").await;
    browser.click("#cancel-run").await;
    browser.until("the run cancelled", "const s = document.querySelector('#run-status'); return !!s && s.innerText.trim() === 'cancelled'").await;
    assert_eq!(api(&http, reqwest::Method::GET, format!("{base}/v1/runs/{slow_run}"), &key, None).await["status"], "cancelled");

    // A for_each: the parent run links to its child runs, one per item.
    let fan = json!({ "name": "Fan", "trigger": { "manual": {} }, "steps": [
        { "id": "each", "for_each": { "items": [1, 2], "as": "n", "steps": [{ "id": "note", "action": "log", "input": { "message": "{{ n }}" } }] } }
    ] });
    let fan = api(&http, reqwest::Method::POST, format!("{base}/v1/workflows"), &key, Some(fan)).await;
    let fan_id = fan["id"].as_str().unwrap();
    let fan_run = api(&http, reqwest::Method::POST, format!("{base}/v1/workflows/{fan_id}/runs"), &key, Some(json!({}))).await;
    browser.goto(&base, &format!("#/runs/{}", fan_run["run_id"].as_str().unwrap())).await;
    browser.until("the parent run finished", "const s = document.querySelector('#run-status'); return !!s && s.innerText.trim() === 'succeeded'").await;
    browser.click("a[href^='#/runs?parent_run_id=']").await;
    browser
        .until(
            "two child runs",
            "return document.querySelectorAll('.table tbody tr').length === 2 && document.querySelector('main').innerText.includes('item 1')",
        )
        .await;
    browser.goto(&base, &format!("#/workflows/{fan_id}")).await;
    browser.find("#canvas .block.kind-for-each").await;

    // Outbox, connections (one created here), calls, usage with its chart.
    browser.goto(&base, "#/outbox").await;
    browser.find(".outbox-item").await;
    browser.shot("09-outbox").await;
    browser.goto(&base, "#/connections").await;
    browser.find("#new-connection").await;
    let page = browser.client.execute("return document.querySelector('main').innerText", vec![]).await.unwrap();
    assert!(page.as_str().unwrap().contains("twilio-sandbox"), "{page}");
    browser.fill("#new-connection input[name=provider]", "slack").await;
    browser.fill("#new-connection input[name=name]", "team-slack").await;
    browser.click("#new-connection button[type=submit]").await;
    browser.until("the new connection listed", "return [...document.querySelectorAll('.table td')].some(td => td.textContent === 'team-slack')").await;
    browser.shot("10-connections").await;
    browser.goto(&base, "#/calls").await;
    browser.find("#dashboard .stat").await;
    browser.shot("11-calls").await;
    browser.goto(&base, "#/usage").await;
    browser.find("#usage-chart rect.bar").await;
    // The CSV is fetched with the key and handed to the browser as a blob: no error shown.
    browser.click("#usage-csv").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(browser.client.find_all(Locator::Css("main .error")).await.unwrap().is_empty(), "the CSV download failed");
    browser.shot("11-usage-chart").await;

    // The text view's YAML writer against the server's YAML reader: awkward strings and keys
    // come back as they were.
    let awkward = json!({ "name": "YAML: awkward # values", "trigger": { "manual": {} }, "steps": [{ "id": "note", "action": "http.request", "input": { "method": "POST", "url": "https://example.com/hook", "body": {
        "no": "no", "yes": "Yes", "null": "null", "num": "10%", "plus": "+15550001111", "colon": "a: b", "hash": "a #b", "quote": "say \"hi\"",
        "lines": "one\ntwo", "trailing": "one\n", "indented": "  x\ny", "empty": "", "tab": "a\tb", "unicode": "é ✓", "1": [[1, 2], {}, []],
        "expr": "{{ event.name }}", "dash": "- item", "star": "*ref", "bool": true, "n": 3.5
    } } }] });
    let yaml = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; import('/console/yaml.js').then(m => done(m.toYaml(arguments[0])), e => done('ERROR ' + e));",
            vec![awkward.clone()],
        )
        .await
        .unwrap();
    let yaml = yaml.as_str().unwrap().to_string();
    let res = http.post(format!("{base}/v1/workflows")).bearer_auth(&key).header("Content-Type", "application/yaml").body(yaml.clone()).send().await.unwrap();
    let status = res.status();
    let parsed: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{yaml}\n{parsed}");
    assert_eq!((&parsed["name"], &parsed["steps"]), (&awkward["name"], &awkward["steps"]), "{yaml}");

    // A template's workflow as a graph (set, wait_for with a timeout, a branch, a call), and
    // its YAML text saved back as written: the same steps, one version more.
    let quote = json!({ "params": { "business_name": "Studio Ada", "caller_id": "+15550001111", "from_email": "hello@studio.example" } });
    let quote = api(&http, reqwest::Method::POST, format!("{base}/v1/templates/quote-follow-up/enable"), &key, Some(quote)).await;
    let quote_id = quote["id"].as_str().unwrap();
    browser.goto(&base, &format!("#/workflows/{quote_id}")).await;
    browser.find("#canvas .block.kind-branch").await;
    browser.find("#canvas .block.kind-wait-for").await;
    let script = browser.text("#canvas .block.kind-voice-call .script").await;
    assert!(script.contains("offer · menu") && script.contains("1 → accept"), "{script}");
    browser.until("goto arrows", "return document.querySelectorAll('svg.edges path.edge').length >= 2").await;
    browser.shot("12-editor-template-graph").await;
    let yaml = browser.client.execute("return document.querySelector('#text-view').value", vec![]).await.unwrap();
    assert!(yaml.as_str().unwrap().contains("wait_for:\n"), "{yaml}");
    browser.click("#save-text").await;
    browser.until("the YAML saved", "const s = document.querySelector('#saved'); return !!s && s.innerText.includes('version 2')").await;
    let again = api(&http, reqwest::Method::GET, format!("{base}/v1/workflows/{quote_id}"), &key, None).await;
    assert_eq!(
        (again["steps"].clone(), again["trigger"].clone(), again["params"].clone()),
        (quote["steps"].clone(), quote["trigger"].clone(), quote["params"].clone())
    );

    // Markup in a name is text: no <img> in the page, no alert. Its toggle turns it off.
    browser.goto(&base, "#/workflows").await;
    browser.find(".workflow-name").await;
    browser
        .until("the workflow list", "return [...document.querySelectorAll('.workflow-name')].some(a => a.textContent === '<img src=x onerror=alert(1)>')")
        .await;
    assert!(browser.client.find_all(Locator::Css("main img")).await.unwrap().is_empty(), "a name became markup");
    assert!(browser.client.get_alert_text().await.is_err(), "an alert opened");
    browser.shot("13-workflows").await;
    let hostile_id = api(&http, reqwest::Method::GET, format!("{base}/v1/workflows"), &key, None).await["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == markup)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    browser.click(&format!("tr[data-workflow='{hostile_id}'] input[role=switch]")).await;
    let deadline = Instant::now() + PATIENCE;
    while api(&http, reqwest::Method::GET, format!("{base}/v1/workflows/{hostile_id}"), &key, None).await["enabled"] != false {
        assert!(Instant::now() < deadline, "the toggle did not disable the workflow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A workflow deleted from the editor, after a confirmation.
    let slow_id = slow["id"].as_str().unwrap();
    browser.goto(&base, &format!("#/workflows/{slow_id}")).await;
    browser.click("#delete-workflow").await;
    browser.client.accept_alert().await.unwrap();
    browser.until("back on the list", "return location.hash === '#/workflows' && !!document.querySelector('.workflow-name')").await;
    let gone = http.get(format!("{base}/v1/workflows/{slow_id}")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(gone.status(), 404);

    let problems = browser.client.execute("return window.__problems", vec![]).await.unwrap();
    assert_eq!(problems, json!([]), "the page reloaded, or something went wrong in it");

    // 390 px wide: nothing wider than the screen.
    browser.client.set_window_size(390, 844).await.unwrap();
    for (hash, name) in [("#/templates", "14-narrow-templates"), ("#/workflows", "15-narrow-workflows"), ("#/usage", "16-narrow-usage")] {
        browser.goto(&base, hash).await;
        browser.find("main h1").await;
        browser.until(&format!("{hash} to fit 390 px"), "return document.documentElement.scrollWidth <= window.innerWidth + 1").await;
        browser.shot(name).await;
    }
    let flow_id = flow["id"].as_str().unwrap();
    browser.goto(&base, &format!("#/workflows/{flow_id}")).await;
    browser.find("#canvas .block").await;
    browser.until("the editor to fit 390 px", "return document.documentElement.scrollWidth <= window.innerWidth + 1").await;
    browser.shot("17-narrow-editor").await;

    let problems = browser.client.execute("return window.__problems", vec![]).await.unwrap();
    assert_eq!(problems, json!([]), "the page reloaded, or something went wrong in it");
    assert!(!server_log(&data).contains("panicked"), "{}", server_log(&data));
    browser.quit().await;
    drop(server);
}

/// Without a browser: the page and every file are served from the binary with the strict
/// policy and their media types, an unknown file is a 404 in the API's format, `/` redirects,
/// and no file assigns `innerHTML` or carries an inline script or style.
async fn console_files_are_served_with_a_strict_policy(db: TestDb) {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let app = crate::support::TestApp::new(db).await;
    let get = |path: String| {
        let router = switchboard_api::router(app.state.clone());
        async move {
            let res = router.oneshot(Request::get(&path).body(Body::empty()).unwrap()).await.unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
            (status, headers, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (status, headers, _) = get("/".into()).await;
    assert_eq!((status, headers["location"].to_str().unwrap()), (StatusCode::TEMPORARY_REDIRECT, "/console"));
    let (status, headers, page) = get("/console".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["content-security-policy"], switchboard_api::console::CONTENT_SECURITY_POLICY);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(!page.contains("<script>") && !page.contains("style=") && page.contains(r#"<script type="module" src="/console/app.js"></script>"#), "{page}");
    for file in switchboard_api::console::files() {
        let (status, headers, text) = get(format!("/console/{file}")).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        let expected = if file.ends_with(".css") { "text/css; charset=utf-8" } else { "text/javascript; charset=utf-8" };
        assert_eq!(headers["content-type"], expected, "{file}");
        assert_eq!(headers["content-security-policy"], switchboard_api::console::CONTENT_SECURITY_POLICY, "{file}");
        assert!(
            !text.contains("innerHTML =") && !text.contains("outerHTML") && !text.contains("insertAdjacentHTML") && !text.contains("eval("),
            "{file} builds markup from strings"
        );
    }
    // Every file in api/console/ is served: one left out of `ASSETS` would 404 in the browser.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/console");
    let served: Vec<&str> = switchboard_api::console::files().collect();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name == "index.html" || served.contains(&name.as_str()), "api/console/{name} is not in console::ASSETS");
    }
    let (status, _, body) = get("/console/nope.js".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("\"not_found\""), "{body}");
}

crate::on_both_backends!(console_files_are_served_with_a_strict_policy);
