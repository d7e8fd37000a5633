//! Helpers shared by the deployment tests.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actogrid::descriptor::LoadOptions;
use actogrid::{Config, DeployOptions, Deployment, Runtime};

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "actogrid-test-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// Writes `text` to `name` inside, returning its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory with a short path (ssh control sockets below it must fit
/// in 107 bytes), removed when dropped.
pub fn short_temp_dir() -> TempDir {
    let dir = PathBuf::from(format!("/tmp/ag{}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

/// An `actogrid node` named `name`, with credentials of `rt`'s
/// deployment, that exits when its standard input closes.
pub async fn node_process(rt: &Runtime, name: &str) -> anyhow::Result<actogrid::NodeProcess> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_actogrid"));
    cmd.args([
        "node",
        "--listen",
        "127.0.0.1:0",
        "--exit-on-stdin-eof",
        "--name",
        name,
    ])
    .stdin(Stdio::piped())
    .stderr(Stdio::inherit());
    actogrid::spawn_with(rt, cmd).await
}

/// A child process killed (and waited for) when dropped, whatever
/// happens to the test.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn runtime() -> Runtime {
    let config = Config {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    Runtime::bind("127.0.0.1:0", config).await.expect("bind")
}

pub fn options(rt: &Runtime) -> DeployOptions {
    DeployOptions {
        runtime: Some(rt.clone()),
        program: Some(PathBuf::from(env!("CARGO_BIN_EXE_actogrid"))),
        lease: Duration::from_secs(3),
        progress: false,
        ..DeployOptions::default()
    }
}

pub async fn load(rt: &Runtime, path: &Path, vars: &[(&str, &str)]) -> Deployment {
    let mut load = LoadOptions::default();
    for (k, v) in vars {
        load = load.var(*k, *v);
    }
    Deployment::load_with(path, load, options(rt))
        .await
        .expect("the descriptor loads")
}

/// Whether process `pid` exists on this machine (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `check` holds, up to `limit`; returns whether it did.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// A descriptor with one virtual node `Workers` of `runtimes` local
/// runtimes of `nodes` nodes each, extra attributes on the virtual node and
/// an optional commandPath.
pub fn local_descriptor(
    runtimes: u32,
    nodes: u32,
    vn_attrs: &str,
    command: Option<&str>,
) -> String {
    let command = command
        .map(|c| format!("<commandPath value=\"{c}\"/>"))
        .unwrap_or_default();
    descriptor(
        vn_attrs,
        &format!("runtimes=\"{runtimes}\" askedNodes=\"{nodes}\""),
        "localRuntime",
        &format!(
            "<processDefinition id=\"localRuntime\"><jvmProcess>{command}</jvmProcess></processDefinition>"
        ),
        false,
    )
}

/// Inserts technical services into a descriptor made by the helpers:
/// `defs` go into `<technicalServices>`, and virtual node `Workers` lists
/// `ids`.
pub fn with_services(descriptor: &str, ids: &str, defs: &str) -> String {
    descriptor
        .replacen(
            "<virtualNode name=\"Workers\"",
            &format!("<virtualNode name=\"Workers\" technicalServiceId=\"{ids}\""),
            1,
        )
        .replacen(
            "</ProActiveDescriptor>",
            &format!("<technicalServices>{defs}</technicalServices>\n</ProActiveDescriptor>"),
            1,
        )
}

/// The `actogrid.Environment` service the cross-provider tests apply.
pub const SITE_SERVICE: &str = r#"<technicalServiceDefinition id="site" class="actogrid.Environment">
  <arg name="site" value="lab-b"/>
  <arg name="env.ACTOGRID_SITE" value="lab-b"/>
</technicalServiceDefinition>"#;

/// Whether process `pid` has `NAME=value` in its environment.
pub fn has_env(pid: u32, pair: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == pair.as_bytes()))
}

