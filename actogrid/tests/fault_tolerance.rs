//! Fault tolerance switched on in the descriptor, on real local runtimes
//! killed with SIGKILL: every protected object comes back on another node
//! with exactly the state of a failure-free run, and every caller's future
//! resolves with the right value.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actogrid::{Deployment, Proxy as _, VnEvent};
use actogrid_builtin::{AccountProxy, RecorderProxy, TellerProxy, WorkerProxy};
use support::{
    TempDir, alive, chaos, check_pushed, ft_service, ft_service_by, load, local_descriptor,
    push_to_each, recoveries, runtime, sigkill, signal, trace, with_services,
};

/// `runtimes` local runtimes of one node each, protected by PML with a
/// checkpoint every `ttc`, the store in `dir`.
fn protected(dir: &TempDir, runtimes: u32, ttc: &str) -> String {
    protected_by("pml", dir, runtimes, ttc)
}

/// [`protected`] by rollback-recovery protocol `protocol`.
fn protected_by(protocol: &str, dir: &TempDir, runtimes: u32, ttc: &str) -> String {
    with_services(
        &local_descriptor(runtimes, 1, "timeout=\"60s\"", None),
        "ft",
        &ft_service_by(protocol, &dir.0.join("ft.redb"), ttc),
    )
}

/// A deployment of `text` (in `dir`) from a runtime of this test,
/// activated, with its virtual node `Workers`, that node's nodes, and its
/// events from then on.
struct Deployed {
    rt: actogrid::Runtime,
    d: Deployment,
    vn: actogrid::VirtualNode,
    nodes: Vec<actogrid::Node>,
    events: tokio::sync::broadcast::Receiver<VnEvent>,
}

async fn deploy(dir: &TempDir, text: &str) -> Deployed {
    let path = dir.write("d.xml", text);
    let rt = runtime().await;
    let d = load(&rt, &path, &[]).await;
    d.activate().await.unwrap();
    let vn = d.virtual_node("Workers").unwrap();
    let nodes = vn.nodes().await.unwrap();
    let events = vn.events();
    trace(&vn);
    Deployed {
        rt,
        d,
        vn,
        nodes,
        events,
    }
}

impl Deployed {
    /// The pid of the runtime hosting `node`.
    fn pid_of(&self, node: &actogrid::NodeUrl) -> u32 {
        self.d
            .runtimes()
            .into_iter()
            .find(|r| r.nodes.contains(node))
            .unwrap_or_else(|| panic!("no runtime hosts {node}"))
            .pid
    }

    /// Tears it down.
    async fn end(self) {
        self.d.kill().await;
        self.rt.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_objects_survive_their_runtimes_being_killed() {
    objects_survive_chaos("pml").await;
}

/// The same with CIC: every failure rolls the whole group back to its
/// recovery line (the objects of live runtimes in place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cic_group_survives_its_runtimes_being_killed() {
    objects_survive_chaos("cic").await;
}

/// Six objects on six runtimes of eight, values pushed to each while
/// runtimes are killed ([`chaos`]): every object's record is exactly that
/// of a failure-free run.
async fn objects_survive_chaos(protocol: &str) {
    let dir = TempDir::new(&format!("ft-chaos-{protocol}"));
    let mut run = deploy(&dir, &protected_by(protocol, &dir, 8, "300ms")).await;
    let (vn, nodes) = (&run.vn, &run.nodes);
    assert_eq!(nodes.len(), 8);
    assert_eq!(
        vn.properties(&nodes[0])
            .get("ft.protocol")
            .map(String::as_str),
        Some(protocol)
    );

    // Six objects on six runtimes.
    let mut recorders = Vec::new();
    for node in &nodes[..6] {
        recorders.push(RecorderProxy::new(node).await.unwrap());
    }
    let done = Arc::new(AtomicBool::new(false));
    let work = push_to_each(&recorders, 200, 8, &done);

    let started = Instant::now();
    let killed = chaos(&run.d).await;
    // Exactly the record of a failure-free run: every value once, in order.
    let pushed = check_pushed(&recorders, work, &done).await;
    let pushing = started.elapsed();
    let recovered = recoveries(&mut run.events);
    eprintln!(
        "{} kill(s) ({killed:?}), {} recovery(ies), {pushed} pushes to {} objects in {pushing:?}",
        killed.len(),
        recovered.len(),
        recorders.len()
    );
    assert!(killed.iter().all(|p| !alive(*p)));
    assert!(!recovered.is_empty(), "no recovery was observed");
    run.end().await;
}

/// Tellers moving money between accounts (objects whose requests call
/// other protected objects) while runtimes are killed: the money adds up,
/// and every transfer is in the ledgers of its two accounts exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_between_protected_objects_happen_exactly_once() {
    transfers_survive_chaos("pml").await;
}

