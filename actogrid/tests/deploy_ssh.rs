//! Deployments over ssh to real sshd hosts in network namespaces (the
//! hosts of `scripts/testbed/ssh-hosts`): three hosts at once, a host
//! refusing authentication, a host becoming unreachable mid-deployment,
//! the deployer killed with SIGKILL (nothing of it left once the lease has
//! run out: runtimes, ssh masters, control directories, a pending job on a
//! front-end and its files), a chain ssh → SLURM, and MPI runs
//! (`dependentProcessSequence` + `mpiProcess`, with Open MPI's `mpicc` and
//! `mpirun`) over the hosts and in a SLURM allocation. Skipped unless
//! `ACTOGRID_TEST_SSH=1` (and `ACTOGRID_TEST_SLURM=1` for SLURM).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actogrid::{DeployOptions, Deployment, VnEvent};
use actogrid_builtin::EchoProxy;
use support::{TempDir, eventually, runtime};

const SSH_CONFIG: &str = "/run/actogrid-testbed/ssh/ssh_config";

fn testbed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed/ssh-hosts")
}

/// The tests share three hosts and inject faults on them: one at a time.
static HOSTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn enabled() -> bool {
    if std::env::var("ACTOGRID_TEST_SSH").as_deref() != Ok("1") {
        eprintln!("skipped: set ACTOGRID_TEST_SSH=1 (scripts/test does)");
        return false;
    }
    let up = Command::new(testbed())
        .args(["up", "3"])
        // A private /tmp and /root per host: a shipped binary is only where
        // it was shipped, and nothing lands in this machine's.
        .env("AG_TESTBED_SSH_PRIVATE_DIRS", "/tmp /root")
        .status()
        .expect("ssh-hosts up");
    assert!(up.success(), "the ssh hosts did not come up");
    true
}

/// Injects a fault on a host; undoes it when dropped, whatever happens.
struct Fault {
    host: &'static str,
    undo: &'static str,
}

impl Fault {
    fn inject(host: &'static str, action: &'static str, undo: &'static str) -> Fault {
        let ok = Command::new(testbed())
            .args(["fault", host, action])
            .status()
            .expect("ssh-hosts fault");
        assert!(ok.success(), "cannot inject {action} on {host}");
        Fault { host, undo }
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        let _ = Command::new(testbed())
            .args(["fault", self.host, self.undo])
            .status();
    }
}

/// Processes of this machine (every namespace host shares its process
/// table) whose environment carries `mark`.
fn marked_processes(mark: &str) -> Vec<u32> {
    let needle = format!("ACTOGRID_TEST_MARK={mark}");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|b| *b == 0).any(|v| v == needle.as_bytes())
            && support::alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

fn mark() -> String {
    format!("{}-{}", std::process::id(), fastrand::u64(..))
}

/// A descriptor: virtual node `Workers` on `hosts` over ssh, `runtimes`
/// runtimes per host, each marked with `mark` in its environment.
fn ssh_descriptor(hosts: &str, runtimes: u32, vn_attrs: &str, mark: &str) -> String {
    support::descriptor(
        vn_attrs,
        &format!("runtimes=\"{runtimes}\""),
        "toHosts",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess>
              <environment><variable name="ACTOGRID_TEST_MARK" value="{mark}"/></environment>
            </jvmProcess></processDefinition>
            <processDefinition id="toHosts">
              <processListbyHost hostlist="{hosts}"><processReference refid="runtime"/></processListbyHost>
            </processDefinition>"#
        ),
        false,
    )
}

fn options(rt: &actogrid::Runtime) -> DeployOptions {
    DeployOptions {
        ssh_config: Some(PathBuf::from(SSH_CONFIG)),
        connect_timeout: Duration::from_secs(5),
        ..support::options(rt)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_on_three_hosts_answer_and_leave_nothing_behind() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let dir = TempDir::new("ssh-three");
    let mark = mark();
    let path = dir.write(
        "d.xml",
        &ssh_descriptor("agh1 agh2 agh3", 2, "timeout=\"60s\"", &mark),
    );
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    let nodes = d.virtual_node("Workers").unwrap().nodes().await.unwrap();
    assert_eq!(nodes.len(), 6);
    support::ping_all(&nodes).await;
    let mut hosts: Vec<String> = d.runtimes().iter().map(|r| r.host.clone()).collect();
    hosts.sort();
    assert_eq!(hosts, ["agh1", "agh1", "agh2", "agh2", "agh3", "agh3"]);
    let mut providers: Vec<String> = d.status().await.virtual_nodes[0]
        .runtimes
        .iter()
        .map(|r| r.provider.clone())
        .collect();
    providers.sort();
    assert_eq!(
        providers,
        [
            "ssh agh1", "ssh agh1", "ssh agh2", "ssh agh2", "ssh agh3", "ssh agh3"
        ]
    );
    // Runtimes advertise their own host's address, not the deployer's.
    for node in &nodes {
        assert!(node.url().host().starts_with("10.213.7."), "{}", node.url());
    }
    assert_eq!(marked_processes(&mark).len(), 6);
    // The masters' control directories are in the deployment's cleanup
    // directory, which a normal teardown removes with the masters.
    let cleanup = std::env::temp_dir()
        .read_dir()
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("actogrid-{}.", std::process::id()))
            })
        })
        .expect("the deployment's cleanup directory");
    // One per host and copy of the chain (`runtimes="2"`).
    assert_eq!(masters_below(&cleanup).len(), 6);
    d.kill().await;
    assert!(!cleanup.exists(), "{} left behind", cleanup.display());
    assert!(masters_below(&cleanup).is_empty());
    assert!(
        eventually(Duration::from_secs(10), || marked_processes(&mark)
            .is_empty())
        .await,
        "left behind: {:?}",
        marked_processes(&mark)
    );
    rt.shutdown();
}

/// A descriptor of the rsh years: one host by `rshProcess`, one by
/// `rloginProcess`, one by an rsh process list, two by `maprshProcess`.
/// actogrid starts all of them over ssh, with the same host and user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsh_and_rlogin_declared_hosts_are_reached_over_ssh() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let dir = TempDir::new("ssh-rsh");
    let mark = mark();
    let text = support::descriptor(
        "timeout=\"60s\"",
        "",
        "viaRsh",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess>
              <environment><variable name="ACTOGRID_TEST_MARK" value="{mark}"/></environment>
            </jvmProcess></processDefinition>
            <processDefinition id="viaRsh">
              <independentProcessSequence>
                <processReference refid="rsh"/>
                <processReference refid="rlogin"/>
                <processReference refid="rshList"/>
                <processReference refid="maprsh"/>
              </independentProcessSequence>
            </processDefinition>
            <processDefinition id="rsh">
              <rshProcess class="org.objectweb.proactive.core.process.rsh.RSHProcess" hostname="agh1" username="root">
                <processReference refid="runtime"/>
              </rshProcess>
            </processDefinition>
            <processDefinition id="rlogin">
              <rloginProcess class="org.objectweb.proactive.core.process.rlogin.RLoginProcess" hostname="agh2">
                <processReference refid="runtime"/>
              </rloginProcess>
            </processDefinition>
            <processDefinition id="rshList">
              <processListbyHost class="org.objectweb.proactive.core.process.rsh.RSHProcessList" hostlist="agh3">
                <processReference refid="runtime"/>
              </processListbyHost>
            </processDefinition>
            <processDefinition id="maprsh">
              <maprshProcess class="org.objectweb.proactive.core.process.rsh.maprsh.MapRshProcess" hostname="agh1 agh3" parallelize="true">
                <processReference refid="runtime"/>
              </maprshProcess>
            </processDefinition>"#
        ),
        false,
    );
    let path = dir.write("d.xml", &text);
    let checked = actogrid::check_descriptor(&path, &Default::default());
    let said = checked.diagnostics.render(&checked.sources);
    assert!(
        said.contains("warning[rsh-over-ssh]: 4 rsh/rlogin processes run over ssh"),
        "{said}"
    );
    let (rt, d) = deployed_on(&path, &["agh1", "agh1", "agh2", "agh3", "agh3"], &mark).await;
    killed_leaving_nothing(rt, d, &mark).await;
}

