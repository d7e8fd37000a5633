//! The dashboard in a real headless Chromium, driven over its DevTools
//! protocol: the page shows the virtual node, its runtimes and objects,
//! a line a runtime printed, an arrow of the call graph once an object
//! called another; an object dragged onto another node moves
//! there (the API says so too); a screenshot is saved.
//!
//! Needs `chromium` (the test command installs it, as root, and sets
//! `ACTOGRID_TEST_BROWSER=1`, which makes a missing browser an error);
//! skipped otherwise. `ACTOGRID_SCREENSHOT_DIR` keeps the screenshot.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actogrid::Deployment;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{TempDir, runtime};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn browser_binary() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// A plain GET on loopback; the body (as long as its Content-Length says:
/// DevTools keeps connections open).
fn get(address: &str, target: &str) -> String {
    let s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        &s,
        "GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

/// Standard base64, as DevTools sends screenshots.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, d) in chunk.iter().enumerate() {
            n |= u32::from(*d) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// A Chromium process group and its profile: every process of the group
/// killed, then the profile removed, when dropped (also when the test
/// fails half-way).
struct Chromium {
    child: Child,
    profile: TempDir,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
        // Its helpers (zygote, utilities) go with the group; the profile is
        // removed once none of them writes there any more.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let left = group.is_some_and(|g| rustix::process::test_kill_process_group(g).is_ok());
            if !left && std::fs::remove_dir_all(&self.profile.0).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A headless Chromium with one page.
struct Browser {
    _chromium: Chromium,
    page: Socket,
    next: u64,
}

impl Browser {
    async fn open(binary: &str, url: &str) -> Browser {
        let profile = TempDir::new("chromium");
        let mut child = Command::new(binary)
            // Its own process group (killed as one), and nothing written
            // outside its profile (crash reports, caches, settings).
            .process_group(0)
            .env("HOME", &profile.0)
            .env("XDG_CONFIG_HOME", &profile.0)
            .env("XDG_CACHE_HOME", &profile.0)
            .args([
                "--disable-breakpad",
                "--disable-crash-reporter",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        let stderr = child.stderr.take().unwrap();
        let chromium = Chromium { child, profile };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.split("ws://").nth(1) {
                    let _ = tx.send(at.split('/').next().unwrap_or("").to_owned());
                }
            }
        });
        let devtools = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium says where DevTools listen");
        let mut page_ws = None;
        for _ in 0..50 {
            let list: Value =
                serde_json::from_str(&get(&devtools, "/json/list")).unwrap_or(json!([]));
            page_ws = list.as_array().and_then(|targets| {
                targets.iter().find_map(|t| {
                    (t["type"] == "page")
                        .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                        .flatten()
                })
            });
            if page_ws.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (page, _) = tokio_tungstenite::connect_async(page_ws.expect("a page target"))
            .await
            .expect("DevTools WebSocket");
        let mut browser = Browser {
            _chromium: chromium,
            page,
            next: 0,
        };
        browser.call("Page.enable", json!({})).await;
        browser.call("Page.navigate", json!({ "url": url })).await;
        browser
    }

    /// Sends a DevTools command and waits for its answer (events skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let text = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page.send(Message::Text(text.into())).await.unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer"))
                .expect("the DevTools socket is open")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    async fn wait_for(&mut self, expression: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.eval(expression).await == json!(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_deployment_and_moves_a_dragged_object() {
    let Some(binary) = browser_binary() else {
        assert_ne!(
            std::env::var("ACTOGRID_TEST_BROWSER").as_deref(),
            Ok("1"),
            "ACTOGRID_TEST_BROWSER=1 but no chromium is installed"
        );
        eprintln!("skipped: no chromium (scripts/test installs it)");
        return;
    };
    let dir = TempDir::new("dashboard-browser");
    let text = support::descriptor(
        "",
        "runtimes=\"3\"",
        "rt",
        r#"<processDefinition id="rt"><jvmProcess>
             <environment><variable name="RUST_LOG" value="info"/></environment>
           </jvmProcess></processDefinition>"#,
        false,
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), support::options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    let nodes = d.virtual_node("Workers").unwrap().nodes().await.unwrap();
    assert_eq!(nodes.len(), 3);
    let echo = actogrid_builtin::EchoProxy::new(&nodes[0]).await.unwrap();
    let id = actogrid::Proxy::active_ref(&echo).id();
    let url = d.dashboard_url().unwrap();
    let mut browser = Browser::open(binary, &url).await;
    let limit = Duration::from_secs(30);

    // The virtual node, its two runtimes, the object on its node, a line
    // a runtime printed.
    assert!(
        browser
            .wait_for(
                r#"document.querySelectorAll('section.vn[data-vn="Workers"] .runtime').length === 3"#,
                limit
            )
            .await,
        "{}",
        browser.eval("document.body.innerText").await
    );
    let on = |node: &actogrid::Node| {
        format!(
            r#"!!document.querySelector('.node[data-node="{}"] .object[data-object="{id}"]')"#,
            node.url()
        )
    };
    assert!(browser.wait_for(&on(&nodes[0]), limit).await);
    assert!(
        browser
            .wait_for(
                "document.getElementById('logs').textContent.includes('registered with')",
                limit
            )
            .await,
        "{}",
        browser
            .eval("document.getElementById('logs').textContent")
            .await
    );
    assert!(
        browser
            .wait_for(
                "document.getElementById('live').textContent === 'live'",
                limit
            )
            .await
    );

    // An object calling another: an arrow between them appears in the
    // call graph, and the called one counts what it served.
    let caller = actogrid_builtin::WorkerProxy::new(&nodes[0], "a".to_owned())
        .await
        .unwrap();
    let called = actogrid_builtin::WorkerProxy::new(&nodes[1], "b".to_owned())
        .await
        .unwrap();
    for value in 0..20 {
        assert_eq!(
            caller.delegate(called.clone(), 0, value).await.unwrap(),
            value
        );
    }
    let (from, to) = (
        actogrid::Proxy::active_ref(&caller).id(),
        actogrid::Proxy::active_ref(&called).id(),
    );
    assert!(
        browser
            .wait_for(
                &format!(r#"!!document.querySelector('#graph .edge[data-from="{from}"][data-to="{to}"]')"#),
                limit
            )
            .await,
        "{}",
        browser.eval("document.getElementById('calls-box').innerText").await
    );
    assert!(
        browser
            .wait_for(
                &format!(
                    r#"(document.querySelector('.object[data-object="{to}"]') || {{}}).textContent?.includes('20 served')"#
                ),
                limit
            )
            .await,
        "{}",
        browser.eval("document.body.innerText").await
    );
    let row = browser
        .eval(&format!(
            r#"document.querySelector('#calls tr[data-from="{from}"][data-to="{to}"]').innerText"#
        ))
        .await;
    assert!(
        row.as_str()
            .is_some_and(|r| r.contains("Worker") && r.contains("20")),
        "{row}"
    );

    // Dragged onto the other node, the object moves there.
    let drag = format!(
        r#"(() => {{
            const chip = document.querySelector('.object[data-object="{id}"]');
            const zone = document.querySelector('.node[data-node="{}"]');
            const dt = new DataTransfer();
            chip.dispatchEvent(new DragEvent('dragstart', {{ dataTransfer: dt, bubbles: true }}));
            zone.dispatchEvent(new DragEvent('dragover', {{ dataTransfer: dt, bubbles: true, cancelable: true }}));
            zone.dispatchEvent(new DragEvent('drop', {{ dataTransfer: dt, bubbles: true, cancelable: true }}));
            return true;
        }})()"#,
        nodes[1].url()
    );
    assert_eq!(browser.eval(&drag).await, json!(true));
    assert!(
        browser.wait_for(&on(&nodes[1]), limit).await,
        "{}",
        browser.eval("document.body.innerText").await
    );
    let state = d.status().await;
    let now_on = state.object(id).map(|o| o.node.clone());
    assert_eq!(now_on.as_deref(), Some(nodes[1].url().name()));
    assert_eq!(echo.echo(vec![1, 2, 3]).await.unwrap(), vec![1, 2, 3]);

    // The same deployment from scripts: `actogrid status` (the arrow
    // and the figures), `actogrid logs` (the line), `/metrics`.
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_actogrid"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status: actogrid::DeploymentStatus =
        serde_json::from_str(&run(&["status", &url, "--format", "json"])).unwrap();
    assert_eq!(status.virtual_nodes[0].runtimes.len(), 3);
    let arrow = status
        .calls
        .iter()
        .find(|e| e.from == from && e.to == to)
        .expect("the arrow, in the JSON");
    assert_eq!(arrow.calls, 20);
    assert!(arrow.from_label.contains("Worker"), "{arrow:?}");
    let text = run(&["status", &url]);
    assert!(text.contains("20 served"), "{text}");
    let logs = run(&["logs", &url, "--vn", "Workers"]);
    assert_eq!(logs.matches("registered with").count(), 3, "{logs}");
    let (address, token) = url
        .strip_prefix("http://")
        .and_then(|r| r.split_once("/?token="))
        .unwrap();
    let metrics = get(address, &format!("/metrics?token={token}"));
    assert!(
        metrics.contains("actogrid_runtimes{vn=\"Workers\",state=\"running\"} 3"),
        "{metrics}"
    );

    // A screenshot of it.
    let shot = browser
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    let png = base64(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "{} bytes", png.len());
    let keep = std::env::var_os("ACTOGRID_SCREENSHOT_DIR")
        .map_or_else(|| dir.0.clone(), std::path::PathBuf::from);
    std::fs::write(keep.join("dashboard.png"), &png).unwrap();

    drop(browser);
    d.kill().await;
    rt.shutdown();
}

/// A peer's page: this peer, its acquaintance in the overlay drawing and
/// in the table (with the slots it said it has free), its own slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_page_draws_its_overlay_and_slots() {
    let Some(binary) = browser_binary() else {
        eprintln!("skipped: no chromium (scripts/test installs it)");
        return;
    };
    let dir = TempDir::new("peer-browser");
    let work = dir.0.join("peers");
    let first = support::PeerProcess::start(&work, "127.0.0.1:0", 2, &[], "peer-page", &[]);
    let second = support::PeerProcess::start(
        &work,
        "127.0.0.1:0",
        3,
        std::slice::from_ref(&first.address),
        "peer-page",
        &[],
    );
    let url = first.dashboard_url().await;
    let mut browser = Browser::open(binary, &url).await;
    let limit = Duration::from_secs(30);
    for check in [
        "document.querySelectorAll('#slots .slot.free').length === 2".to_owned(),
        "!!document.querySelector('#overlay .me')".to_owned(),
        format!(
            r#"!!document.querySelector('#overlay .peer[data-peer="{}"]')"#,
            second.address
        ),
        format!(
            r#"(document.querySelector('#neighbours tr[data-peer="{}"]') || {{}}).innerText?.startsWith('{}\t3\t0')"#,
            second.address, second.address
        ),
        "document.getElementById('live').textContent === 'live'".to_owned(),
    ] {
        assert!(
            browser.wait_for(&check, limit).await,
            "{check}: {}",
            browser.eval("document.body.innerText").await
        );
    }
    let shot = browser
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    let png = base64(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let keep = std::env::var_os("ACTOGRID_SCREENSHOT_DIR")
        .map_or_else(|| dir.0.clone(), std::path::PathBuf::from);
    std::fs::write(keep.join("peer-dashboard.png"), &png).unwrap();
}