/// The same with CIC, whose tellers and accounts roll back together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_in_a_cic_group_happen_exactly_once() {
    transfers_survive_chaos("cic").await;
}

async fn transfers_survive_chaos(protocol: &str) {
    let dir = TempDir::new(&format!("ft-bank-{protocol}"));
    let mut run = deploy(&dir, &protected_by(protocol, &dir, 8, "300ms")).await;
    let nodes = &run.nodes;
    const ACCOUNTS: usize = 4;
    const START: i64 = 1_000;
    let mut accounts = Vec::new();
    for node in &nodes[..ACCOUNTS] {
        accounts.push(AccountProxy::new(node, START).await.unwrap());
    }
    let done = Arc::new(AtomicBool::new(false));
    let mut work = Vec::new();
    for (t, node) in nodes[ACCOUNTS..ACCOUNTS + 2].iter().enumerate() {
        let teller = TellerProxy::new(node).await.unwrap();
        let (accounts, done) = (accounts.clone(), done.clone());
        work.push(tokio::spawn(async move {
            let mut made = Vec::new();
            let mut k = 0u64;
            while k < 50 || !done.load(Ordering::Acquire) {
                let batch: Vec<_> = (k..k + 4)
                    .map(|k| {
                        let id = ((t as u64 + 1) << 32) | k;
                        let from = fastrand::usize(..ACCOUNTS);
                        let to = (from + 1 + fastrand::usize(..ACCOUNTS - 1)) % ACCOUNTS;
                        let amount = 1 + (k % 7) as i64;
                        let call = teller.transfer(
                            id,
                            accounts[from].clone(),
                            accounts[to].clone(),
                            amount,
                        );
                        (k, id, from, to, amount, call)
                    })
                    .collect();
                for (k, id, from, to, amount, call) in batch {
                    let n = tokio::time::timeout(Duration::from_secs(90), call)
                        .await
                        .unwrap_or_else(|_| panic!("transfer {id:#x} never answered"))
                        .unwrap_or_else(|e| panic!("transfer {id:#x} failed: {e}"));
                    assert_eq!(n, k + 1, "transfer {id:#x}: the teller's count");
                    made.push((id, from, to, amount));
                }
                k += 4;
            }
            made
        }));
    }
    let killed = chaos(&run.d).await;
    done.store(true, Ordering::Release);
    let mut transfers = Vec::new();
    for w in work {
        transfers.extend(w.await.expect("a teller's task"));
    }
    // What a failure-free run leaves: each transfer once in each of its
    // two ledgers.
    let mut want: Vec<Vec<(u64, i64)>> = vec![Vec::new(); ACCOUNTS];
    for (id, from, to, amount) in &transfers {
        want[*from].push((*id, -amount));
        want[*to].push((*id, *amount));
    }
    let mut total = 0;
    for (i, a) in accounts.iter().enumerate() {
        let mut ledger = a.ledger().await.unwrap();
        ledger.sort_unstable();
        want[i].sort_unstable();
        assert_eq!(
            ledger, want[i],
            "account {i}: its ledger differs from a failure-free run"
        );
        let balance = a.balance().await.unwrap();
        assert_eq!(balance, START + want[i].iter().map(|(_, a)| a).sum::<i64>());
        total += balance;
    }
    assert_eq!(total, START * ACCOUNTS as i64, "money was made or lost");
    let recovered = recoveries(&mut run.events);
    eprintln!(
        "{} kill(s), {} recovery(ies), {} transfers",
        killed.len(),
        recovered.len(),
        transfers.len()
    );
    assert!(!recovered.is_empty(), "no recovery was observed");
    run.end().await;
}

