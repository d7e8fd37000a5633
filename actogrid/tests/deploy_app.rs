//! An application made with `#[actogrid::main]`, as users write them:
//! Ctrl-C and SIGTERM tear its deployments down (runtimes, batch jobs,
//! job files) and it exits 130 / 143.
//!
//! This file is its own test driver (`harness = false`): run by `cargo
//! test`, it starts itself as the application (`ACTOGRID_TEST_APP` names
//! the scenario), and the application's runtimes are this binary too.
//! Arguments filter the tests by name, like libtest's. The SLURM variant
//! needs `ACTOGRID_TEST_SLURM=1`.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actogrid::{DeployOptions, Deployment};
use support::{TempDir, alive};

const APP_ENV: &str = "ACTOGRID_TEST_APP";
const DESCRIPTOR_ENV: &str = "ACTOGRID_TEST_DESCRIPTOR";
const WORK_ENV: &str = "ACTOGRID_TEST_WORK";

#[actogrid::main]
async fn main() {
    if let Ok(scenario) = std::env::var(APP_ENV) {
        return app(&scenario).await;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: &[(&str, fn())] = &[
        (
            "ctrl_c_tears_local_runtimes_down_and_exits_130",
            ctrl_c_tears_local_runtimes_down_and_exits_130,
        ),
        (
            "sigterm_tears_local_runtimes_down_and_exits_143",
            sigterm_tears_local_runtimes_down_and_exits_143,
        ),
        (
            "ctrl_c_cancels_a_pending_slurm_job_and_removes_its_directory",
            ctrl_c_cancels_a_pending_slurm_job_and_removes_its_directory,
        ),
    ];
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f)))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    for (name, test) in &chosen {
        let start = Instant::now();
        // Each test runs on a thread of its own: it blocks on processes.
        let result = std::thread::spawn(*test).join();
        let took = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => println!("test {name} ... ok ({took:.1} s)"),
            Err(_) => {
                println!("test {name} ... FAILED ({took:.1} s)");
                std::process::exit(101);
            }
        }
    }
    println!("\ntest result: ok. {} passed; 0 failed\n", chosen.len());
}

// ---------------------------------------------------------------- driver

fn slurm_enabled() -> bool {
    let on = std::env::var("ACTOGRID_TEST_SLURM").as_deref() == Ok("1");
    if !on {
        eprintln!("skipped: set ACTOGRID_TEST_SLURM=1 with scripts/testbed/slurm up");
    }
    on
}

/// Starts this binary as the application of `scenario` on `descriptor`.
fn start_app(scenario: &str, descriptor: &Path, work: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(APP_ENV, scenario)
        .env(DESCRIPTOR_ENV, descriptor)
        .env(WORK_ENV, work)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("the application starts")
}

/// The application's first stdout line starting with `READY`, its words.
fn ready(app: &mut Child) -> (Vec<String>, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(app.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap();
        if n == 0 {
            let mut err = String::new();
            let _ = app.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the application ended before it was ready: {err}");
        }
        if let Some(rest) = line.strip_prefix("READY") {
            let words = rest.split_whitespace().map(str::to_owned).collect();
            return (words, out);
        }
    }
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits for the application to end (60 s at most); its exit status.
fn end_of(app: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = app.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = app.kill();
            panic!("the application did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn local_runtimes(n: u32) -> String {
    support::local_descriptor(n, 1, "timeout=\"60s\"", None)
}

/// A signal to an application with two local runtimes: it tears them down
/// (long before their 60 s lease) and exits with `code`.
fn signal_tears_local_runtimes_down(name: &str, code: i32) {
    let dir = TempDir::new("app-signal");
    let path = dir.write("d.xml", &local_runtimes(2));
    let mut app = start_app("hold", &path, &dir.0, &[("ACTOGRID_LEASE_MS", "60000")]);
    let (pids, _out) = ready(&mut app);
    let pids: Vec<u32> = pids.iter().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| alive(*p)));
    let sent = Instant::now();
    signal(app.id(), name);
    let status = end_of(&mut app);
    assert_eq!(status.code(), Some(code), "{status}");
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "runtimes left after the application ended: {pids:?}"
    );
    eprintln!(
        "SIG{name}: torn down and exited in {:.2} s",
        sent.elapsed().as_secs_f64()
    );
}

