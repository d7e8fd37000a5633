//! An application made with `#[actogrid::main]`, as users write them:
//! Ctrl-C and SIGTERM tear its deployments down (runtimes, batch jobs,
//! job files) and it exits 130 / 143; what its runtimes print — stdout,
//! stderr, panics — reaches it, prefixed with the runtime's virtual node,
//! host and pid, and is kept per runtime.
//!
//! This file is its own test driver (`harness = false`): run by `cargo
//! test`, it starts itself as the application (`ACTOGRID_TEST_APP` names
//! the scenario), and the application's runtimes are this binary too.
//! Arguments filter the tests by name, like libtest's. The SLURM and ssh
//! variants need `ACTOGRID_TEST_SLURM=1` / `ACTOGRID_TEST_SSH=1`.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actogrid::{DeployOptions, Deployment, Stream};
use support::{TempDir, alive};

const APP_ENV: &str = "ACTOGRID_TEST_APP";
const DESCRIPTOR_ENV: &str = "ACTOGRID_TEST_DESCRIPTOR";
const WORK_ENV: &str = "ACTOGRID_TEST_WORK";

/// Prints on request, in whichever runtime it lives.
#[derive(Debug, Default)]
pub struct Printer;

#[actogrid::active]
impl Printer {
    /// A printer.
    pub fn new() -> Self {
        Printer
    }

    /// Prints `out` on stdout and `err` on stderr; returns the pid.
    pub fn say(&self, out: String, err: String) -> u32 {
        println!("{out}");
        eprintln!("{err}");
        std::process::id()
    }

    /// Prints `lines` lines on stdout as fast as it can.
    pub fn flood(&self, lines: u64) {
        let mut out = std::io::stdout().lock();
        for i in 0..lines {
            let _ = std::io::Write::write_all(&mut out, format!("flood {i}\n").as_bytes());
        }
    }

    /// Panics.
    pub fn explode(&self) -> u64 {
        panic!("the printer exploded")
    }
}

#[actogrid::main]
async fn main() {
    if let Ok(scenario) = std::env::var(APP_ENV) {
        return app(&scenario).await;
    }
    let args = Args::parse();
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
        (
            "local_runtimes_output_reaches_the_application",
            local_runtimes_output_reaches_the_application,
        ),
        (
            "ssh_runtimes_output_reaches_the_application",
            ssh_runtimes_output_reaches_the_application,
        ),
        (
            "slurm_runtimes_output_reaches_the_application",
            slurm_runtimes_output_reaches_the_application,
        ),
    ];
    let chosen: Vec<_> = tests.iter().filter(|(name, _)| args.runs(name)).collect();
    if args.list {
        for (name, _) in &chosen {
            println!("{name}: test");
        }
        return;
    }
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

/// The arguments libtest understands that matter here: name filters,
/// `--skip`, `--exact`, `--list`; the others (and their values) are
/// ignored.
#[derive(Default)]
struct Args {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    list: bool,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args::default();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--skip" => args.skips.extend(it.next()),
                "--exact" => args.exact = true,
                "--list" => args.list = true,
                "--test-threads" | "--color" | "--format" | "--logfile" | "-Z"
                | "--shuffle-seed" => {
                    it.next();
                }
                flag if flag.starts_with('-') => {}
                filter => args.filters.push(filter.to_owned()),
            }
        }
        args
    }

    fn runs(&self, name: &str) -> bool {
        let matches = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skips.iter().any(matches)
    }
}

fn slurm_enabled() -> bool {
    let on = std::env::var("ACTOGRID_TEST_SLURM").as_deref() == Ok("1");
    if !on {
        eprintln!("skipped: set ACTOGRID_TEST_SLURM=1 with scripts/testbed/slurm up");
    }
    on
}

fn ssh_enabled() -> bool {
    if std::env::var("ACTOGRID_TEST_SSH").as_deref() != Ok("1") {
        eprintln!("skipped: set ACTOGRID_TEST_SSH=1 with scripts/testbed/ssh-hosts up");
        return false;
    }
    let testbed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed/ssh-hosts");
    let up = Command::new(testbed)
        .args(["up", "3"])
        .env("AG_TESTBED_SSH_PRIVATE_DIRS", "/tmp /root")
        .status()
        .expect("ssh-hosts up");
    assert!(up.success(), "the ssh hosts did not come up");
    true
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
    // (SLURM keeps it pending, reason `PartitionConfig`).
    let tasks = slurm_cpus() + 1;
    let text = slurm_descriptor(
        &format!("<slurmOption><nodes>1</nodes><tasksPerNode>{tasks}</tasksPerNode></slurmOption>"),
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

/// Checks the application's own stdout and stderr: every runtime's lines,
/// prefixed `[Workers host:pid]`, on the stream they were printed on, and
/// a panic with its location.
fn check_printed(app: &mut Child, mut out: BufReader<std::process::ChildStdout>) {
    let mut stdout = String::new();
    out.read_to_string(&mut stdout).unwrap();
    let mut stderr = String::new();
    app.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = end_of(app);
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    for line in stdout.lines().filter(|l| l.starts_with("MEASURED")) {
        eprintln!("{line}");
    }
    let said: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("[Workers ") && l.contains("] out from "))
        .collect();
    assert!(!said.is_empty(), "no prefixed stdout line:\n{stdout}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("[Workers ") && l.contains("] err from ")),
        "no prefixed stderr line:\n{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.starts_with("[Workers ")
            && l.contains("panicked at ")
            && l.contains("deploy_app.rs:")),
        "no panic with its location:\n{stderr}"
    );
}

fn local_runtimes_output_reaches_the_application() {
    let dir = TempDir::new("app-output");
    let path = dir.write("d.xml", &local_runtimes(2));
    let mut app = start_app("output", &path, &dir.0, &[("ACTOGRID_TEST_FLOOD", "1")]);
    let (_, out) = ready(&mut app);
    check_printed(&mut app, out);
}

fn ssh_runtimes_output_reaches_the_application() {
    if !ssh_enabled() {
        return;
    }
    let dir = TempDir::new("app-output-ssh");
    let text = support::descriptor(
        "timeout=\"120s\"",
        "",
        "toHosts",
        r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
        <processDefinition id="toHosts">
          <processListbyHost hostlist="agh1 agh2"><processReference refid="runtime"/></processListbyHost>
        </processDefinition>"#,
        false,
    );
    let path = dir.write("d.xml", &text);
    let mut app = start_app(
        "output",
        &path,
        &dir.0,
        &[(
            "ACTOGRID_SSH_CONFIG",
            "/run/actogrid-testbed/ssh/ssh_config",
        )],
    );
    let (_, out) = ready(&mut app);
    check_printed(&mut app, out);
}

fn slurm_runtimes_output_reaches_the_application() {
    if !slurm_enabled() {
        return;
    }
    let dir = TempDir::new("app-output-slurm");
    let text = slurm_descriptor(
        "<slurmOption><nodes>1</nodes><tasksPerNode>2</tasksPerNode></slurmOption>",
        "printing",
    );
    let path = dir.write("d.xml", &text);
    let mut app = start_app("output", &path, &dir.0.join("jobs"), &[]);
    let (_, out) = ready(&mut app);
    check_printed(&mut app, out);
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
        "output" => output(&deployment, &workers).await,
        other => panic!("no scenario `{other}`"),
    }
}