/// Fault tolerance and load balancing on one virtual node: the balancer
/// moves busy protected objects to other nodes (the FT server follows
/// them), then a runtime that received some is killed, and they recover
/// with every request served once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balanced_objects_recover_where_they_moved() {
    let dir = TempDir::new("ft-lb");
    let defs = format!(
        r#"<technicalServiceDefinition id="one-core" class="actogrid.Environment"><arg name="capacity" value="1"/></technicalServiceDefinition>
      <technicalServiceDefinition id="lb" class="actogrid.LoadBalancing"><arg name="period" value="100"/></technicalServiceDefinition>
      {}"#,
        ft_service(&dir.0.join("ft.redb"), "200ms")
    );
    let text = with_services(
        &local_descriptor(4, 1, "timeout=\"60s\"", None),
        "one-core lb ft",
        &defs,
    );
    let mut run = deploy(&dir, &text).await;
    let nodes = &run.nodes;
    // Six busy objects, all on the first node.
    let recorders: Vec<RecorderProxy> =
        actogrid::wait_all((0..6).map(|_| RecorderProxy::new(&nodes[0])))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let first_pid = recorders[0].pid().await.unwrap();
    let push = |values: std::ops::Range<u64>| {
        let mut pending = Vec::new();
        for value in values {
            for r in &recorders {
                pending.push(r.push_after(20, value));
            }
        }
        pending
    };
    for (i, result) in actogrid::wait_all(push(0..40))
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(result.unwrap(), (i / 6) as u64 + 1, "reply {i}");
    }
    let mut moved = Vec::new();
    for r in &recorders {
        let pid = r.pid().await.unwrap();
        if pid != first_pid && !moved.contains(&pid) {
            moved.push(pid);
        }
    }
    assert!(!moved.is_empty(), "no object moved");
    // More work; meanwhile a runtime that took objects dies.
    let pending = push(40..60);
    tokio::time::sleep(Duration::from_millis(100)).await;
    sigkill(moved[0]);
    for (i, result) in actogrid::wait_all(pending).await.into_iter().enumerate() {
        assert_eq!(
            result.unwrap(),
            (i / 6) as u64 + 41,
            "reply {i} after the kill"
        );
    }
    for r in &recorders {
        assert_eq!(r.seen().await.unwrap(), (0..60).collect::<Vec<u64>>());
    }
    // The timeline has it all: the load balancer's moves from the first
    // node, checkpoints (summed up every ten checkpoint periods, 2 s
    // here), the recoveries.
    let ids: Vec<u64> = recorders
        .iter()
        .map(|r| actogrid::Proxy::active_ref(r).id())
        .collect();
    let mut events = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10)
        && !events
            .iter()
            .any(|e| matches!(e, VnEvent::Checkpointed { .. }))
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        events.extend(support::drain(&mut run.events));
    }
    let from_first = nodes[0].url().to_string();
    let migrated = events
        .iter()
        .filter(|e| {
            matches!(e, VnEvent::Migrated { object, from, to, .. }
                if ids.contains(object) && *from == from_first && *to != from_first)
        })
        .count();
    assert!(migrated > 0, "no move from the first node: {events:?}");
    assert!(
        events.iter().any(
            |e| matches!(e, VnEvent::Checkpointed { checkpoints, bytes, .. }
            if *checkpoints > 0 && *bytes > 0)
        ),
        "no checkpoint summed up: {events:?}"
    );
    let recovered = support::recoveries_in(&events);
    assert!(!recovered.is_empty(), "no recovery was observed");
    run.end().await;
}