/// Deploys `path`, whose runtimes carry `mark`: every node answers, and
/// the runtimes are on `hosts` (sorted).
async fn deployed_on(path: &Path, hosts: &[&str], mark: &str) -> (actogrid::Runtime, Deployment) {
    let rt = runtime().await;
    let d = Deployment::load_with(path, Default::default(), options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    let nodes = d.virtual_node("Workers").unwrap().nodes().await.unwrap();
    assert_eq!(nodes.len(), hosts.len());
    support::ping_all(&nodes).await;
    let mut on: Vec<String> = d.runtimes().iter().map(|r| r.host.clone()).collect();
    on.sort();
    assert_eq!(on, hosts);
    assert_eq!(marked_processes(mark).len(), hosts.len());
    (rt, d)
}

/// Ends `d`: no process carrying `mark` is left.
async fn killed_leaving_nothing(rt: actogrid::Runtime, d: Deployment, mark: &str) {
    d.kill().await;
    assert!(
        eventually(Duration::from_secs(10), || marked_processes(mark)
            .is_empty())
        .await,
        "left behind: {:?}",
        marked_processes(mark)
    );
    rt.shutdown();
}

/// ssh → ssh → runtime: the second host is logged in to through the
/// first, and its runtimes register and answer like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_chain_reaches_the_second_host_through_the_first() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let dir = TempDir::new("ssh-chain");
    let mark = mark();
    let text = support::descriptor(
        "timeout=\"60s\"",
        "",
        "gateway",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess>
              <environment><variable name="ACTOGRID_TEST_MARK" value="{mark}"/></environment>
            </jvmProcess></processDefinition>
            <processDefinition id="gateway">
              <sshProcess hostname="agh1"><processReference refid="inner"/></sshProcess>
            </processDefinition>
            <processDefinition id="inner">
              <processListbyHost hostlist="agh2 agh3"><processReference refid="runtime"/></processListbyHost>
            </processDefinition>"#
        ),
        false,
    );
    let path = dir.write("d.xml", &text);
    let (rt, d) = deployed_on(&path, &["agh2", "agh3"], &mark).await;
    // The second hop goes through agh1: the masters of agh2 and agh3 hold
    // their connection through an `ssh -W … agh1` of their own.
    let through_agh1 = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"ssh"))
                && args.contains(&b"-W".as_slice())
                && args.contains(&b"agh1".as_slice())
        })
        .count();
    assert!(through_agh1 >= 2, "{through_agh1} hops through agh1");
    killed_leaving_nothing(rt, d, &mark).await;
}

/// The value of `name` in the environment of process `pid`.
fn environment_of(pid: u32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    env.split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Virtual node `Workers` on `inner` hosts, reached from agh1 as the
/// front-end (relay on 10.213.7.2); runtimes and relay marked with `mark`.
fn hierarchical_descriptor(inner: &str, mark: &str) -> String {
    support::descriptor(
        "timeout=\"60s\"",
        "",
        "gateway",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess>
              <environment><variable name="ACTOGRID_TEST_MARK" value="{mark}"/></environment>
            </jvmProcess></processDefinition>
            <processDefinition id="forwarder"><jvmProcess>
              <environment><variable name="ACTOGRID_TEST_MARK" value="{mark}"/></environment>
            </jvmProcess></processDefinition>
            <processDefinition id="gateway">
              <hierarchicalProcess class="org.objectweb.proactive.core.process.ssh.SSHHierarchicalProcess"
                  hostname="agh1" internal_ip="10.213.7.2">
                <processReference refid="forwarder"/>
                <hierarchicalReference refid="inner"/>
              </hierarchicalProcess>
            </processDefinition>
            <processDefinition id="inner">
              <processListbyHost hostlist="{inner}"><processReference refid="runtime"/></processListbyHost>
            </processDefinition>"#
        ),
        false,
    )
}