/// Every runtime prints on both streams and one panics; the lines are
/// kept with their runtime, and printed here (checked by the driver).
async fn output(deployment: &Deployment, workers: &actogrid::VirtualNode) {
    let nodes = workers.nodes().await.expect("the nodes");
    println!("READY");
    let mut printers = Vec::new();
    for node in &nodes {
        printers.push(PrinterProxy::new(node).await.expect("a printer"));
    }
    let asked = Instant::now();
    let mut pids = Vec::new();
    for (i, p) in printers.iter().enumerate() {
        let pid = p
            .say(format!("out from {i}"), format!("err from {i}"))
            .await
            .expect("it prints");
        pids.push(pid);
    }
    let arrived = |text: &str| {
        deployment
            .logs()
            .iter()
            .any(|l| l.text == text && pids.contains(&l.pid))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(0..printers.len())
        .all(|i| arrived(&format!("out from {i}")) && arrived(&format!("err from {i}")))
    {
        assert!(
            Instant::now() < deadline,
            "lines missing: {:?}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "MEASURED {} runtimes printed on both streams; every line kept after {:.0} ms",
        printers.len(),
        asked.elapsed().as_secs_f64() * 1000.0
    );
    // Each line is kept with its stream and its runtime.
    let runtimes = deployment.runtimes();
    for (i, pid) in pids.iter().enumerate() {
        let r = runtimes
            .iter()
            .find(|r| r.pid == *pid)
            .expect("its runtime");
        let logs = deployment.runtime_logs(r.id);
        let out = logs
            .iter()
            .find(|l| l.text == format!("out from {i}"))
            .unwrap();
        assert_eq!(out.stream, Stream::Stdout);
        assert_eq!(
            (out.host.as_str(), out.vn.as_str()),
            (r.host.as_str(), "Workers")
        );
        let err = logs
            .iter()
            .find(|l| l.text == format!("err from {i}"))
            .unwrap();
        assert_eq!(err.stream, Stream::Stderr);
    }
    // A panic: the caller gets an error, the deployer the message with
    // its location.
    let err = printers[0].explode().await.expect_err("it panics");
    eprintln!("the caller got: {err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !deployment
        .logs()
        .iter()
        .any(|l| l.text.contains("panicked at") && l.text.contains("deploy_app.rs:"))
    {
        assert!(
            Instant::now() < deadline,
            "no panic line: {:?}",
            deployment.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        deployment
            .logs()
            .iter()
            .any(|l| l.text == "the printer exploded"),
        "{:?}",
        deployment.logs()
    );
    if std::env::var("ACTOGRID_TEST_FLOOD").is_ok() {
        flood(deployment, &printers[1], pids[1]).await;
    }
    deployment.kill().await;
}

/// A runtime printing 100,000 lines at once: the rate limit lets a burst
/// through, says how many lines it held back, and the deployer keeps a
/// bounded number of lines.
async fn flood(deployment: &Deployment, printer: &PrinterProxy, pid: u32) {
    let started = Instant::now();
    printer.flood(100_000).await.expect("it floods");
    let printed = started.elapsed();
    let runtime = deployment
        .runtimes()
        .into_iter()
        .find(|r| r.pid == pid)
        .unwrap()
        .id;
    let deadline = Instant::now() + Duration::from_secs(30);
    let said = |logs: &[actogrid::OutputLine]| {
        logs.iter()
            .any(|l| l.text.contains("not forwarded: more than"))
    };
    loop {
        let logs = deployment.runtime_logs(runtime);
        if said(&logs) {
            let kept = logs.len();
            assert!(kept <= 1000, "{kept} lines kept");
            println!(
                "MEASURED 100000 lines printed in {:.0} ms; {} kept, the rest counted",
                printed.as_secs_f64() * 1000.0,
                kept
            );
            break;
        }
        assert!(Instant::now() < deadline, "the flood was never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