/// A future passed as an argument to a protected object that dies while
/// awaiting it: the caller sends the request again where the object
/// recovered, and the value follows it there, so the call ends as in a
/// failure-free run. Once with the value still to come when the request
/// is served again, once with it (most likely) already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_future_argument_reaches_the_recovered_object() {
    let dir = TempDir::new("ft-future");
    let mut run = deploy(&dir, &protected(&dir, 4, "200ms")).await;
    let account = AccountProxy::new(&run.nodes[0], 10).await.unwrap();
    // Unprotected, in this process: never killed.
    let producer = WorkerProxy::new(&run.rt.local_node("producer"), "producer".into())
        .await
        .unwrap();
    assert_eq!(account.balance().await.unwrap(), 10);
    let mut home = run.nodes[0].url().clone();
    for (id, after_ms) in [(1u64, 2_500), (2, 400)] {
        let amount = producer.slow(after_ms, 5);
        let applied = account.apply_when(id, amount);
        tokio::time::sleep(Duration::from_millis(300)).await;
        sigkill(run.pid_of(&home));
        let balance = tokio::time::timeout(Duration::from_secs(30), applied)
            .await
            .expect("the call was answered")
            .unwrap_or_else(|e| panic!("transfer {id}: {e}"));
        assert_eq!(balance, 10 + 5 * id as i64, "transfer {id}");
        home = loop {
            match run.events.recv().await.expect("the virtual node's events") {
                VnEvent::Recovered { object, node, .. } if object == account.active_ref().id() => {
                    break node.url().clone();
                }
                VnEvent::RecoveryFailed { object, error } => {
                    panic!("object {object:#x} was not recovered: {error}")
                }
                _ => {}
            }
        };
    }
    assert_eq!(account.apply(3, 1).await.unwrap(), 21);
    assert_eq!(
        account.ledger().await.unwrap(),
        vec![(1, 5), (2, 5), (3, 1)]
    );
    run.end().await;
}

/// Random numbers drawn by protected objects through journaled effects
/// (some awaiting, `journaled_async`): a recovery that serves a request
/// again appends the number first drawn for it, so every record is exactly
/// the numbers its caller was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journaled_effects_are_given_back_by_a_recovery() {
    let dir = TempDir::new("ft-journal");
    // Checkpoints rare: recoveries serve long logs again.
    let mut run = deploy(&dir, &protected(&dir, 6, "1h")).await;
    let nodes = &run.nodes;
    let mut recorders = Vec::new();
    for node in &nodes[..3] {
        recorders.push(RecorderProxy::new(node).await.unwrap());
    }
    let done = Arc::new(AtomicBool::new(false));
    let work: Vec<_> = recorders
        .iter()
        .map(|r| {
            let (r, done) = (r.clone(), done.clone());
            tokio::spawn(async move {
                let mut given = Vec::new();
                while given.len() < 40 || !done.load(Ordering::Acquire) {
                    // Effects that await and effects that do not.
                    let calls: Vec<_> = (0..4)
                        .map(|k| {
                            if k % 2 == 0 {
                                r.push_random()
                            } else {
                                r.push_random_after(1)
                            }
                        })
                        .collect();
                    for call in calls {
                        let n = tokio::time::timeout(Duration::from_secs(60), call)
                            .await
                            .expect("answered")
                            .expect("a number");
                        given.push(n);
                    }
                }
                given
            })
        })
        .collect();
    for node in &nodes[..2] {
        tokio::time::sleep(Duration::from_millis(600)).await;
        sigkill(run.pid_of(node.url()));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    done.store(true, Ordering::Release);
    for (r, w) in recorders.iter().zip(work) {
        let given = w.await.expect("a caller");
        assert_eq!(
            r.seen().await.unwrap(),
            given,
            "a record differs from what its caller was given"
        );
    }
    let recovered = recoveries(&mut run.events);
    assert!(recovered.len() >= 2, "{recovered:?}");
    run.end().await;
}

/// A stand-alone `actogrid ft-server` in a process of its own, in the
/// deployment's trust domain (credentials on its standard input), started
/// with `args`; its URL, and its log (stderr) gathered as it goes.
struct FtServerProcess {
    child: std::process::Child,
    url: String,
    log: Arc<std::sync::Mutex<String>>,
}

