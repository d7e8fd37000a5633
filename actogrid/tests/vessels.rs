//! Hostile programs in lent slots. Each test starts an `actogrid peer`
//! daemon (real processes, as root: every slot gets a user of its own),
//! deploys this very program on it through the overlay, and has the
//! `Hostile` active object of the lent runtime attack the lender's machine:
//! read the lender's files, write outside its directory, signal the daemon,
//! fork-bomb, allocate 10 GiB, fill the disk, listen on another port,
//! connect where it may not, leave a daemonised child behind. Each attack
//! must fail or get the vessel killed, be reported (the daemon's log, its
//! status), leave the daemon answering throughout, and leave nothing of
//! the vessel behind once the slot is free.
//!
//! The lent runtimes are this test program itself (a deployment runs its
//! own binary everywhere), hence its own `main`: it serves as a runtime
//! when a deployer started it, and runs the tests otherwise.
//! `cargo test --test vessels -- NAME` runs the tests whose name holds
//! NAME.

mod support;

use std::future::Future;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use actogrid::peer::{EndedVessel, PeerStatus, Pool, peer_status};
use actogrid::{Deployment, Runtime};
use serde::{Deserialize, Serialize};
use support::{PeerProcess, TempDir, alive, eventually, vessel_leftovers};

const SECRET: &str = "vessel-test-overlay";

/// What an attack did: whether it got what it wanted, what the system
/// said, and what it left (bytes written, processes started).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attempt {
    /// The attack succeeded.
    pub done: bool,
    /// What happened (the error, or what was obtained).
    pub detail: String,
    /// Bytes read, written or allocated.
    pub bytes: u64,
    /// Processes it started.
    pub pids: Vec<u32>,
}

impl Attempt {
    fn from<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) -> Attempt {
        match r {
            Ok(v) => Attempt {
                done: true,
                detail: format!("{v:?}"),
                ..Attempt::default()
            },
            Err(e) => Attempt {
                done: false,
                detail: e.to_string(),
                ..Attempt::default()
            },
        }
    }
}

/// Who and where a lent runtime is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Its pid.
    pub pid: u32,
    /// Its parent's pid.
    pub parent: u32,
    /// Its working directory.
    pub cwd: PathBuf,
    /// Its program.
    pub exe: PathBuf,
    /// `ACTOGRID_LISTEN`: the address it was given to listen on.
    pub listen: String,
    /// Whether no_new_privs is set.
    pub no_new_privs: bool,
    /// Its effective capabilities (`CapEff`, hexadecimal).
    pub capabilities: String,
}

/// The borrowed program's object: an attack per method, run on request.
#[derive(Debug, Default)]
pub struct Hostile;

#[actogrid::active]
impl Hostile {
    /// An attacker.
    pub fn new() -> Self {
        Hostile
    }

    /// Who and where it runs.
    pub fn identity(&self) -> Identity {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(u32::MAX)
        };
        Identity {
            uid: field("Uid:"),
            gid: field("Gid:"),
            pid: std::process::id(),
            parent: field("PPid:"),
            cwd: std::env::current_dir().unwrap_or_default(),
            exe: std::fs::read_link("/proc/self/exe").unwrap_or_default(),
            listen: std::env::var("ACTOGRID_LISTEN").unwrap_or_default(),
            no_new_privs: field("NoNewPrivs:") == 1,
            capabilities: status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }

    /// Reads the file at `path`.
    pub fn read(&self, path: String) -> Attempt {
        match std::fs::read(&path) {
            Ok(bytes) => Attempt {
                done: true,
                detail: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                bytes: bytes.len() as u64,
                ..Attempt::default()
            },
            Err(e) => Attempt::from::<(), _>(Err(e)),
        }
    }

    /// Lists the directory at `path`.
    pub fn list(&self, path: String) -> Attempt {
        Attempt::from(std::fs::read_dir(&path).map(|d| d.count()))
    }

    /// Writes a few bytes into `path` (created or truncated).
    pub fn write(&self, path: String) -> Attempt {
        Attempt::from(std::fs::write(&path, b"planted by a lent runtime\n"))
    }

    /// Writes a file named `name` in its own directory; its full path.
    pub fn write_here(&self, name: String) -> Attempt {
        let path = std::env::current_dir().unwrap_or_default().join(name);
        match std::fs::write(&path, b"mine\n") {
            Ok(()) => Attempt {
                done: true,
                detail: path.to_string_lossy().into_owned(),
                ..Attempt::default()
            },
            Err(e) => Attempt::from::<(), _>(Err(e)),
        }
    }

    /// Sends SIGKILL to process `pid`.
    pub fn signal(&self, pid: u32) -> Attempt {
        let target = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
        Attempt::from(rustix::process::kill_process(
            target,
            rustix::process::Signal::KILL,
        ))
    }