/// A descriptor of two virtual nodes, each `(name, process)` deployed by
/// its process, out of the process definitions `processes`.
fn two_virtual_nodes(a: (&str, &str), b: (&str, &str), processes: &str) -> String {
    let vns: String = [a, b]
        .iter()
        .map(|(vn, _)| format!(r#"<virtualNode name="{vn}" property="multiple" timeout="120s"/>"#))
        .collect();
    let maps: String = [a, b]
        .iter()
        .map(|(vn, _)| {
            format!(r#"<map virtualNode="{vn}"><jvmSet><vmName value="{vn}"/></jvmSet></map>"#)
        })
        .collect();
    let jvms: String = [a, b]
        .iter()
        .map(|(vn, p)| {
            format!(
                r#"<jvm name="{vn}"><creation><processReference refid="{p}"/></creation></jvm>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0"?>
<ProActiveDescriptor>
  <componentDefinition><virtualNodesDefinition>{vns}</virtualNodesDefinition></componentDefinition>
  <deployment><mapping>{maps}</mapping><jvms>{jvms}</jvms></deployment>
  <infrastructure><processes>{processes}</processes></infrastructure>
</ProActiveDescriptor>
"#
    )
}

/// hierarchicalProcess: agh3 is behind agh1 (agh3 and this machine cannot
/// reach each other). The deployer logs in to agh1, starts the relay
/// there, and reaches agh2 and agh3 from it; their runtimes register
/// through the relay and answer calls, and nothing is left at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hierarchical_deployment_reaches_hosts_behind_a_front_end() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let _behind = Fault::inject("agh3", "behind", "restore");
    let dir = TempDir::new("hierarchical");
    let mark = mark();
    let text = hierarchical_descriptor("agh2 agh3", &mark);
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    let nodes = d.virtual_node("Workers").unwrap().nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    support::ping_all(&nodes).await;
    let mut on: Vec<String> = d.runtimes().iter().map(|r| r.host.clone()).collect();
    on.sort();
    assert_eq!(on, ["agh2", "agh3"]);
    // Two runtimes and the relay; the runtimes were told the relay only.
    let marked = marked_processes(&mark);
    assert_eq!(marked.len(), 3, "{marked:?}");
    let told: Vec<String> = marked
        .iter()
        .filter_map(|p| environment_of(*p, "ACTOGRID_DEPLOYER"))
        .collect();
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(
        told.iter().all(|t| t.starts_with("actogrid://10.213.7.2:")),
        "{told:?}"
    );
    // The runtime behind the gateway serves calls again and again.
    let behind = d
        .runtimes()
        .iter()
        .find(|r| r.host == "agh3")
        .map(|r| r.pid)
        .unwrap();
    assert!(support::alive(behind));
    for node in &nodes {
        let echo = EchoProxy::new(node).await.unwrap();
        for i in 0..20u8 {
            assert_eq!(echo.echo(vec![i; 1000]).await.unwrap(), vec![i; 1000]);
        }
    }
    killed_leaving_nothing(rt, d, &mark).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_refusing_authentication_and_one_lost_midway_spare_the_others() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let dir = TempDir::new("ssh-faults");
    let mark = mark();
    let path = dir.write(
        "d.xml",
        &ssh_descriptor(
            "agh1 agh2 agh3",
            1,
            "timeout=\"60s\" minNodeNumber=\"2\"",
            &mark,
        ),
    );
    let refused = Fault::inject("agh3", "refuse-auth", "allow-auth");
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    let vn = d.virtual_node("Workers").unwrap();
    let mut events = vn.events();
    d.activate().await.unwrap();
    let nodes = vn.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    let failures = vn.failures().join("\n");
    assert!(failures.contains("agh3"), "{failures}");
    assert!(failures.contains("authentication refused"), "{failures}");
    drop(refused);

    // agh2 vanishes from the network: its node leaves, agh1's stays.
    let agh2 = d
        .runtimes()
        .into_iter()
        .find(|r| r.host == "agh2")
        .expect("a runtime on agh2");
    let lost = Fault::inject("agh2", "blackhole", "restore");
    let started = Instant::now();
    let left = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(VnEvent::Left { node, reason }) => return (node, reason),
                Ok(_) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("agh2's node left within 30 s");
    assert_eq!(left.0.url(), &agh2.nodes[0]);
    eprintln!(
        "agh2 noticed gone after {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        left.1
    );
    let survivors = vn.current_nodes();
    assert_eq!(survivors.len(), 1);
    EchoProxy::new(&survivors[0])
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    // The runtime cut off on agh2 exits on its own: its lease ran out.
    assert!(
        eventually(Duration::from_secs(15), || !support::alive(agh2.pid)).await,
        "the runtime on agh2 outlived its lease"
    );
    drop(lost);
    d.kill().await;
    assert!(
        eventually(Duration::from_secs(10), || marked_processes(&mark)
            .is_empty())
        .await
    );
    rt.shutdown();
}

#[test]
fn a_deployer_killed_with_sigkill_leaves_no_runtime_on_any_host() {
    let _hosts = HOSTS.blocking_lock();
    if !enabled() {
        return;
    }
    let mark = mark();
    let text = ssh_descriptor("agh1 agh2 agh3", 1, "", &mark);
    killed_deployer_leaves_nothing(&text, &mark, 3, 3);
}

/// The same behind a front-end: the relay on agh1 goes too.
#[test]
fn a_deployer_killed_with_sigkill_leaves_nothing_behind_a_front_end() {
    let _hosts = HOSTS.blocking_lock();
    if !enabled() {
        return;
    }
    let _behind = Fault::inject("agh3", "behind", "restore");
    let mark = mark();
    let text = hierarchical_descriptor("agh2 agh3", &mark);
    // Two runtimes and the relay; a master for agh1, agh2 and agh3.
    killed_deployer_leaves_nothing(&text, &mark, 2, 3);
}

/// Deploys `text` with `actogrid deploy` as a process of its own, waits for
/// its `nodes` nodes and `masters` ssh masters, kills it with SIGKILL, and
/// checks that nothing carrying `mark` nor any master is left.
fn killed_deployer_leaves_nothing(text: &str, mark: &str, nodes: usize, masters: usize) {
    let dir = TempDir::new("ssh-sigkill");
    let path = dir.write("d.xml", text);
    // The deployer's reaper and ssh masters live in a directory of this
    // test: nothing of them may be left there, nor any master running.
    let short = support::short_temp_dir();
    let tmp = short.0.clone();
    let _masters = Masters(tmp.clone());
    let mut deployer = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["deploy", "--no-progress", "--lease-ms", "3000"])
        .arg(&path)
        .env("ACTOGRID_SSH_CONFIG", SSH_CONFIG)
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(deployer.stdout.take().unwrap()).lines();
    let mut deployer = support::Killed(deployer);
    let deployer = &mut deployer.0;
    for _ in 0..nodes {
        let line = lines.next().expect("a node URL").unwrap();
        assert!(line.starts_with("Workers\tactogrid://10.213.7."), "{line}");
    }
    assert_eq!(
        masters_below(&tmp).len(),
        masters,
        "one ssh master per host"
    );
    assert!(!marked_processes(mark).is_empty());
    deployer.kill().unwrap();
    deployer.wait().unwrap();
    let killed = Instant::now();
    support::assert_all_exit("runtimes", || marked_processes(mark));
    assert_reaped(&tmp, killed);
}

/// Stops the ssh masters whose control sockets are below a directory of
/// a test, if any is left (the test then fails: none should be).
struct Masters(PathBuf);

impl Drop for Masters {
    fn drop(&mut self) {
        for pid in masters_below(&self.0) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// The ssh masters (`ssh … -S DIR/… -M`) whose control sockets are below
/// `dir`.
fn masters_below(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_master = args.first().is_some_and(|a| a.ends_with("ssh"))
            && args.iter().any(|a| a == "-M")
            && args.iter().any(|a| a.starts_with(&needle));
        if is_master && support::alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// After a deployer whose temporary directory is `tmp` was killed at
/// `killed`: waits (30 s at most) until its reaper has stopped its ssh
/// masters and emptied the directory, and says how long it took.
fn assert_reaped(tmp: &Path, killed: Instant) {
    let left = || {
        let files: Vec<String> = std::fs::read_dir(tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        (files, masters_below(tmp))
    };
    while left() != (Vec::new(), Vec::new()) && killed.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (files, masters) = left();
    assert!(
        masters.is_empty(),
        "ssh masters outlived the lease: {masters:?}"
    );
    assert!(
        files.is_empty(),
        "left in the temporary directory: {files:?}"
    );
    eprintln!(
        "ssh masters stopped and control directories removed {:.1} s after SIGKILL (lease 3 s)",
        killed.elapsed().as_secs_f64()
    );
}

/// Forwards SLURM's controller port into a host's namespace, so that
/// `sbatch` run there reaches the controller of this machine (on a real
/// cluster the front-end reaches it over the network).
struct SlurmForward(std::process::Child, Option<std::process::Child>);

impl SlurmForward {
    fn into(host: &str) -> SlurmForward {
        let child = Command::new("ip")
            .args(["netns", "exec", host, "socat"])
            .args([
                "TCP-LISTEN:6817,bind=127.0.0.1,fork,reuseaddr",
                "TCP:10.213.7.1:6817",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("socat");
        std::thread::sleep(Duration::from_millis(200));
        SlurmForward(child, None)
    }
}

impl SlurmForward {
    /// The same for a host that reaches this machine only through `via`:
    /// a second forward on `via`'s address carries it there.
    fn through(host: &str, via: &str) -> SlurmForward {
        let at = address_of(via);
        let relay = Command::new("ip")
            .args(["netns", "exec", via, "socat"])
            .arg(format!("TCP-LISTEN:16817,bind={at},fork,reuseaddr"))
            .arg("TCP:10.213.7.1:6817")
            .stdin(Stdio::null())
            .spawn()
            .expect("socat");
        let inner = Command::new("ip")
            .args(["netns", "exec", host, "socat"])
            .arg("TCP-LISTEN:6817,bind=127.0.0.1,fork,reuseaddr")
            .arg(format!("TCP:{at}:16817"))
            .stdin(Stdio::null())
            .spawn()
            .expect("socat");
        std::thread::sleep(Duration::from_millis(200));
        SlurmForward(inner, Some(relay))
    }
}

/// A testbed host's address (`agh1` is 10.213.7.2).
fn address_of(host: &str) -> String {
    let n: u8 = host
        .trim_start_matches("agh")
        .parse()
        .expect("an aghN host");
    format!("10.213.7.{}", n + 1)
}

/// A host name for [`Fault`], which keeps `'static` names.
fn leak(host: &str) -> &'static str {
    Box::leak(host.to_owned().into_boxed_str())
}

impl Drop for SlurmForward {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.0).chain(self.1.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_ssh_then_slurm_submits_on_the_front_end() {
    ssh_then_slurm(&["agh1"], false).await;
}

/// ssh → ssh → SLURM: the front-end is reached through a gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_ssh_ssh_then_slurm_submits_on_the_front_end_behind_the_first() {
    ssh_then_slurm(&["agh1", "agh2"], false).await;
}

/// hierarchicalProcess → ssh → SLURM: agh3, which this machine cannot
/// reach (nor it this machine), is logged in to through the gateway agh1
/// and submits the job; the job's runtimes reach the deployer through the
/// relay on agh1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_behind_a_gateway_reaches_the_deployer_through_its_relay() {
    ssh_then_slurm(&["agh1", "agh3"], true).await;
}

/// A chain of ssh processes to `hops`, the last one a front-end where a
/// SLURM job starts two runtimes: they answer, and end with the deployment.
/// `relayed`: the first hop is a hierarchicalProcess, whose relay the
/// job's runtimes are told to reach the deployer at, and the hosts after
/// it cannot reach this machine (nor it them).
async fn ssh_then_slurm(hops: &[&str], relayed: bool) {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    if std::env::var("ACTOGRID_TEST_SLURM").as_deref() != Ok("1") {
        eprintln!("skipped: the chain also needs ACTOGRID_TEST_SLURM=1");
        return;
    }
    let front_end = hops[hops.len() - 1];
    let _forward = if relayed {
        SlurmForward::through(front_end, hops[0])
    } else {
        SlurmForward::into(front_end)
    };
    let _behind: Vec<Fault> = if relayed {
        hops[1..]
            .iter()
            .map(|h| Fault::inject(leak(h), "behind", "restore"))
            .collect()
    } else {
        Vec::new()
    };
    // Job files go where the front-end and the compute node both see them
    // (as a shared home would be on a cluster).
    let shared = PathBuf::from(format!(
        "/var/tmp/actogrid-test-chain-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&shared).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(shared.clone());
    let program = env!("CARGO_BIN_EXE_actogrid");
    // frontEnd → hop1 → … → job: each ssh process reaches the next host.
    let mut chain = String::new();
    for (i, host) in hops.iter().enumerate() {
        let id = match i {
            0 => "frontEnd".to_owned(),
            _ => format!("hop{i}"),
        };
        let next = if i + 1 == hops.len() {
            "job".to_owned()
        } else {
            format!("hop{}", i + 1)
        };
        if relayed && i == 0 {
            let ip = address_of(host);
            chain.push_str(&format!(
                r#"<processDefinition id="{id}"><hierarchicalProcess hostname="{host}" internal_ip="{ip}">
                  <processReference refid="forwarder"/><hierarchicalReference refid="{next}"/>
                  </hierarchicalProcess></processDefinition>
                  <processDefinition id="forwarder"><jvmProcess/></processDefinition>"#
            ));
            continue;
        }
        chain.push_str(&format!(
            r#"<processDefinition id="{id}"><sshProcess hostname="{host}">
              <processReference refid="{next}"/></sshProcess></processDefinition>"#
        ));
    }
    let text = support::descriptor(
        "timeout=\"60s\"",
        "",
        "frontEnd",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess><commandPath value="{program}"/></jvmProcess></processDefinition>
            <processDefinition id="job">
              <slurmProcess>
                <processReference refid="runtime"/>
                <slurmOption><nodes>1</nodes><tasksPerNode>2</tasksPerNode></slurmOption>
              </slurmProcess>
            </processDefinition>
            {chain}"#
        ),
        false,
    );
    let dir = TempDir::new("ssh-slurm");
    let path = dir.write("chain.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(
        &path,
        Default::default(),
        DeployOptions {
            work_dir: shared.join("jobs").display().to_string(),
            ..options(&rt)
        },
    )
    .await
    .unwrap();
    d.activate().await.unwrap();
    let nodes = d.virtual_node("Workers").unwrap().nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    support::ping_all(&nodes).await;
    let jobs = d.jobs();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].0.contains(front_end), "{jobs:?}");
    let pids: Vec<u32> = d.runtimes().iter().map(|r| r.pid).collect();
    if relayed {
        let relay = format!("actogrid://{}:", address_of(hops[0]));
        for pid in &pids {
            let told = environment_of(*pid, "ACTOGRID_DEPLOYER").unwrap_or_default();
            assert!(told.starts_with(&relay), "{pid}: {told}");
        }
    }
    d.kill().await;
    assert!(
        eventually(Duration::from_secs(15), || pids
            .iter()
            .all(|p| !support::alive(*p)))
        .await
    );
    rt.shutdown();
}

#[test]
fn a_deployer_killed_with_a_pending_job_on_a_front_end_leaves_nothing_there() {
    let _hosts = HOSTS.blocking_lock();
    if !enabled() {
        return;
    }
    if std::env::var("ACTOGRID_TEST_SLURM").as_deref() != Ok("1") {
        eprintln!("skipped: the chain also needs ACTOGRID_TEST_SLURM=1");
        return;
    }
    let _forward = SlurmForward::into("agh1");
    let dir = TempDir::new("ssh-slurm-sigkill");
    let process = format!("pending{}", fastrand::u32(..));
    let program = env!("CARGO_BIN_EXE_actogrid");
    let text = support::descriptor(
        "timeout=\"300s\"",
        "",
        "frontEnd",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess><commandPath value="{program}"/></jvmProcess></processDefinition>
            <processDefinition id="{process}">
              <slurmProcess>
                <processReference refid="runtime"/>
                <slurmOption><nodes>1</nodes><extraOptions>--begin=now+1hour</extraOptions></slurmOption>
              </slurmProcess>
            </processDefinition>
            <processDefinition id="frontEnd">
              <sshProcess hostname="agh1"><processReference refid="{process}"/></sshProcess>
            </processDefinition>"#
        ),
        false,
    );
    let path = dir.write("chain.xml", &text);
    let short = support::short_temp_dir();
    let tmp = short.0.clone();
    let _masters = Masters(tmp.clone());
    let deployer = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["deploy", "--no-progress", "--lease-ms", "3000"])
        .arg(&path)
        .env("ACTOGRID_SSH_CONFIG", SSH_CONFIG)
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut deployer = support::Killed(deployer);
    let deployer = &mut deployer.0;
    let name = format!("actogrid-Workers-{process}");
    let job_dir = format!("/root/.cache/actogrid/jobs/{name}-{}", deployer.id());
    let queued = || {
        let out = Command::new("squeue")
            .args(["-h", "-t", "all", "-n", &name, "-o", "%i %T"])
            .output()
            .expect("squeue");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let started = Instant::now();
    while !queued().contains("PENDING") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job was never submitted on agh1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let job = queued().split_whitespace().next().unwrap().to_owned();
    assert_eq!(
        ssh_run("agh1", &format!("test -d {job_dir} && echo yes")),
        "yes"
    );
    deployer.kill().unwrap(); // SIGKILL
    deployer.wait().unwrap();
    let killed = Instant::now();
    let gone = || {
        let q = queued();
        q.is_empty() || q.ends_with("CANCELLED")
    };
    while !gone() && killed.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !gone() {
        let _ = Command::new("scancel").arg(&job).status();
        panic!("the pending job outlived its deployer: {}", queued());
    }
    assert_reaped(&tmp, killed);
    assert_eq!(
        ssh_run("agh1", &format!("test -e {job_dir} || echo gone")),
        "gone",
        "the job directory is left on agh1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technical_service_applies_on_ssh_created_nodes_as_on_local_ones() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let dir = TempDir::new("ssh-service");
    let text = support::with_services(
        &ssh_descriptor("agh1 agh2 agh3", 1, "timeout=\"60s\"", &mark()),
        "site",
        support::SITE_SERVICE,
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    let vn = d.virtual_node("Workers").unwrap();
    assert_eq!(vn.nodes().await.unwrap().len(), 3);
    support::assert_site_applied(&d, &vn);
    d.kill().await;
    rt.shutdown();
}

/// Fault tolerance on ssh hosts: objects on six runtimes of three hosts
/// keep their exact record while one runtime is killed, a whole host drops
/// off the network (its two runtimes silent at once: their missed
/// heartbeats tell), another runtime is killed while those recover, and
/// one more: five failures, every object ending on the one runtime left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_objects_survive_a_host_going_down() {
    objects_survive_a_host_going_down("pml").await;
}

/// The same with CIC: every failure rolls the whole group back to its
/// recovery line (the members of live runtimes in place, those of the
/// failed runtime on the node given instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cic_group_survives_a_host_going_down() {
    objects_survive_a_host_going_down("cic").await;
}

async fn objects_survive_a_host_going_down(protocol: &str) {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let dir = TempDir::new(&format!("ssh-ft-{protocol}"));
    let mark = mark();
    let text = support::with_services(
        &ssh_descriptor("agh1 agh2 agh3", 2, "timeout=\"60s\"", &mark),
        "ft",
        &support::ft_service_by(protocol, &dir.0.join("ft.redb"), "500ms"),
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    let vn = d.virtual_node("Workers").unwrap();
    let nodes = vn.nodes().await.unwrap();
    assert_eq!(nodes.len(), 6);
    assert_eq!(
        vn.properties(&nodes[0])
            .get("ft.protocol")
            .map(String::as_str),
        Some(protocol)
    );
    let mut events = vn.events();
    support::trace(&vn);
    let mut recorders = Vec::new();
    for node in &nodes {
        recorders.push(actogrid_builtin::RecorderProxy::new(node).await.unwrap());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let work = support::push_to_each(&recorders, 100, 4, &stop);
    let on = |host: &str| -> Vec<u32> {
        d.runtimes()
            .iter()
            .filter(|r| r.host == host)
            .map(|r| r.pid)
            .collect()
    };
    let kill = |pid: u32| {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    };
    let (agh1, agh3) = (on("agh1"), on("agh3"));
    assert_eq!((agh1.len(), agh3.len()), (2, 2));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    kill(agh1[0]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let down = Fault::inject("agh2", "blackhole", "restore");
    let started = Instant::now();
    // Killed while agh2's runtimes are being declared dead and their
    // objects recovered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill(agh3[0]);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    kill(agh1[1]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pushed = support::check_pushed(&recorders, work, &stop).await;
    let recovered = support::recoveries(&mut events);
    eprintln!(
        "{} recovery(ies) (agh2 down for {:.1} s), {pushed} pushes",
        recovered.len(),
        started.elapsed().as_secs_f64(),
    );
    // Three runtimes killed, two on the host gone: every object they
    // held (those recovered onto a runtime killed later, twice). With CIC
    // every member rolls back at each failure, but only those moved off
    // the failed runtime are told recovered: the same five at least.
    assert!(recovered.len() >= 5, "{recovered:?}");
    drop(down);
    d.kill().await;
    assert!(
        eventually(Duration::from_secs(15), || marked_processes(&mark)
            .is_empty())
        .await,
        "runtimes left behind"
    );
    rt.shutdown();
}

fn ssh_run(host: &str, command: &str) -> String {
    let out = Command::new("ssh")
        .args(["-F", SSH_CONFIG, host, command])
        .output()
        .expect("ssh");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_deployed_before_the_runtimes_and_retrieved_at_the_end() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let dir = TempDir::new("ssh-files");
    let src = dir.0.join("campaign");
    std::fs::create_dir_all(src.join("fields")).unwrap();
    std::fs::write(src.join("model.toml"), "x = 1\n").unwrap();
    std::fs::write(src.join("fields/a.nc"), "field a\n").unwrap();
    std::fs::write(src.join("fields/b.partial"), "half\n").unwrap();
    let remote = format!("/tmp/actogrid-ft-{}", mark());
    let back = dir.0.join("back");
    let text = support::descriptor(
        "timeout=\"60s\" fileTransferDeploy=\"inputs\" fileTransferRetrieve=\"inputs\"",
        "",
        "toHost",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
            <processDefinition id="toHost">
              <sshProcess hostname="agh1">
                <processReference refid="runtime"/>
                <fileTransferDeploy refid="implicit">
                  <sourceInfo prefix="{src}"/>
                  <destinationInfo prefix="{remote}"/>
                </fileTransferDeploy>
                <fileTransferRetrieve refid="implicit">
                  <sourceInfo prefix="{remote}"/>
                  <destinationInfo prefix="{back}"/>
                </fileTransferRetrieve>
              </sshProcess>
            </processDefinition>"#,
            src = src.display(),
            back = back.display(),
        ),
        false,
    )
    .replace(
        "<infrastructure>",
        r#"<fileTransferDefinitions>
             <fileTransfer id="inputs">
               <file src="model.toml"/>
               <dir src="fields" dest="fields" excludes="*.partial"/>
             </fileTransfer>
           </fileTransferDefinitions>
           <infrastructure>"#,
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    assert_eq!(
        d.virtual_node("Workers")
            .unwrap()
            .nodes()
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        ssh_run("agh1", &format!("cat {remote}/model.toml")),
        "x = 1"
    );
    assert_eq!(ssh_run("agh1", &format!("ls {remote}/fields")), "a.nc");
    d.kill().await;
    assert_eq!(
        std::fs::read_to_string(back.join("model.toml")).unwrap(),
        "x = 1\n"
    );
    assert_eq!(
        std::fs::read_to_string(back.join("fields/a.nc")).unwrap(),
        "field a\n"
    );
    assert!(!back.join("fields/b.partial").exists());
    ssh_run("agh1", &format!("rm -rf {remote}"));
    rt.shutdown();
}

/// The MPI programs of the MPI tests, built with `mpicc` in a directory of
/// `/var/tmp` (every host sees it), removed when dropped.
struct MpiPrograms(PathBuf);

/// Every rank sends its host name to rank 0 and adds its rank number with
/// `MPI_Reduce`; rank 0 prints the sum and the hosts. The program exits
/// with the status given at build time (`-DSTATUS=3`), rank 0 only.
const MPI_SUM: &str = r#"
#include <mpi.h>
#include <stdio.h>
#ifndef STATUS
#define STATUS 0
#endif
int main(int argc, char **argv) {
    int rank, size, sum = 0, len;
    char name[MPI_MAX_PROCESSOR_NAME] = {0};
    static char all[64][MPI_MAX_PROCESSOR_NAME];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_processor_name(name, &len);
    MPI_Gather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, rank == 0 ? all : NULL,
               MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0, MPI_COMM_WORLD);
    MPI_Reduce(&rank, &sum, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("ranks=%d sum=%d\n", size, sum);
        for (int i = 0; i < size && i < 64; i++) printf("rank %d on %s\n", i, all[i]);
        fflush(stdout);
    }
    MPI_Finalize();
    return rank == 0 ? STATUS : 0;
}
"#;

impl MpiPrograms {
    /// Builds `sum` (exits 0) and `fail` (rank 0 exits 3).
    fn build() -> MpiPrograms {
        let dir = PathBuf::from(format!(
            "/var/tmp/actogrid-test-mpi-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let programs = MpiPrograms(dir);
        let source = programs.0.join("sum.c");
        std::fs::write(&source, MPI_SUM).unwrap();
        for (name, status) in [("sum", 0), ("fail", 3)] {
            let built = Command::new("mpicc")
                .arg(format!("-DSTATUS={status}"))
                .arg("-o")
                .arg(programs.0.join(name))
                .arg(&source)
                .status()
                .expect("mpicc: install openmpi-bin and libopenmpi-dev (scripts/test does)");
            assert!(built.success(), "mpicc could not build {name}");
        }
        programs
    }
}

impl Drop for MpiPrograms {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `mpirun` options of the testbed: as root, over its network only, tcp
/// between hosts (each namespace host is a host of its own), launched
/// from this machine (no tree of ssh hops between the hosts).
const MPIRUN_OPTIONS: &str = "--allow-run-as-root --mca btl tcp,self \
    --mca btl_tcp_if_include 10.213.7.0/24 --mca oob_tcp_if_include 10.213.7.0/24 \
    --mca plm_rsh_no_tree_spawn 1";

/// A `dependentProcessSequence` `{id}`: `booking`, then mpiProcess
/// `{id}Mpi` running `program` of `dir` with `np` processes (`None`: one
/// per booked slot).
fn mpi_sequence(id: &str, booking: &str, dir: &Path, program: &str, np: Option<u32>) -> String {
    mpi_sequence_with(id, booking, dir, program, np, MPIRUN_OPTIONS)
}

/// [`mpi_sequence`] with `options` as `mpiCommandOptions`.
fn mpi_sequence_with(
    id: &str,
    booking: &str,
    dir: &Path,
    program: &str,
    np: Option<u32>,
    options: &str,
) -> String {
    let np = np
        .map(|n| format!("<processNumber>{n}</processNumber>"))
        .unwrap_or_default();
    format!(
        r#"<processDefinition id="{id}"><dependentProcessSequence>
             <processReference refid="{booking}"/><processReference refid="{id}Mpi"/>
           </dependentProcessSequence></processDefinition>
           <processDefinition id="{id}Mpi">
             <mpiProcess mpiFileName="{program}" mpiCommandOptions="{options}">
               <commandPath value="mpirun"/>
               <mpiOptions>{np}<remoteAbsolutePath><absolutePath value="{dir}"/></remoteAbsolutePath></mpiOptions>
             </mpiProcess>
           </processDefinition>"#,
        dir = dir.display()
    )
}

/// processListbyHost books agh1..agh3, then mpirun (here) runs 3 ranks
/// over them: the sum of the ranks and their hosts come back, with status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpi_over_three_ssh_hosts_sums_the_ranks() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let programs = MpiPrograms::build();
    let text = support::descriptor(
        "timeout=\"120s\"",
        "",
        "sumRun",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
            <processDefinition id="labHosts">
              <processListbyHost hostlist="agh1 agh2 agh3"><processReference refid="runtime"/></processListbyHost>
            </processDefinition>
            {}"#,
            mpi_sequence("sumRun", "labHosts", &programs.0, "sum", Some(3))
        ),
        false,
    );
    let dir = TempDir::new("ssh-mpi");
    let path = dir.write("mpi.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    let vn = d.virtual_node("Workers").unwrap();
    let mut events = vn.events();
    d.activate().await.unwrap();
    let runs = tokio::time::timeout(Duration::from_secs(150), d.wait_mpi_runs())
        .await
        .expect("the MPI run ends within its timeout");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert!(
        run.success(),
        "{run}\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert_eq!(run.code, Some(0));
    assert_eq!(run.process, "sumRunMpi");
    assert_eq!(run.hosts, ["agh1", "agh2", "agh3"]);
    assert!(run.stdout.contains("ranks=3 sum=3"), "{}", run.stdout);
    for host in ["agh1", "agh2", "agh3"] {
        assert!(
            run.stdout.contains(&format!(" on {host}\n")),
            "no rank on {host}: {}",
            run.stdout
        );
    }
    assert!(run.command.contains("-np 3"), "{}", run.command);
    // The run is announced, and is no failure.
    let mut announced = false;
    while let Ok(event) = events.try_recv() {
        match event {
            VnEvent::MpiEnded(o) => announced = o.success(),
            VnEvent::Failed { error, .. } => panic!("unexpected failure: {error}"),
            _ => {}
        }
    }
    assert!(announced, "no MpiEnded event");
    assert!(vn.failures().is_empty(), "{:?}", vn.failures());
    assert_eq!(d.mpi_runs().len(), 1);
    d.kill().await;
    rt.shutdown();
}

/// A program whose rank 0 exits 3, and a program that does not exist: each
/// run reports its non-zero status and output, and fails its virtual node
/// with a message naming the process and the hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpi_failing_and_missing_programs_are_reported() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let programs = MpiPrograms::build();
    let processes = format!(
        r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
        <processDefinition id="twoHosts">
          <processListbyHost hostlist="agh1 agh2"><processReference refid="runtime"/></processListbyHost>
        </processDefinition>
        {}
        {}"#,
        mpi_sequence("failing", "twoHosts", &programs.0, "fail", None),
        mpi_sequence("missing", "twoHosts", &programs.0, "no-such-program", None),
    );
    let text = two_virtual_nodes(("Failing", "failing"), ("Missing", "missing"), &processes);
    let dir = TempDir::new("ssh-mpi-fail");
    let path = dir.write("mpi.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    let runs = tokio::time::timeout(Duration::from_secs(150), d.wait_mpi_runs())
        .await
        .expect("the MPI runs end within their timeout");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let failing = runs.iter().find(|r| r.process == "failingMpi").unwrap();
    assert!(!failing.success());
    assert_eq!(failing.code, Some(3), "{failing}\n{}", failing.stderr);
    assert!(failing.error.is_none(), "{failing}");
    // It ran and printed before failing.
    assert!(
        failing.stdout.contains("ranks=2 sum=1"),
        "{}",
        failing.stdout
    );
    let missing = runs.iter().find(|r| r.process == "missingMpi").unwrap();
    assert!(!missing.success());
    assert!(
        missing.code.is_some_and(|c| c != 0),
        "{missing}\n{}",
        missing.stderr
    );
    assert!(
        missing.stderr.contains("no-such-program"),
        "mpirun names the program: {}",
        missing.stderr
    );
    for (vn, process) in [("Failing", "failingMpi"), ("Missing", "missingMpi")] {
        let failures = d.virtual_node(vn).unwrap().failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        let f = &failures[0];
        assert!(
            f.contains(&format!("mpiProcess `{process}`"))
                && f.contains("over agh1 agh2")
                && f.contains("status"),
            "{f}"
        );
    }
    assert!(
        failing.to_string().contains("mpirun exited with status 3"),
        "{failing}"
    );
    d.kill().await;
    rt.shutdown();
}

/// ssh to the front-end agh1, where slurmProcess books 1 node × 2 tasks
/// and the job runs mpirun over its allocation: 2 ranks (one per booked
/// slot) sum to 1; the job is listed while it runs and its files are gone
/// afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpi_inside_a_slurm_allocation_sums_the_ranks() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    if std::env::var("ACTOGRID_TEST_SLURM").as_deref() != Ok("1") {
        eprintln!("skipped: the SLURM allocation also needs ACTOGRID_TEST_SLURM=1");
        return;
    }
    let _forward = SlurmForward::into("agh1");
    let programs = MpiPrograms::build();
    let jobs_dir = programs.0.join("jobs");
    let text = support::descriptor(
        "timeout=\"120s\"",
        "",
        "frontEnd",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
            <processDefinition id="frontEnd">
              <sshProcess hostname="agh1"><processReference refid="sumJob"/></sshProcess>
            </processDefinition>
            <processDefinition id="allocation">
              <slurmProcess>
                <processReference refid="runtime"/>
                <slurmOption><nodes>1</nodes><tasksPerNode>2</tasksPerNode><walltime>00:02:00</walltime></slurmOption>
              </slurmProcess>
            </processDefinition>
            {}"#,
            mpi_sequence("sumJob", "allocation", &programs.0, "sum", None)
        ),
        false,
    );
    let dir = TempDir::new("ssh-slurm-mpi");
    let path = dir.write("mpi.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(
        &path,
        Default::default(),
        DeployOptions {
            work_dir: jobs_dir.display().to_string(),
            ..options(&rt)
        },
    )
    .await
    .unwrap();
    d.activate().await.unwrap();
    let runs = tokio::time::timeout(Duration::from_secs(150), d.wait_mpi_runs())
        .await
        .expect("the MPI job ends within its timeout");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert!(
        run.success(),
        "{run}\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert_eq!(run.place, "agh1");
    assert!(run.job.is_some(), "{run}");
    assert!(run.stdout.contains("ranks=2 sum=1"), "{}", run.stdout);
    assert_eq!(
        run.hosts.len(),
        2,
        "one entry per booked slot: {:?}",
        run.hosts
    );
    // The job ended: nothing left to cancel, and its files are gone.
    assert!(d.jobs().is_empty(), "{:?}", d.jobs());
    let left: Vec<_> = std::fs::read_dir(&jobs_dir)
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "job files left: {left:?}");
    d.kill().await;
    rt.shutdown();
}

/// Processes (of any host: they share this machine's process table) whose
/// command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(needle)
            && support::alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// A "program" (mpirun runs any executable) that sleeps with a duration
/// of its own, by which its processes are found; returns that duration.
fn slow_program(programs: &MpiPrograms) -> String {
    let seconds = format!("299.{}", fastrand::u32(100_000..999_999));
    let path = programs.0.join("slow");
    std::fs::write(&path, format!("#!/bin/sh\nexec sleep {seconds}\n")).unwrap();
    let status = Command::new("chmod")
        .arg("755")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    seconds
}

/// A run that outlives its virtual node's timeout is stopped: mpirun and
/// its ranks on every host are gone, and the outcome says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpi_run_outliving_its_timeout_is_stopped_on_every_host() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let programs = MpiPrograms::build();
    let seconds = slow_program(&programs);
    let text = support::descriptor(
        "timeout=\"4s\"",
        "",
        "slowRun",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
            <processDefinition id="twoHosts">
              <processListbyHost hostlist="agh1 agh2"><processReference refid="runtime"/></processListbyHost>
            </processDefinition>
            {}"#,
            mpi_sequence("slowRun", "twoHosts", &programs.0, "slow", None)
        ),
        false,
    );
    let dir = TempDir::new("ssh-mpi-slow");
    let path = dir.write("mpi.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    let started = Instant::now();
    d.activate().await.unwrap();
    let runs = tokio::time::timeout(Duration::from_secs(60), d.wait_mpi_runs())
        .await
        .expect("the run is stopped at its timeout");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert!(!run.success());
    assert!(
        run.error
            .as_deref()
            .is_some_and(|e| e.contains("did not end within 4 s")),
        "{run}"
    );
    assert!(
        eventually(Duration::from_secs(20), || processes_with(&seconds)
            .is_empty())
        .await,
        "ranks left: {:?}",
        processes_with(&seconds)
    );
    let failures = d.virtual_node("Workers").unwrap().failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    d.kill().await;
    rt.shutdown();
}

/// Ending the deployment while mpirun runs stops it and its ranks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpi_run_is_stopped_when_the_deployment_ends() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let programs = MpiPrograms::build();
    let seconds = slow_program(&programs);
    let text = support::descriptor(
        "timeout=\"120s\"",
        "",
        "slowRun",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
            <processDefinition id="twoHosts">
              <processListbyHost hostlist="agh2 agh3"><processReference refid="runtime"/></processListbyHost>
            </processDefinition>
            {}"#,
            mpi_sequence("slowRun", "twoHosts", &programs.0, "slow", None)
        ),
        false,
    );
    let dir = TempDir::new("ssh-mpi-end");
    let path = dir.write("mpi.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || processes_with(&seconds).len()
            >= 2)
        .await,
        "the ranks never started"
    );
    // mpirun's host file is in the run's own directory.
    let program = programs.0.join("slow").display().to_string();
    let run_dir = processes_with(&program)
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .find_map(|cmdline| {
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let at = args.iter().position(|a| a == "--hostfile")?;
            Path::new(args.get(at + 1)?).parent().map(Path::to_path_buf)
        })
        .expect("mpirun and its host file");
    assert!(run_dir.is_dir(), "{}", run_dir.display());
    d.kill().await;
    assert!(
        eventually(Duration::from_secs(20), || processes_with(&seconds)
            .is_empty())
        .await,
        "ranks left: {:?}",
        processes_with(&seconds)
    );
    assert!(
        eventually(Duration::from_secs(10), || processes_with(&program)
            .is_empty())
        .await,
        "mpirun left: {:?}",
        processes_with(&program)
    );
    assert!(
        eventually(Duration::from_secs(10), || !run_dir.exists()).await,
        "{} left",
        run_dir.display()
    );
    rt.shutdown();
}

/// Ending the deployment while its MPI job runs cancels the job (its ranks
/// go with it) and removes the job's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpi_job_is_cancelled_when_the_deployment_ends() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    if std::env::var("ACTOGRID_TEST_SLURM").as_deref() != Ok("1") {
        eprintln!("skipped: the SLURM allocation also needs ACTOGRID_TEST_SLURM=1");
        return;
    }
    let _forward = SlurmForward::into("agh1");
    let programs = MpiPrograms::build();
    let seconds = slow_program(&programs);
    let jobs_dir = programs.0.join("jobs");
    let text = support::descriptor(
        "timeout=\"120s\"",
        "",
        "frontEnd",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
            <processDefinition id="frontEnd">
              <sshProcess hostname="agh1"><processReference refid="slowJob"/></sshProcess>
            </processDefinition>
            <processDefinition id="allocation">
              <slurmProcess>
                <processReference refid="runtime"/>
                <slurmOption><nodes>1</nodes><tasksPerNode>2</tasksPerNode></slurmOption>
              </slurmProcess>
            </processDefinition>
            {}"#,
            mpi_sequence("slowJob", "allocation", &programs.0, "slow", None)
        ),
        false,
    );
    let dir = TempDir::new("ssh-slurm-mpi-end");
    let path = dir.write("mpi.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(
        &path,
        Default::default(),
        DeployOptions {
            work_dir: jobs_dir.display().to_string(),
            ..options(&rt)
        },
    )
    .await
    .unwrap();
    d.activate().await.unwrap();
    assert!(
        eventually(Duration::from_secs(60), || processes_with(&seconds).len()
            >= 2)
        .await,
        "the ranks never started"
    );
    let jobs = d.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = jobs[0].1.clone();
    d.kill().await;
    assert!(
        eventually(Duration::from_secs(30), || processes_with(&seconds)
            .is_empty())
        .await,
        "ranks left: {:?}",
        processes_with(&seconds)
    );
    let state = || {
        let out = Command::new("squeue")
            .args(["-h", "-t", "all", "-j", &job, "-o", "%T"])
            .output()
            .expect("squeue");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(
        eventually(Duration::from_secs(30), || state().is_empty()
            || state() == "CANCELLED")
        .await,
        "job {job} is {}",
        state()
    );
    let left: Vec<_> = std::fs::read_dir(&jobs_dir)
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "job files left: {left:?}");
    rt.shutdown();
}