fn ctrl_c_tears_local_runtimes_down_and_exits_130() {
    signal_tears_local_runtimes_down("INT", 130);
}

fn sigterm_tears_local_runtimes_down_and_exits_143() {
    signal_tears_local_runtimes_down("TERM", 143);
}

/// The CPUs SLURM sees on its node.
fn slurm_cpus() -> u32 {
    let out = Command::new("sinfo")
        .args(["-h", "-o", "%c"])
        .output()
        .expect("sinfo");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches('+').parse().ok())
        .max()
        .expect("a CPU count from sinfo")
}

fn slurm_descriptor(slurm_option: &str, name: &str) -> String {
    support::descriptor(
        "timeout=\"120s\"",
        "",
        name,
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
            <processDefinition id="{name}">
              <slurmProcess>
                <processReference refid="runtime"/>
                {slurm_option}
              </slurmProcess>
            </processDefinition>"#
        ),
        false,
    )
}

fn squeue_state(job: &str) -> String {
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-j", job, "-o", "%T"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn ctrl_c_cancels_a_pending_slurm_job_and_removes_its_directory() {
    if !slurm_enabled() {
        return;
    }
    let dir = TempDir::new("app-slurm-signal");
    // More tasks than the node has CPUs, each needing one: it never runs
    // (`--overcommit` off; SLURM keeps it pending).
    let tasks = slurm_cpus() + 1;
    let text = slurm_descriptor(
        &format!(
            "<slurmOption><nodes>1</nodes><tasksPerNode>{tasks}</tasksPerNode><extraOptions>--begin=now+1hour</extraOptions></slurmOption>"
        ),
        "never",
    );
    let path = dir.write("d.xml", &text);
    let work = dir.0.join("jobs");
    let mut app = start_app("hold-job", &path, &work, &[]);
    let (words, _out) = ready(&mut app);
    let job = words[0].clone();
    assert!(
        squeue_state(&job).starts_with("PENDING"),
        "{}",
        squeue_state(&job)
    );
    let entries = || std::fs::read_dir(&work).map_or(0, |d| d.count());
    assert_eq!(entries(), 1, "the job's directory is there while it waits");
    signal(app.id(), "INT");
    let status = end_of(&mut app);
    assert_eq!(status.code(), Some(130), "{status}");
    let state = squeue_state(&job);
    assert!(
        state.is_empty() || state == "CANCELLED",
        "the job is still queued: {state}"
    );
    assert_eq!(entries(), 0, "the job's directory is left");
}

// ----------------------------------------------------------- application

/// The application: deploys the descriptor it is given, then does what
/// `scenario` says.
async fn app(scenario: &str) {
    let path = PathBuf::from(std::env::var(DESCRIPTOR_ENV).expect("a descriptor"));
    let work = std::env::var(WORK_ENV).expect("a work directory");
    let options = DeployOptions {
        work_dir: work,
        progress: false,
        ..DeployOptions::default()
    };
    let deployment = Deployment::load_with(&path, Default::default(), options)
        .await
        .expect("the descriptor loads");
    deployment.activate().await.expect("it activates");
    let workers = deployment.virtual_node("Workers").unwrap();
    match scenario {
        // Hold the runtimes until a signal comes.
        "hold" => {
            workers.nodes().await.expect("the nodes");
            let pids: Vec<String> = deployment
                .runtimes()
                .iter()
                .map(|r| r.pid.to_string())
                .collect();
            println!("READY {}", pids.join(" "));
            std::future::pending::<()>().await;
        }
        // Hold a job that waits in its queue until a signal comes.
        "hold-job" => {
            let job = loop {
                if let Some((_, id)) = deployment.jobs().into_iter().next() {
                    break id;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            println!("READY {job}");
            std::future::pending::<()>().await;
        }
        other => panic!("no scenario `{other}`"),
    }
}