/// Checks that [`SITE_SERVICE`] took effect on every node of `vn` and in
/// every runtime of `deployment`.
pub fn assert_site_applied(deployment: &Deployment, vn: &actogrid::VirtualNode) {
    let nodes = vn.current_nodes();
    assert!(!nodes.is_empty());
    for node in &nodes {
        let props = vn.properties(node);
        assert_eq!(
            props.get("site").map(String::as_str),
            Some("lab-b"),
            "{}: {props:?}",
            node.url()
        );
        assert_eq!(
            props.get("env.ACTOGRID_SITE").map(String::as_str),
            Some("lab-b")
        );
    }
    for r in deployment.runtimes() {
        assert!(
            has_env(r.pid, "ACTOGRID_SITE=lab-b"),
            "runtime {} on {}",
            r.pid,
            r.host
        );
    }
}

/// A descriptor with one virtual node `Workers` (extra attributes
/// `vn_attrs`) mapped to one `jvm` (extra attributes `jvm_attrs`) created
/// by process `root`, with `processes` (the `processDefinition`s) and an
/// optional `<register virtualNode="Workers"/>`.
pub fn descriptor(
    vn_attrs: &str,
    jvm_attrs: &str,
    root: &str,
    processes: &str,
    register: bool,
) -> String {
    let register = if register {
        r#"<register virtualNode="Workers"/>"#
    } else {
        ""
    };
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Workers" property="multiple" {vn_attrs}/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    {register}
    <mapping><map virtualNode="Workers"><jvmSet><vmName value="set"/></jvmSet></map></mapping>
    <jvms>
      <jvm name="set" {jvm_attrs}><creation><processReference refid="{root}"/></creation></jvm>
    </jvms>
  </deployment>
  <infrastructure>
    <processes>
{processes}
    </processes>
  </infrastructure>
</ProActiveDescriptor>
"#
    )
}

/// The error `nodes()` of virtual node `Workers` ends with, and its text.
pub async fn nodes_error(deployment: &Deployment) -> (actogrid::DeployError, String) {
    let err = deployment
        .virtual_node("Workers")
        .expect("Workers")
        .nodes()
        .await
        .expect_err("nodes() should fail");
    let text = err.to_string();
    (err, text)
}

/// Creates an `Echo` on every node and pings it.
pub async fn ping_all(nodes: &[actogrid::Node]) {
    let group = actogrid::Group::create(nodes, |n, _| actogrid_builtin::EchoProxy::new(n))
        .await
        .expect("an Echo on every node");
    group
        .broadcast(|e| e.ping())
        .values()
        .await
        .expect("every node answers");
}

/// After a deployer was killed: waits (up to 15 s) until `left()` is
/// empty; kills what is still there, fails if anything was, and says how
/// long it took.
pub fn assert_all_exit(what: &str, left: impl Fn() -> Vec<u32>) {
    let start = Instant::now();
    while !left().is_empty() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let remaining = left();
    for p in &remaining {
        let _ = std::process::Command::new("kill")
            .args(["-9", &p.to_string()])
            .status();
    }
    assert!(
        remaining.is_empty(),
        "{what} outlived their deployer: {remaining:?}"
    );
    eprintln!(
        "{what} gone {:.1} s after SIGKILL",
        start.elapsed().as_secs_f64()
    );
}

/// One `actogrid peer` daemon, stopped when dropped.
pub struct PeerProcess {
    pub child: Child,
    pub address: String,
    log: Arc<Mutex<String>>,
}