/// `actogrid deploy` of MPI runs only: prints what mpirun printed and how
/// each run ended, then exits by itself, with status 1 as one run failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpi_runs_from_the_command_line_print_their_output_and_status() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let programs = MpiPrograms::build();
    let processes = format!(
        r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
        <processDefinition id="threeHosts">
          <processListbyHost hostlist="agh1 agh2 agh3"><processReference refid="runtime"/></processListbyHost>
        </processDefinition>
        {}
        {}"#,
        mpi_sequence("summing", "threeHosts", &programs.0, "sum", None),
        mpi_sequence("failing", "threeHosts", &programs.0, "fail", Some(2)),
    );
    let text = two_virtual_nodes(("Sum", "summing"), ("Fail", "failing"), &processes);
    let dir = TempDir::new("ssh-mpi-cli");
    let path = dir.write("mpi.xml", &text);
    let deploy = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["deploy", "--no-progress"])
        .arg(&path)
        .env("ACTOGRID_SSH_CONFIG", SSH_CONFIG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut deploy = support::Killed(deploy);
    let started = Instant::now();
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            text
        })
    };
    let stdout = read(deploy.0.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(deploy.0.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        if let Some(status) = deploy.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "actogrid deploy did not end by itself"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // One slot per host: 3 ranks; the failing one with -np 2.
    assert!(stdout.contains("ranks=3 sum=3"), "{stdout}");
    assert!(stdout.contains("ranks=2 sum=1"), "{stdout}");
    assert!(
        stderr.contains("Sum: mpiProcess `summingMpi` (sequence `summing`) on localhost over agh1 agh2 agh3: mpirun exited with status 0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Fail: mpiProcess `failingMpi`")
            && stderr.contains("mpirun exited with status 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: 1 of 2 MPI run(s) failed"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// ssh to agh1, where a host list books agh2 and agh3: mpirun runs on
/// agh1 (the launcher there is told the testbed's ssh configuration by
/// the descriptor: this machine's is not used on another host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpi_from_a_front_end_over_hosts_behind_it() {
    let _hosts = HOSTS.lock().await;
    if !enabled() {
        return;
    }
    let programs = MpiPrograms::build();
    let mpirun_options = format!("{MPIRUN_OPTIONS} --mca plm_rsh_agent 'ssh -F {SSH_CONFIG}'");
    let text = support::descriptor(
        "timeout=\"120s\"",
        "",
        "frontEnd",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
            <processDefinition id="frontEnd">
              <sshProcess hostname="agh1"><processReference refid="sumRun"/></sshProcess>
            </processDefinition>
            <processDefinition id="behind">
              <processListbyHost hostlist="agh2 agh3"><processReference refid="runtime"/></processListbyHost>
            </processDefinition>
            {}"#,
            mpi_sequence_with(
                "sumRun",
                "behind",
                &programs.0,
                "sum",
                None,
                &mpirun_options
            )
        ),
        false,
    );
    let dir = TempDir::new("ssh-mpi-front");
    let path = dir.write("mpi.xml", &text);
    let rt = runtime().await;
    let d = Deployment::load_with(&path, Default::default(), options(&rt))
        .await
        .unwrap();
    d.activate().await.unwrap();
    let runs = tokio::time::timeout(Duration::from_secs(150), d.wait_mpi_runs())
        .await
        .expect("the MPI run ends within its timeout");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert!(
        run.success(),
        "{run}\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert_eq!(run.place, "agh1");
    assert!(run.stdout.contains("ranks=2 sum=1"), "{}", run.stdout);
    for host in ["agh2", "agh3"] {
        assert!(
            run.stdout.contains(&format!(" on {host}\n")),
            "{}",
            run.stdout
        );
    }
    // Its directory on agh1 is gone.
    assert_eq!(
        ssh_run("agh1", "ls -d /tmp/actogrid-mpi.* 2>/dev/null | wc -l"),
        "0"
    );
    d.kill().await;
    rt.shutdown();
}