impl FtServerProcess {
    fn start(rt: &actogrid::Runtime, dir: &TempDir, args: &[&str]) -> FtServerProcess {
        use std::io::{BufRead as _, Write as _};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_actogrid"))
            .arg("ft-server")
            .args(["--listen", "127.0.0.1:0", "--exit-on-stdin-eof"])
            .args(args)
            .env(actogrid::CREDENTIALS_ENV, "stdin")
            .env(actogrid::STATE_DIR_ENV, &dir.0)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("actogrid ft-server");
        let credentials = actogrid::node_credentials(rt).unwrap();
        let input = child.stdin.as_mut().unwrap();
        input.write_all(credentials.as_bytes()).unwrap();
        input.flush().unwrap();
        let log = Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let gathered = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if std::env::var_os("RUST_LOG").is_some() {
                    eprintln!("ft-server: {line}");
                }
                let mut log = gathered.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix(actogrid::FT_SERVER_ANNOUNCE)
            .unwrap_or_else(|| {
                panic!(
                    "the FT server did not start: `{line}`\n{}",
                    log.lock().unwrap()
                )
            })
            .to_owned();
        FtServerProcess { child, url, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `runtimes` local runtimes of virtual node `Workers`, protected by
    /// this server (a checkpoint every 300 ms).
    fn protecting(&self, runtimes: u32) -> String {
        let service = format!(
            r#"<technicalServiceDefinition id="ft" class="actogrid.FaultTolerance">
  <arg name="protocol" value="pml"/>
  <arg name="ttc" value="300ms"/>
  <arg name="server" value="{}"/>
</technicalServiceDefinition>"#,
            self.url
        );
        with_services(
            &local_descriptor(runtimes, 1, "timeout=\"60s\"", None),
            "ft",
            &service,
        )
    }

    /// Closes its standard input: it stops; returns its exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().unwrap()
    }
}

/// `actogrid ft-server` alone protects a deployment that names it: it
/// detects a killed runtime and a hung one by their missing heartbeats
/// (no deployer tells it), recovers their objects on surviving nodes, and
/// every record is that of a failure-free run. Its store goes when it
/// stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_alone_ft_server_detects_failures_and_recovers_on_its_own() {
    let dir = TempDir::new("ft-alone");
    let rt = runtime().await;
    let server = FtServerProcess::start(&rt, &dir, &["--heartbeat", "200ms"]);
    let text = server.protecting(5);
    let mut run = deploy(&dir, &text).await;
    let nodes = &run.nodes;
    let mut recorders = Vec::new();
    for node in &nodes[..3] {
        recorders.push(RecorderProxy::new(node).await.unwrap());
    }
    let done = Arc::new(AtomicBool::new(false));
    let work = push_to_each(&recorders, 100, 8, &done);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let killed = run.pid_of(nodes[0].url());
    sigkill(killed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hung = run.pid_of(nodes[1].url());
    signal(hung, rustix::process::Signal::STOP);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    check_pushed(&recorders, work, &done).await;
    let log = server.log();
    assert!(
        log.matches("is declared dead: no heartbeat").count() >= 2,
        "{log}"
    );
    assert!(log.matches("recovered on").count() >= 2, "{log}");
    // The program is told, as with the deployment's own server.
    let mut told = 0;
    let all_told = support::eventually(Duration::from_secs(5), || {
        told += recoveries(&mut run.events).len();
        told >= 2
    });
    assert!(
        all_told.await,
        "the recoveries were not told to the program"
    );
    // The hung runtime, woken, learns it was declared dead, and exits.
    signal(hung, rustix::process::Signal::CONT);
    assert!(
        support::eventually(Duration::from_secs(10), || !alive(hung)).await,
        "a runtime declared dead lives on"
    );
    run.end().await;
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    let left: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".redb"))
        .collect();
    assert!(left.is_empty(), "the store stayed: {left:?}");
}

/// `protected(dir, 4, "1h")` with an unprotected virtual node `Ledgers` of
/// two local runtimes, deployed; with that node's nodes.
async fn with_ledgers(dir: &TempDir) -> (Deployed, Vec<actogrid::Node>) {
    let text = protected(dir, 4, "1h")
        .replacen(
            "</virtualNodesDefinition>",
            "<virtualNode name=\"Ledgers\" property=\"multiple\" timeout=\"60s\"/></virtualNodesDefinition>",
            1,
        )
        .replacen(
            "</mapping>",
            "</mapping><mapping><map virtualNode=\"Ledgers\"><jvmSet><vmName value=\"ledgers\"/></jvmSet></map></mapping>",
            1,
        )
        .replacen(
            "</jvms>",
            "<jvm name=\"ledgers\" runtimes=\"2\" askedNodes=\"1\"><creation><processReference refid=\"localRuntime\"/></creation></jvm></jvms>",
            1,
        );
    let run = deploy(dir, &text).await;
    let ledgers = run
        .d
        .virtual_node("Ledgers")
        .unwrap()
        .nodes()
        .await
        .unwrap();
    assert_eq!(ledgers.len(), 2);
    (run, ledgers)
}