impl PeerProcess {
    /// The command of a daemon lending `slots` slots, knowing `peers`,
    /// listening on `listen`, with pool passphrase `passphrase` (in its
    /// environment, never on its command line), quick upkeep, and `extra`
    /// options.
    pub fn command(
        work: &Path,
        listen: &str,
        slots: u32,
        peers: &[String],
        passphrase: &str,
        extra: &[&str],
    ) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_actogrid"));
        cmd.arg("peer")
            .args(["--listen", listen])
            .args(["--slots", &slots.to_string()])
            .args(["--noa", "3", "--ttl", "6", "--ttu", "300ms"])
            .args(["--answer-timeout", "1s", "--booking-expiry", "30s"])
            .arg("--work-dir")
            .arg(work)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove(actogrid::peer::PASSPHRASE_FILE_ENV)
            .env(actogrid::peer::PASSPHRASE_ENV, passphrase);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        cmd
    }

    /// Starts a daemon (see [`PeerProcess::command`]) and waits until it
    /// serves.
    pub fn start(
        work: &Path,
        listen: &str,
        slots: u32,
        peers: &[String],
        passphrase: &str,
        extra: &[&str],
    ) -> PeerProcess {
        PeerProcess::spawn(PeerProcess::command(
            work, listen, slots, peers, passphrase, extra,
        ))
    }

    /// Starts `cmd` (an `actogrid peer` command) and waits until it serves.
    pub fn spawn(mut cmd: Command) -> PeerProcess {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("actogrid peer starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("actogrid peer listening on ") {
                        break a.to_owned();
                    }
                }
                _ => {
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("the peer exited before serving: {}", log.lock().unwrap())
                }
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        PeerProcess {
            child,
            address,
            log,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Its dashboard's URL, as it printed it at start.
    #[allow(dead_code)] // not every test binary looks at it
    pub async fn dashboard_url(&self) -> String {
        assert!(
            self.logged("dashboard: http://", Duration::from_secs(10))
                .await,
            "the peer printed no dashboard URL: {}",
            self.log()
        );
        let log = self.log();
        let at = log.find("dashboard: http://").unwrap() + "dashboard: ".len();
        log[at..].lines().next().unwrap().trim().to_owned()
    }

    /// Waits (up to `limit`) until its log holds `text`.
    pub async fn logged(&self, text: &str, limit: Duration) -> bool {
        eventually(limit, || self.log().contains(text)).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    /// Stops it (SIGTERM, so that it takes down what it lends, even when a
    /// test failed), killing it after 10 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let start = Instant::now();
            while let Ok(None) = self.child.try_wait() {
                if start.elapsed() > Duration::from_secs(10) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}

/// A descriptor whose virtual node `Workers` (with the `site` technical
/// service when `site`) asks the overlay through `peers` for `asked`
/// nodes, within `timeout`.
pub fn p2p_descriptor(asked: &str, peers: &[&str], timeout: &str, site: bool) -> String {
    let peer_set: String = peers.iter().map(|p| format!("<peer>{p}</peer>")).collect();
    let (service_ref, services) = if site {
        (
            r#" technicalServiceId="site""#,
            format!("<technicalServices>{SITE_SERVICE}</technicalServices>"),
        )
    } else {
        ("", String::new())
    };
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesDefinition>
      <virtualNode name="Workers" property="multiple" timeout="{timeout}"{service_ref}/>
    </virtualNodesDefinition>
  </componentDefinition>
  <deployment>
    <mapping>
      <map virtualNode="Workers"><jvmSet><vmName value="lent"/></jvmSet></map>
    </mapping>
    <jvms>
      <jvm name="lent"><acquisition><serviceReference refid="overlay"/></acquisition></jvm>
    </jvms>
  </deployment>
  <infrastructure>
    <services>
      <serviceDefinition id="overlay">
        <P2PService nodesAsked="{asked}" NOA="3" TTU="300" TTL="6">
          <peerSet>{peer_set}</peerSet>
        </P2PService>
      </serviceDefinition>
    </services>
  </infrastructure>
  {services}
</ProActiveDescriptor>
"#
    )
}

/// What is left on this machine of the vessel that ran as `uid` in
/// `slot_dir`: its processes, a mount on its directory, the directory, a
/// process in its cgroups (which, empty, serve the identity's next vessel
/// while the daemon runs). Empty when it was taken down completely.
pub fn vessel_leftovers(uid: u32, slot_dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for pid in processes_of(uid) {
        left.push(format!("process {pid} of uid {uid}"));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = slot_dir.to_string_lossy();
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(dir.as_ref()))
    {
        left.push(format!("a mount on {dir}"));
    }
    if slot_dir.exists() {
        left.push(format!("the directory {dir}"));
    }
    for group in vessel_cgroups(uid) {
        let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap_or_default();
        if !procs.trim().is_empty() {
            left.push(format!("processes in the cgroup {}", group.display()));
        }
    }
    left
}

/// The cgroups (in any hierarchy) of the vessel identity of `uid`.
pub fn vessel_cgroups(uid: u32) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let name = format!("uid-{uid}");
    mounts
        .lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            if !tail.starts_with("cgroup") {
                return None;
            }
            let mount = head.split(' ').nth(4)?;
            let group = Path::new(mount).join("actogrid-vessels").join(&name);
            group.exists().then_some(group)
        })
        .collect()
}

