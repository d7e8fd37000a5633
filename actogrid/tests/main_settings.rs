//! `#[actogrid::main(...)]` settings apply to every runtime of the
//! process, node runtimes included, and the environment overrides them;
//! a bad variable stops the process at start-up with exit code 2.
//!
//! This test is its own program: it runs itself again, as a node runtime
//! (`spawn_node`) and with other environments.

use std::process::Command;

/// Reports the settings of the process that serves it.
struct Probe;

#[actogrid::active]
#[allow(unreachable_pub)]
impl Probe {
    pub fn new() -> Self {
        Probe
    }

    pub fn settings(&self) -> String {
        match actogrid::settings() {
            Ok(config) => config.to_string(),
            Err(e) => e.to_string(),
        }
    }
}

/// Set on a copy of this program that only prints its settings.
const PRINT: &str = "ACTOGRID_TEST_PRINT_SETTINGS";

#[actogrid::main(heartbeat_timeout = "30s", call_timeout = "none", max_objects = "5000")]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os(PRINT).is_some() {
        println!("{}", actogrid::settings()?);
        return Ok(());
    }
    let mine = actogrid::settings()?;
    assert_eq!(mine.heartbeat_timeout, std::time::Duration::from_secs(30));
    assert_eq!(mine.max_objects, 5000);
    assert_eq!(
        mine.heartbeat_interval,
        actogrid::Config::default().heartbeat_interval
    );

    // A node runtime started from this binary has the same settings.
    let rt = actogrid::current().expect("started by #[actogrid::main]");
    let child = actogrid::spawn_node(&rt, "settings").await?;
    let probe = ProbeProxy::new(child.node()).await?;
    assert_eq!(probe.settings().await?, mine.to_string());

    // The environment wins over the attribute.
    let out = Command::new(std::env::current_exe()?)
        .env(PRINT, "1")
        .env("ACTOGRID_MAX_OBJECTS", "7")
        .output()?;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        printed.contains("heartbeat_timeout=30000ms") && printed.contains("max_objects=7"),
        "{printed}"
    );

    // A variable that does not parse stops the process before `main`.
    let out = Command::new(std::env::current_exe()?)
        .env(PRINT, "1")
        .env("ACTOGRID_HEARTBEAT_TIMEOUT", "soon")
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(
            "the environment variable ACTOGRID_HEARTBEAT_TIMEOUT: `soon` is not a duration"
        ),
        "{said}"
    );
    assert!(out.stdout.is_empty(), "main did not run");
    println!("main_settings: ok");
    Ok(())
}