    /// Starts `sleep` processes until the system refuses, keeps them, and
    /// holds for `hold_ms` before answering.
    pub fn fork_bomb(&self, hold_ms: u64) -> Attempt {
        let mut attempt = Attempt::default();
        for _ in 0..10_000 {
            match std::process::Command::new("sleep")
                .arg("120")
                .stdin(std::process::Stdio::null())
                .spawn()
            {
                Ok(child) => attempt.pids.push(child.id()),
                Err(e) => {
                    attempt.detail = e.to_string();
                    break;
                }
            }
        }
        attempt.done = attempt.detail.is_empty();
        std::thread::sleep(Duration::from_millis(hold_ms));
        attempt
    }

    /// Allocates `bytes` and touches every page.
    pub fn allocate(&self, bytes: u64) -> Attempt {
        let mut block: Vec<u8> = Vec::new();
        if let Err(e) = block.try_reserve_exact(bytes as usize) {
            return Attempt::from::<(), _>(Err(e));
        }
        block.resize(bytes as usize, 0x5a);
        Attempt {
            done: true,
            detail: "allocated".into(),
            bytes: block.len() as u64,
            ..Attempt::default()
        }
    }

    /// Writes files of `file_size` bytes in its directory until the system
    /// refuses or `total` bytes are written, then holds for `hold_ms`.
    pub fn fill_disk(&self, file_size: u64, total: u64, hold_ms: u64) -> Attempt {
        let chunk = vec![0x42u8; 1 << 20];
        let mut attempt = Attempt::default();
        'files: for n in 0.. {
            let mut file = match std::fs::File::create(format!("fill-{n}")) {
                Ok(f) => f,
                Err(e) => {
                    attempt.detail = e.to_string();
                    break;
                }
            };
            let mut in_file = 0;
            while in_file < file_size {
                if attempt.bytes >= total {
                    break 'files;
                }
                match file.write_all(&chunk).and_then(|()| file.flush()) {
                    Ok(()) => {
                        in_file += chunk.len() as u64;
                        attempt.bytes += chunk.len() as u64;
                    }
                    Err(e) => {
                        attempt.detail = e.to_string();
                        break 'files;
                    }
                }
            }
        }
        attempt.done = attempt.detail.is_empty();
        std::thread::sleep(Duration::from_millis(hold_ms));
        attempt
    }

    /// Listens on `address`.
    pub fn listen(&self, address: String) -> Attempt {
        Attempt::from(TcpListener::bind(&address).and_then(|l| l.local_addr()))
    }

    /// Connects to `address`.
    pub fn connect(&self, address: String) -> Attempt {
        let target = address.parse().expect("an address");
        Attempt::from(
            std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3))
                .map(|s| s.peer_addr()),
        )
    }

    /// Leaves a daemon: a process in a session of its own, detached (its
    /// parent exits at once); its pid.
    pub fn daemonise(&self) -> Attempt {
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!",
            ])
            .output();
        match out {
            Ok(out) => {
                let pid = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
                Attempt {
                    done: pid.is_some(),
                    detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                    pids: pid.into_iter().collect(),
                    ..Attempt::default()
                }
            }
            Err(e) => Attempt::from::<(), _>(Err(e)),
        }
    }
}

/// What the tests share: a work directory whose program cache already
/// holds this program (it is not fetched again by every daemon), and
/// per-test uid ranges and state directories, so that tests running at
/// once never touch each other's vessels.
struct World {
    dir: TempDir,
    work: PathBuf,
    next: AtomicU32,
}

impl World {
    fn new() -> World {
        let dir = TempDir::new("vessels");
        let work = dir.0.join("work");
        seed_cache(&work);
        World {
            dir,
            work,
            next: AtomicU32::new(0),
        }
    }