/// The live processes whose real uid is `uid`.
pub fn processes_of(uid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid) && uid_of(*pid) == Some(uid))
        .collect()
}

/// The real uid of process `pid`.
pub fn uid_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether this test runs as root (the vessels' own users need it).
pub fn root() -> bool {
    uid_of(std::process::id()) == Some(0)
}

/// The `actogrid.FaultTolerance` service `ft`: PML, a checkpoint every
/// `ttc`, its store at `store`.
pub fn ft_service(store: &Path, ttc: &str) -> String {
    ft_service_by("pml", store, ttc)
}

/// [`ft_service`] with rollback-recovery protocol `protocol`.
pub fn ft_service_by(protocol: &str, store: &Path, ttc: &str) -> String {
    format!(
        r#"<technicalServiceDefinition id="ft" class="actogrid.FaultTolerance">
  <arg name="protocol" value="{protocol}"/>
  <arg name="ttc" value="{ttc}"/>
  <arg name="store" value="{}"/>
</technicalServiceDefinition>"#,
        store.display()
    )
}

/// Pushes values to `recorder` in windows of `window` calls in flight
/// until `stop` (and at least `least` of them), checking each reply (the
/// record's length: the value's place); returns the values pushed.
pub async fn push_all(
    recorder: actogrid_builtin::RecorderProxy,
    base: u64,
    least: u64,
    window: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<u64> {
    let mut pushed = Vec::new();
    let mut i = 0;
    while i < least || !stop.load(std::sync::atomic::Ordering::Acquire) {
        let calls: Vec<_> = (i..i + window).map(|k| recorder.push(base + k)).collect();
        for (k, call) in (i..i + window).zip(calls) {
            let got = tokio::time::timeout(Duration::from_secs(90), call)
                .await
                .unwrap_or_else(|_| panic!("push {k} of {base:#x} never answered"))
                .unwrap_or_else(|e| panic!("push {k} of {base:#x} failed: {e}"));
            assert_eq!(got, k + 1, "push {k} of {base:#x}: the reply is its place");
            pushed.push(base + k);
        }
        i += window;
    }
    pushed
}

/// Pushes to each of `recorders` as [`push_all`] does (the values of the
/// `i`-th from `(i + 1) << 32`), in tasks of their own.
pub fn push_to_each(
    recorders: &[actogrid_builtin::RecorderProxy],
    least: u64,
    window: u64,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<u64>>> {
    recorders
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let base = (i as u64 + 1) << 32;
            tokio::spawn(push_all(r.clone(), base, least, window, stop.clone()))
        })
        .collect()
}

/// Stops the pushers of [`push_to_each`] (`stop`), waits for them, and
/// checks that each of `recorders` holds exactly what was pushed to it, in
/// order: the record of a failure-free run. Returns how many values were
/// pushed.
pub async fn check_pushed(
    recorders: &[actogrid_builtin::RecorderProxy],
    work: Vec<tokio::task::JoinHandle<Vec<u64>>>,
    stop: &std::sync::atomic::AtomicBool,
) -> usize {
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut expected = Vec::new();
    for w in work {
        expected.push(w.await.expect("a pushing task"));
    }
    for (r, want) in recorders.iter().zip(&expected) {
        let seen = r.seen().await.unwrap();
        assert_eq!(seen.len(), want.len(), "a value lost or served twice");
        assert_eq!(&seen, want, "the record differs from a failure-free run");
    }
    expected.iter().map(Vec::len).sum()
}

/// The recoveries `events` saw, with how long each took; panics on a
/// failed one.
pub fn recoveries(
    events: &mut tokio::sync::broadcast::Receiver<actogrid::VnEvent>,
) -> std::collections::HashMap<u64, Duration> {
    recoveries_in(&drain(events))
}

/// The events received so far (skipping any missed).
#[allow(dead_code)] // not every test binary drains events
pub fn drain(
    events: &mut tokio::sync::broadcast::Receiver<actogrid::VnEvent>,
) -> Vec<actogrid::VnEvent> {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut all = Vec::new();
    loop {
        match events.try_recv() {
            Ok(e) => all.push(e),
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => return all,
        }
    }
}

/// The recoveries among `events`: how long each object's took. Panics
/// on a failed one.
pub fn recoveries_in(events: &[actogrid::VnEvent]) -> std::collections::HashMap<u64, Duration> {
    let mut recovered = std::collections::HashMap::new();
    for e in events {
        match e {
            actogrid::VnEvent::RecoveryFailed { object, error } => {
                panic!("object {object:#x} was not recovered: {error}")
            }
            actogrid::VnEvent::Recovered { object, took, .. } => {
                recovered.insert(*object, *took);
            }
            _ => {}
        }
    }
    recovered
}

/// Sends `signal` to `pid`, one of this test's runtimes.
#[allow(dead_code)] // not every test binary signals runtimes
pub fn signal(pid: u32, signal: rustix::process::Signal) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("a pid"),
        signal,
    );
}