/// A protected teller's call still queued at an unprotected account (busy
/// with an earlier request) when the teller's runtime is killed: the
/// account serves it all the same, and answers the recovered teller's copy
/// with that reply, so the transfer is in the ledgers once and the
/// teller's caller gets its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_queued_when_its_protected_caller_dies_is_served_once() {
    let dir = TempDir::new("ft-queued");
    let (run, ledgers) = with_ledgers(&dir).await;
    let from = AccountProxy::new(&ledgers[0], 100).await.unwrap();
    let to = AccountProxy::new(&ledgers[1], 100).await.unwrap();
    // `from` awaits a slow worker's answer meanwhile.
    let worker = WorkerProxy::new(&ledgers[1], "slow".into()).await.unwrap();
    let busy = from.apply_when(1, worker.slow(1_500, 5));
    let teller = TellerProxy::new(&run.nodes[0]).await.unwrap();
    let transfer = tokio::spawn({
        let (teller, from, to) = (teller.clone(), from.clone(), to.clone());
        async move { teller.transfer(2, from, to, 3).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigkill(run.pid_of(run.nodes[0].url()));
    assert_eq!(busy.await.unwrap(), 105);
    let count = tokio::time::timeout(Duration::from_secs(60), transfer)
        .await
        .expect("the transfer answered")
        .expect("the transfer's task");
    assert_eq!(count.unwrap(), 1, "the teller's count");
    assert_eq!(from.ledger().await.unwrap(), vec![(1, 5), (2, -3)]);
    assert_eq!(to.ledger().await.unwrap(), vec![(2, 3)]);
    run.end().await;
}

/// Protected tellers moving money between accounts of an unprotected
/// virtual node, while the tellers' runtimes are killed: a recovered
/// teller makes its calls again, and the accounts answer them with the
/// replies they gave (kept for protected callers), so every transfer is
/// in its ledgers once and every teller's count is that of a failure-free
/// run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprotected_objects_answer_a_recovered_caller_again() {
    let dir = TempDir::new("ft-unprotected");
    let (run, ledgers) = with_ledgers(&dir).await;
    const START: i64 = 1_000;
    let mut accounts = Vec::new();
    for node in ledgers.iter().chain(&ledgers) {
        accounts.push(AccountProxy::new(node, START).await.unwrap());
    }
    let tellers: Vec<TellerProxy> = {
        let mut t = Vec::new();
        for node in &run.nodes[..2] {
            t.push(TellerProxy::new(node).await.unwrap());
        }
        t
    };
    let n = accounts.len();
    let done = Arc::new(AtomicBool::new(false));
    let work: Vec<_> = tellers
        .iter()
        .enumerate()
        .map(|(t, teller)| {
            let (teller, accounts, done) = (teller.clone(), accounts.clone(), done.clone());
            tokio::spawn(async move {
                let mut made = Vec::new();
                let mut k = 0u64;
                while k < 40 || !done.load(Ordering::Acquire) {
                    let id = ((t as u64 + 1) << 32) | k;
                    let from = fastrand::usize(..n);
                    let to = (from + 1 + fastrand::usize(..n - 1)) % n;
                    let count = tokio::time::timeout(
                        Duration::from_secs(90),
                        teller.transfer(id, accounts[from].clone(), accounts[to].clone(), 3),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("transfer {id:#x} never answered"))
                    .unwrap_or_else(|e| panic!("transfer {id:#x} failed: {e}"));
                    assert_eq!(count, k + 1, "transfer {id:#x}: the teller's count");
                    made.push((id, from, to));
                    k += 1;
                }
                made
            })
        })
        .collect();
    // Each teller's runtime killed once; the checkpoints are rare, so each
    // recovery replays every transfer its teller made.
    for node in &run.nodes[..2] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        sigkill(run.pid_of(node.url()));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    done.store(true, Ordering::Release);
    let mut want: Vec<Vec<(u64, i64)>> = vec![Vec::new(); n];
    for w in work {
        for (id, from, to) in w.await.expect("a teller's caller") {
            want[from].push((id, -3));
            want[to].push((id, 3));
        }
    }
    for (i, a) in accounts.iter().enumerate() {
        let mut ledger = a.ledger().await.unwrap();
        ledger.sort_unstable();
        want[i].sort_unstable();
        assert_eq!(
            ledger, want[i],
            "account {i}: its ledger differs from a failure-free run"
        );
    }
    run.end().await;
}

/// A runtime follows one FT server: virtual nodes pointed at two are
/// refused when the deployment loads, naming both, before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_nodes_protected_by_two_servers_are_refused() {
    let dir = TempDir::new("ft-two-servers");
    let service = |id: &str, port: u16| {
        format!(
            r#"<technicalServiceDefinition id="{id}" class="actogrid.FaultTolerance">
  <arg name="server" value="actogrid://127.0.0.1:{port}/ft"/>
</technicalServiceDefinition>"#
        )
    };
    let text = with_services(
        &local_descriptor(1, 1, "", None),
        "a",
        &format!("{}{}", service("a", 7101), service("b", 7102)),
    )
    .replacen(
        "</virtualNodesDefinition>",
        "<virtualNode name=\"Others\" property=\"multiple\" technicalServiceId=\"b\"/></virtualNodesDefinition>",
        1,
    )
    .replacen(
        "</mapping>",
        "</mapping><mapping><map virtualNode=\"Others\"><jvmSet><vmName value=\"set\"/></jvmSet></map></mapping>",
        1,
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let err = Deployment::load_with(
        &path,
        actogrid::descriptor::LoadOptions::default(),
        support::options(&rt),
    )
    .await
    .expect_err("two FT servers in one deployment");
    let text = err.to_string();
    assert!(text.contains("different FT servers"), "{text}");
    assert!(text.contains("7101") && text.contains("7102"), "{text}");
    rt.shutdown();
}

/// A stand-alone server with no node to recover on within its recovery
/// wait gives the objects up: the program is told why
/// (`VnEvent::RecoveryFailed`), and a caller gets `NodeDied` rather than
/// waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stand_alone_ft_server_with_no_node_left_says_so() {
    let dir = TempDir::new("ft-alone-lost");
    let rt = runtime().await;
    let server = FtServerProcess::start(
        &rt,
        &dir,
        &["--heartbeat", "200ms", "--recovery-wait", "1s"],
    );
    let mut run = deploy(&dir, &server.protecting(1)).await;
    let recorder = RecorderProxy::new(&run.nodes[0]).await.unwrap();
    assert_eq!(recorder.push(1).await.unwrap(), 1);
    let pid = recorder.pid().await.unwrap();
    sigkill(pid);
    let answer = tokio::time::timeout(Duration::from_secs(30), recorder.push(2))
        .await
        .expect("the call ends");
    let err = answer.expect_err("no node to recover on");
    assert!(
        matches!(err, actogrid::CallError::NodeDied { .. }),
        "{err:?}"
    );
    // Why it is gone, not only that its runtime is.
    let said = err.to_string();
    assert!(
        said.contains("could not be recovered: no node of Workers beat within 1 s"),
        "{said}"
    );
    let failed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match run.events.recv().await {
                Ok(VnEvent::RecoveryFailed { error, .. }) => return error,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("RecoveryFailed");
    assert!(
        failed.contains("no node of Workers beat within 1 s"),
        "{failed}"
    );
    run.end().await;
    assert!(server.stop().success());
}

/// A caller asking a protected object for its count (an immediate
/// request) right after its runtime was killed: the request reaches the
/// recovered object while it serves its log again, waits for the whole
/// log, and sees every value pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_call_made_during_a_replay_sees_the_whole_log() {
    let dir = TempDir::new("ft-immediate");
    let run = deploy(&dir, &protected(&dir, 2, "1h")).await;
    let object = RecorderProxy::new(&run.nodes[0]).await.unwrap();
    let pid = object.pid().await.unwrap();
    for v in 0..500u64 {
        object.push(v).await.unwrap();
    }
    sigkill(pid);
    let n = tokio::time::timeout(Duration::from_secs(30), object.count())
        .await
        .expect("the count was answered")
        .unwrap();
    assert_eq!(n, 500);
    run.end().await;
}