    /// A directory of the test, `0755`.
    fn subdir(&self, name: &str) -> PathBuf {
        let d = self.dir.0.join(format!(
            "{name}-{}",
            self.next.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Options giving one daemon identities of its own: its uids, ports
    /// and state directory.
    fn identity(&self) -> Vec<String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let state = self.dir.0.join(format!("state-{n}"));
        vec![
            "--uid-base".into(),
            (1_900_500_000 + n * 100).to_string(),
            "--port-base".into(),
            (21_000 + n * 16).to_string(),
            "--state-dir".into(),
            state.to_string_lossy().into_owned(),
        ]
    }
}

/// Puts this program into `<work>/bin/<sha256>/program`, as a daemon that
/// fetched it would.
fn seed_cache(work: &Path) {
    use sha2::Digest as _;
    let exe = std::env::current_exe().expect("this program");
    let bytes = std::fs::read(&exe).expect("read this program");
    let sha = format!("{:x}", sha2::Sha256::digest(&bytes));
    let dir = work.join("bin").join(sha);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(work.join("slots")).unwrap();
    let program = dir.join("program");
    if std::fs::hard_link(&exe, &program).is_err() {
        std::fs::write(&program, &bytes).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Limits of the daemons of these tests, small enough to be reached
/// quickly.
const LIMITS: &[&str] = &[
    "--memory-limit",
    "256M",
    "--max-processes",
    "64",
    "--disk-limit",
    "32M",
    "--cpus",
    "1",
];

/// A daemon lending to a deployment of this program, with its `Hostile`
/// objects.
struct Lending {
    peer: PeerProcess,
    rt: Runtime,
    deployment: Deployment,
    hostiles: Vec<HostileProxy>,
    work: PathBuf,
    dir: TempDir,
}

/// Starts a daemon with `slots` slots (and `extra` options) and deploys
/// `slots` nodes on it.
async fn lend(world: &World, slots: u32, extra: &[&str]) -> Lending {
    let identity = world.identity();
    let mut options: Vec<&str> = LIMITS.to_vec();
    options.extend(identity.iter().map(String::as_str));
    options.extend(extra);
    let cmd = PeerProcess::command(&world.work, "127.0.0.1:0", slots, &[], SECRET, &options);
    lend_with(world, cmd, slots, &world.work).await
}

async fn lend_with(world: &World, cmd: std::process::Command, slots: u32, work: &Path) -> Lending {
    let peer = PeerProcess::spawn(cmd);
    let rt = support::runtime().await;
    let dir = TempDir::new("vessels-deployer");
    let _ = world;
    let text = support::p2p_descriptor(&slots.to_string(), &[&peer.address], "40s", false);
    let path = dir.write("lent.xml", &text);
    let mut options = support::options(&rt);
    options.program = Some(std::env::current_exe().unwrap());
    options.pool = Some(Pool::Passphrase(SECRET.into()));
    let deployment = Deployment::load_with(&path, Default::default(), options)
        .await
        .expect("the descriptor loads");
    deployment.activate().await.expect("activates");
    let vn = deployment.virtual_node("Workers").unwrap();
    let nodes = match vn.nodes().await {
        Ok(n) => n,
        Err(e) => panic!("{e}\npeer log:\n{}", peer.log()),
    };
    let mut hostiles = Vec::new();
    for node in &nodes {
        hostiles.push(
            HostileProxy::new(node)
                .await
                .expect("a Hostile on the node"),
        );
    }
    Lending {
        peer,
        rt,
        deployment,
        hostiles,
        work: work.to_path_buf(),
        dir,
    }
}

impl Lending {
    async fn status(&self) -> PeerStatus {
        tokio::time::timeout(
            Duration::from_secs(10),
            peer_status(&Pool::Passphrase(SECRET.into()), &self.peer.address),
        )
        .await
        .expect("the daemon answers its status within 10 s")
        .expect("the daemon answers its status")
    }

    fn hostile(&self) -> &HostileProxy {
        &self.hostiles[0]
    }

    /// Runs `attack`, asking the daemon for its status every 200 ms
    /// meanwhile: it must answer each time. Returns the attack's outcome
    /// and the statuses seen.
    async fn under_attack<T>(&self, attack: impl Future<Output = T>) -> (T, Vec<PeerStatus>) {
        let mut attack = std::pin::pin!(attack);
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                out = &mut attack => {
                    seen.push(self.status().await);
                    return (out, seen);
                }
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    seen.push(self.status().await);
                }
            }
        }
    }

    /// The vessel of the first lent node: its uid and slot directory.
    async fn vessel(&self) -> (u32, PathBuf) {
        let me = self.hostile().identity().await.expect("identity");
        (me.uid, me.cwd)
    }

    /// Waits until `check` holds for the daemon's status (up to 15 s).
    async fn status_until(&self, what: &str, check: impl Fn(&PeerStatus) -> bool) -> PeerStatus {
        let start = Instant::now();
        loop {
            let s = self.status().await;
            if check(&s) {
                return s;
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!(
                    "{what}: not in the status:\n{s}\npeer log:\n{}",
                    self.peer.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the deployment; waits until the daemon lends nothing, and
    /// checks that nothing of the vessels `vessels` is left. Returns how
    /// the vessels lent until then ended.
    async fn release(mut self, vessels: &[(u32, PathBuf)]) -> Vec<EndedVessel> {
        let bookings: Vec<u64> = self.status().await.lent.iter().map(|l| l.booking).collect();
        self.deployment.kill().await;
        let status = self
            .status_until("every slot free again, every vessel ended", |s| {
                s.lent.is_empty()
                    && s.count("free") == s.slots.len()
                    && s.vessels.as_ref().is_some_and(|v| {
                        bookings
                            .iter()
                            .all(|b| v.ended.iter().any(|e| e.booking == *b))
                    })
            })
            .await;
        for (uid, dir) in vessels {
            let mut left = Vec::new();
            let gone = eventually(Duration::from_secs(5), || {
                left = vessel_leftovers(*uid, dir);
                left.is_empty()
            })
            .await;
            assert!(
                gone,
                "left of the vessel of uid {uid}: {left:?}\n{}",
                self.peer.log()
            );
        }
        assert!(
            self.peer.child.try_wait().unwrap().is_none(),
            "the daemon is still running"
        );
        self.peer.stop();
        self.rt.shutdown();
        let _ = &self.work;
        let _ = &self.dir;
        let ended = status.vessels.map(|v| v.ended).unwrap_or_default();
        ended
            .into_iter()
            .filter(|e| bookings.contains(&e.booking))
            .collect()
    }
}

fn failed(a: &Attempt) -> bool {
    !a.done
}

// ---------------------------------------------------------------- tests

async fn a_vessel_runs_as_a_user_of_its_own_in_its_own_directory(world: Arc<World>) {
    let lending = lend(&world, 1, &[]).await;
    let me = lending.hostile().identity().await.unwrap();
    assert!(me.uid >= 1_900_500_000 && me.uid == me.gid, "{me:?}");
    assert!(me.no_new_privs, "{me:?}");
    assert!(me.cwd.starts_with(world.work.join("slots")), "{me:?}");
    let port = me.listen.rsplit_once(':').unwrap().1;
    assert!(me.listen.starts_with("127.0.0.1:") && port != "0", "{me:?}");
    let mode = std::fs::metadata(&me.cwd).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!((mode.uid(), mode.mode() & 0o777), (me.uid, 0o700));
    let status = lending.status().await;
    let vessels = status
        .vessels
        .clone()
        .expect("a lender reports its vessels");
    assert!(vessels.user.contains("a user of its own"), "{status}");
    for what in [
        "memory",
        "processes",
        "cpu",
        "disk",
        "files",
        "network",
        "signals",
        "cleanup",
    ] {
        assert!(
            vessels.protections.iter().any(|p| p.what == what),
            "{what} in\n{status}"
        );
    }
    assert_eq!(status.lent[0].uid, Some(me.uid));
    // Measured while it runs.
    lending
        .status_until("what the vessel uses", |s| {
            s.lent[0].usage.is_some_and(|u| u.memory > 0 && u.tasks > 0)
        })
        .await;
    lending.release(&[(me.uid, me.cwd)]).await;
}

async fn reading_the_lenders_files_fails(world: Arc<World>) {
    let home = world.subdir("home");
    std::fs::write(home.join("secret"), "the lender's secret\n").unwrap();
    std::fs::set_permissions(home.join("secret"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let lending = lend(&world, 2, &[]).await;
    let (a, b) = (&lending.hostiles[0], &lending.hostiles[1]);
    let mine = a.write_here("mine.txt".into()).await.unwrap();
    assert!(mine.done, "{mine:?}");
    assert!(a.read(mine.detail.clone()).await.unwrap().done);
    let b_me = b.identity().await.unwrap();
    let a_me = a.identity().await.unwrap();
    let (attempts, seen) = lending
        .under_attack(async {
            vec![
                (
                    "the lender's file",
                    b.read(home.join("secret").to_string_lossy().into()).await,
                ),
                (
                    "the lender's directory",
                    b.list(home.to_string_lossy().into()).await,
                ),
                ("another slot's file", b.read(mine.detail.clone()).await),
                (
                    "the slots",
                    b.list(world.work.join("slots").to_string_lossy().into())
                        .await,
                ),
                (
                    "the daemon's command line (its token)",
                    b.read(format!("/proc/{}/cmdline", b_me.parent)).await,
                ),
                (
                    "the daemon's environment",
                    b.read(format!("/proc/{}/environ", b_me.parent)).await,
                ),
                (
                    "another vessel's /proc",
                    b.read(format!("/proc/{}/status", a_me.pid)).await,
                ),
            ]
        })
        .await;
    for (what, attempt) in attempts {
        let attempt = attempt.unwrap();
        assert!(failed(&attempt), "reading {what} succeeded: {attempt:?}");
        assert!(attempt.detail.contains("denied"), "{what}: {attempt:?}");
    }
    assert!(!seen.is_empty());
    // What a program needs still works.
    assert!(b.read("/etc/hosts".into()).await.unwrap().done);
    assert!(b.read("/proc/self/status".into()).await.unwrap().done);
    lending
        .release(&[(a_me.uid, a_me.cwd), (b_me.uid, b_me.cwd)])
        .await;
}

async fn writing_outside_its_directory_fails(world: Arc<World>) {
    let home = world.subdir("open-home");
    // Writable by anyone: only the vessel's rules stand in the way.
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    let lending = lend(&world, 1, &[]).await;
    let me = lending.hostile().identity().await.unwrap();
    let escape = format!("/tmp/actogrid-vessel-escape-{}", std::process::id());
    let targets = [
        escape.clone(),
        home.join("planted").to_string_lossy().into_owned(),
        world
            .work
            .join("slots")
            .join("planted")
            .to_string_lossy()
            .into_owned(),
        me.exe.to_string_lossy().into_owned(),
        me.cwd
            .parent()
            .unwrap()
            .join("..")
            .join("planted")
            .to_string_lossy()
            .into_owned(),
    ];
    let (attempts, _) = lending
        .under_attack(async {
            let mut out = Vec::new();
            for t in &targets {
                out.push((t.clone(), lending.hostile().write(t.clone()).await.unwrap()));
            }
            out
        })
        .await;
    for (target, attempt) in attempts {
        assert!(failed(&attempt), "writing {target} succeeded");
        assert!(attempt.detail.contains("denied"), "{target}: {attempt:?}");
    }
    assert!(!Path::new(&escape).exists());
    assert!(!home.join("planted").exists());
    let here = lending.hostile().write_here("fine".into()).await.unwrap();
    assert!(here.done, "{here:?}");
    lending.release(&[(me.uid, me.cwd)]).await;
}

async fn signalling_the_daemon_fails(world: Arc<World>) {
    let lending = lend(&world, 1, &[]).await;
    let me = lending.hostile().identity().await.unwrap();
    assert_eq!(
        me.parent,
        lending.peer.pid(),
        "the daemon starts the vessel"
    );
    let (attempts, _) = lending
        .under_attack(async {
            [
                lending.hostile().signal(me.parent).await.unwrap(),
                lending.hostile().signal(std::process::id()).await.unwrap(),
            ]
        })
        .await;
    for attempt in &attempts {
        assert!(failed(attempt), "{attempt:?}");
        assert!(attempt.detail.contains("not permitted"), "{attempt:?}");
    }
    assert!(alive(lending.peer.pid()));
    lending.release(&[(me.uid, me.cwd)]).await;
}

async fn a_vessel_of_the_daemons_own_root_user_has_no_power(world: Arc<World>) {
    let lending = lend(&world, 1, &["--same-user"]).await;
    let me = lending.hostile().identity().await.unwrap();
    assert_eq!(me.uid, 0, "{me:?}");
    assert_eq!(me.capabilities, "0000000000000000", "{me:?}");
    let status = lending.status().await;
    let vessels = status.vessels.clone().unwrap();
    assert!(vessels.user.contains("the daemon's user"), "{status}");
    assert!(
        lending
            .peer
            .log()
            .contains("lent slots run as the daemon's user")
    );
    // Same user, yet the daemon is out of reach: Landlock's scoping.
    let (attempts, _) = lending
        .under_attack(async {
            [
                lending.hostile().signal(me.parent).await.unwrap(),
                lending
                    .hostile()
                    .write("/etc/actogrid-planted".into())
                    .await
                    .unwrap(),
                lending.hostile().read("/etc/shadow".into()).await.unwrap(),
            ]
        })
        .await;
    for attempt in &attempts {
        assert!(failed(attempt), "{attempt:?}");
    }
    assert!(!Path::new("/etc/actogrid-planted").exists());
    assert!(alive(lending.peer.pid()));
    lending.release(&[]).await;
    assert!(!me.cwd.exists());
}

async fn a_fork_bomb_stops_at_the_process_limit(world: Arc<World>) {
    let lending = lend(&world, 1, &[]).await;
    let vessel = lending.vessel().await;
    let (bomb, seen) = lending
        .under_attack(lending.hostile().fork_bomb(1500))
        .await;
    match bomb {
        Ok(attempt) => {
            assert!(
                failed(&attempt),
                "{} processes and no refusal",
                attempt.pids.len()
            );
            assert!(attempt.pids.len() < 64, "{}", attempt.pids.len());
            assert!(
                attempt.detail.contains("temporarily unavailable"),
                "{attempt:?}"
            );
        }
        // Also contained: the runtime itself could not go on.
        Err(e) => eprintln!("the vessel's runtime did not survive its fork bomb: {e}"),
    }
    let hit = |s: &PeerStatus| {
        s.lent
            .iter()
            .any(|l| l.limits_hit.iter().any(|h| h.starts_with("processes")))
            || s.vessels.as_ref().is_some_and(|v| {
                v.ended
                    .iter()
                    .any(|e| e.limits_hit.iter().any(|h| h.starts_with("processes")))
            })
    };
    if !seen.iter().any(hit) {
        lending.status_until("the process limit reached", hit).await;
    }
    assert!(
        lending
            .peer
            .logged("reached its process limit", Duration::from_secs(5))
            .await,
        "{}",
        lending.peer.log()
    );
    let ended = &lending.release(&[vessel]).await[0];
    assert!(ended.leftovers_killed > 0, "{ended:?}");
}

async fn allocating_10_gib_gets_the_vessel_killed(world: Arc<World>) {
    let lending = lend(&world, 1, &[]).await;
    let vessel = lending.vessel().await;
    let (outcome, _) = lending
        .under_attack(lending.hostile().allocate(10 << 30))
        .await;
    match outcome {
        Ok(attempt) => assert!(failed(&attempt), "10 GiB allocated: {attempt:?}"),
        Err(e) => eprintln!("the allocating runtime was killed: {e}"),
    }
    let status = lending
        .status_until("the vessel killed for memory", |s| {
            s.vessels.as_ref().is_some_and(|v| {
                v.ended
                    .iter()
                    .any(|e| e.limits_hit.iter().any(|h| h.starts_with("memory")))
            })
        })
        .await;
    let ended = status
        .vessels
        .as_ref()
        .unwrap()
        .ended
        .iter()
        .find(|e| e.limits_hit.iter().any(|h| h.starts_with("memory")))
        .unwrap();
    assert!(ended.end.contains("out of memory"), "{status}");
    assert!(ended.peak.memory <= 256 << 20, "{status}");
    assert!(
        lending
            .peer
            .logged("for want of memory", Duration::from_secs(5))
            .await,
        "{}",
        lending.peer.log()
    );
    lending.release(&[vessel]).await;
}

async fn filling_the_disk_stops_at_its_limit(world: Arc<World>) {
    let lending = lend(&world, 1, &[]).await;
    let vessel = lending.vessel().await;
    let (outcome, seen) = lending
        .under_attack(lending.hostile().fill_disk(1 << 30, 1 << 30, 1500))
        .await;
    let attempt = outcome.unwrap();
    assert!(failed(&attempt), "{attempt:?}");
    assert!(attempt.detail.contains("No space left"), "{attempt:?}");
    assert!(attempt.bytes <= 32 << 20, "{} bytes written", attempt.bytes);
    let full = |s: &PeerStatus| {
        s.lent
            .iter()
            .any(|l| l.limits_hit.iter().any(|h| h.starts_with("disk")))
    };
    if !seen.iter().any(full) {
        lending.status_until("the disk limit reached", full).await;
    }
    assert!(
        lending
            .peer
            .logged("filled its directory", Duration::from_secs(5))
            .await
    );
    lending.release(&[vessel]).await;
}

async fn listening_on_another_port_fails(world: Arc<World>) {
    let lending = lend(&world, 1, &[]).await;
    let me = lending.hostile().identity().await.unwrap();
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = free.local_addr().unwrap();
    drop(free);
    let (attempts, _) = lending
        .under_attack(async {
            [
                lending
                    .hostile()
                    .listen("127.0.0.1:0".into())
                    .await
                    .unwrap(),
                lending.hostile().listen(other.to_string()).await.unwrap(),
                lending
                    .hostile()
                    .listen(format!("0.0.0.0:{}", other.port()))
                    .await
                    .unwrap(),
            ]
        })
        .await;
    for attempt in &attempts {
        assert!(failed(attempt), "{attempt:?}");
        assert!(attempt.detail.contains("denied"), "{attempt:?}");
    }
    // Without --confine-network, connecting is not restricted.
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let reached = lending
        .hostile()
        .connect(open.local_addr().unwrap().to_string())
        .await
        .unwrap();
    assert!(reached.done, "{reached:?}");
    lending.release(&[(me.uid, me.cwd)]).await;
}

async fn connecting_elsewhere_fails_when_the_network_is_confined(world: Arc<World>) {
    let lending = lend(&world, 1, &["--confine-network"]).await;
    let me = lending.hostile().identity().await.unwrap();
    let elsewhere = TcpListener::bind("127.0.0.1:0").unwrap();
    let (attempt, _) = lending
        .under_attack(
            lending
                .hostile()
                .connect(elsewhere.local_addr().unwrap().to_string()),
        )
        .await;
    let attempt = attempt.unwrap();
    assert!(failed(&attempt), "{attempt:?}");
    assert!(attempt.detail.contains("denied"), "{attempt:?}");
    // Its deployer it reaches: it registered, and it answers.
    let deployer = lending.rt.address().unwrap();
    let back = lending
        .hostile()
        .connect(deployer.to_string())
        .await
        .unwrap();
    assert!(back.done, "{back:?}");
    let status = lending.status().await;
    let network = status
        .vessels
        .as_ref()
        .unwrap()
        .protections
        .iter()
        .find(|p| p.what == "network")
        .unwrap()
        .clone();
    assert!(
        network.limit.contains("deployer's ports only"),
        "{network:?}"
    );
    lending.release(&[(me.uid, me.cwd)]).await;
}

async fn a_daemonised_child_dies_with_its_slot(world: Arc<World>) {
    let lending = lend(&world, 1, &[]).await;
    let me = lending.hostile().identity().await.unwrap();
    let (attempt, _) = lending.under_attack(lending.hostile().daemonise()).await;
    let attempt = attempt.unwrap();
    assert!(attempt.done, "{attempt:?}");
    let daemon = attempt.pids[0];
    assert!(alive(daemon), "the daemonised child runs");
    assert_eq!(support::uid_of(daemon), Some(me.uid));
    let ended = lending.release(&[(me.uid, me.cwd)]).await;
    assert!(!alive(daemon), "the daemonised child outlived its slot");
    let ended = &ended[0];
    assert!(ended.leftovers_killed >= 1, "{ended:?}");
}

async fn a_stopping_daemon_takes_its_vessels_down(world: Arc<World>) {
    let mut lending = lend(&world, 1, &[]).await;
    let me = lending.hostile().identity().await.unwrap();
    let daemon = lending.hostile().daemonise().await.unwrap().pids[0];
    assert!(alive(daemon));
    // SIGTERM: the daemon leaves the overlay and stops what it lends.
    lending.peer.stop();
    assert!(!alive(daemon), "a vessel's process outlived its daemon");
    let left = vessel_leftovers(me.uid, &me.cwd);
    assert!(left.is_empty(), "{left:?}\n{}", lending.peer.log());
    assert!(
        lending.peer.log().contains("left running"),
        "{}",
        lending.peer.log()
    );
    lending.deployment.kill().await;
    lending.rt.shutdown();
}

async fn a_restarted_daemon_takes_down_what_a_crashed_one_left(world: Arc<World>) {
    let identity = world.identity();
    let mut options: Vec<&str> = LIMITS.to_vec();
    options.extend(identity.iter().map(String::as_str));
    let cmd = PeerProcess::command(&world.work, "127.0.0.1:0", 1, &[], SECRET, &options);
    let mut lending = lend_with(&world, cmd, 1, &world.work).await;
    let me = lending.hostile().identity().await.unwrap();
    let daemon = lending.hostile().daemonise().await.unwrap().pids[0];
    lending.peer.kill();
    // The runtime sees its standard input close and exits; what it
    // detached stays, with the vessel's mount and cgroups.
    assert!(eventually(Duration::from_secs(10), || !alive(me.pid)).await);
    assert!(alive(daemon));
    assert!(!vessel_leftovers(me.uid, &me.cwd).is_empty());
    let cmd = PeerProcess::command(&world.work, "127.0.0.1:0", 1, &[], SECRET, &options);
    let restarted = PeerProcess::spawn(cmd);
    assert!(
        restarted
            .logged("took down vessel", Duration::from_secs(10))
            .await,
        "{}",
        restarted.log()
    );
    assert!(
        !alive(daemon),
        "the crashed daemon's vessel left a process behind"
    );
    let left = vessel_leftovers(me.uid, &me.cwd);
    assert!(left.is_empty(), "{left:?}");
    lending.deployment.kill().await;
    lending.rt.shutdown();
}

async fn an_unprivileged_daemon_says_so_and_still_confines(world: Arc<World>) {
    const NOBODY: u32 = 65534;
    let work = world.subdir("nobody");
    seed_cache(&work);
    rustix::fs::chown(
        &work,
        Some(rustix::process::Uid::from_raw(NOBODY)),
        Some(rustix::process::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    rustix::fs::chown(
        work.join("slots"),
        Some(rustix::process::Uid::from_raw(NOBODY)),
        Some(rustix::process::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let state = work.join("state");
    let options = [
        "--memory-limit",
        "2G",
        "--max-processes",
        "64",
        "--disk-limit",
        "16M",
        "--port-base",
        "20900",
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let mut cmd = PeerProcess::command(&work, "127.0.0.1:0", 1, &[], SECRET, &options);
    {
        use std::os::unix::process::CommandExt as _;
        cmd.uid(NOBODY).gid(NOBODY).env("HOME", &work);
    }
    let lending = lend_with(&world, cmd, 1, &work).await;
    assert!(
        lending
            .peer
            .log()
            .contains("lent slots run as the daemon's user")
    );
    let status = lending.status().await;
    let vessels = status.vessels.clone().unwrap();
    assert!(vessels.user.contains("the daemon's user"), "{status}");
    let how = |what: &str| {
        vessels
            .protections
            .iter()
            .find(|p| p.what == what)
            .map(|p| p.how.clone())
            .unwrap_or_default()
    };
    assert!(how("memory").contains("RLIMIT_AS"), "{status}");
    assert!(how("disk").contains("RLIMIT_FSIZE"), "{status}");
    assert!(how("files").contains("Landlock"), "{status}");
    let me = lending.hostile().identity().await.unwrap();
    assert_eq!(me.uid, NOBODY);
    let escape = format!("/tmp/actogrid-vessel-escape-nobody-{}", std::process::id());
    let write = lending.hostile().write(escape.clone()).await.unwrap();
    assert!(failed(&write) && !Path::new(&escape).exists(), "{write:?}");
    // Files of 4 MiB (under the file size limit) until 64 MiB: the
    // periodic check kills the vessel.
    let (outcome, _) = lending
        .under_attack(lending.hostile().fill_disk(4 << 20, 64 << 20, 3000))
        .await;
    assert!(outcome.is_err(), "the vessel survived: {outcome:?}");
    let status = lending
        .status_until("the vessel killed for its disk", |s| {
            s.vessels
                .as_ref()
                .is_some_and(|v| v.ended.iter().any(|e| e.end.contains("grew past")))
        })
        .await;
    assert!(!me.cwd.exists(), "{status}");
    let mut peer = lending.peer;
    peer.stop();
    lending.rt.shutdown();
}

// ---------------------------------------------------------------- harness

type Test = fn(Arc<World>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), (|w| Box::pin($name(w))) as Test)),*]
    };
}

const TESTS: &[(&str, Test)] = tests![
    a_vessel_runs_as_a_user_of_its_own_in_its_own_directory,
    reading_the_lenders_files_fails,
    writing_outside_its_directory_fails,
    signalling_the_daemon_fails,
    a_vessel_of_the_daemons_own_root_user_has_no_power,
    a_fork_bomb_stops_at_the_process_limit,
    allocating_10_gib_gets_the_vessel_killed,
    filling_the_disk_stops_at_its_limit,
    listening_on_another_port_fails,
    connecting_elsewhere_fails_when_the_network_is_confined,
    a_daemonised_child_dies_with_its_slot,
    a_stopping_daemon_takes_its_vessels_down,
    a_restarted_daemon_takes_down_what_a_crashed_one_left,
    an_unprivileged_daemon_says_so_and_still_confines,
];

fn main() -> ExitCode {
    // A lent runtime of these tests: serve (never returns).
    actogrid::serve_if_deployed();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let selected: Vec<&(&str, Test)> = TESTS
        .iter()
        .filter(|(name, _)| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        name == f
                    } else {
                        name.contains(f.as_str())
                    }
                })
        })
        .collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", selected.len());
    if !support::root() {
        for (name, _) in &selected {
            println!("test {name} ... ignored (lending to vessels of their own users needs root)");
        }
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let world = Arc::new(World::new());
    // Three at a time: the machine has few cores, and each test runs a
    // daemon, a deployment and a lent runtime.
    let threads: usize = args
        .iter()
        .find_map(|a| a.strip_prefix("--test-threads="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let queue = Arc::new(std::sync::Mutex::new(
        selected.into_iter().rev().collect::<Vec<_>>(),
    ));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (queue, failures, world) = (queue.clone(), failures.clone(), world.clone());
            std::thread::spawn(move || {
                loop {
                    let next = queue.lock().unwrap().pop();
                    let Some((name, test)) = next else { return };
                    let begun = Instant::now();
                    let world = world.clone();
                    let outcome = std::panic::catch_unwind(move || {
                        tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(2)
                            .enable_all()
                            .build()
                            .unwrap()
                            .block_on(test(world));
                    });
                    let secs = begun.elapsed().as_secs_f64();
                    match outcome {
                        Ok(()) => println!("test {name} ... ok ({secs:.1} s)"),
                        Err(_) => {
                            println!("test {name} ... FAILED ({secs:.1} s)");
                            failures.lock().unwrap().push(*name);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let failures = failures.lock().unwrap();
    println!(
        "\ntest result: {}. {} failed; finished in {:.1} s\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in failures.iter() {
            println!("    {f}");
        }
        ExitCode::from(101)
    }
}