/// SIGKILL to `pid`.
#[allow(dead_code)] // not every test binary kills runtimes
pub fn sigkill(pid: u32) {
    signal(pid, rustix::process::Signal::KILL);
}

/// Makes random runtimes of `d` fail: one killed (SIGKILL), one hung
/// (SIGSTOP: its process stays, silent, until the end), two killed at
/// once, one killed and one more while the objects of that one recover;
/// returns their pids (all killed in the end).
#[allow(dead_code)] // not every test binary makes chaos
pub async fn chaos(d: &Deployment) -> Vec<u32> {
    let mut killed = Vec::new();
    let mut hung = None;
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let at_once = if round == 2 { 2 } else { 1 };
        for _ in 0..at_once {
            let live = alive_but(d, &killed);
            assert!(live.len() > 2, "too few runtimes left: {live:?}");
            let pid = live[fastrand::usize(..live.len())];
            if round == 1 {
                signal(pid, rustix::process::Signal::STOP);
                hung = Some(pid);
            } else {
                sigkill(pid);
            }
            killed.push(pid);
        }
        if round == 3 {
            // The runtime's death is seen at once (its process exits):
            // its objects are being recovered now.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let live = alive_but(d, &killed);
            let pid = live[fastrand::usize(..live.len())];
            sigkill(pid);
            killed.push(pid);
        }
    }
    if let Some(pid) = hung {
        sigkill(pid);
    }
    killed
}

/// The pids of `d`'s runtimes, but those in `killed`.
fn alive_but(d: &Deployment, killed: &[u32]) -> Vec<u32> {
    (d.runtimes().iter())
        .map(|r| r.pid)
        .filter(|p| !killed.contains(p))
        .collect()
}

/// With `RUST_LOG` set, the test's log and the virtual node's events on
/// stderr (`--nocapture`): how to read a failing run.
#[allow(dead_code)] // not every test binary traces
pub fn trace(vn: &actogrid::VirtualNode) {
    if std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut events = vn.events();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            eprintln!("event: {e:?}");
        }
    });
}
