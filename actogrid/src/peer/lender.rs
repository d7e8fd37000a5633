//! The lending side of the daemon: a booked slot waits for its launch
//! specification, the program is fetched into the content-addressed cache
//! (once per content, verified), and a runtime is started in a vessel (a
//! user, a directory and limits of its own: [`super::vessel`]); it is
//! stopped, with everything it started, when the slot is freed, and the
//! slot is freed when it ends.
//!
//! ```text
//! <work dir>/bin/<sha256>/program      one per program content, verified
//! <work dir>/bin/<sha256>/.fetching    locked while one daemon fetches it
//! <work dir>/slots/<booking>/          the vessel's directory (a tmpfs when
//!                                      the daemon is root), removed when it ends
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actogrid_acquisition::exec::StderrTail;
use actogrid_acquisition::overlay::{BookingId, Event};
use actogrid_acquisition::transfer::{Sha256Hasher, file_sha256};
use tokio::sync::{OnceCell, oneshot};

use super::driver::{Driver, Role};
use super::endpoint::{LaunchSpec, MAX_CHUNK};
use super::vessel::{self, SAMPLE_EVERY, Vessel, Vessels};
use super::{LentNode, PeerOptions, VesselStatus};

/// Largest program accepted.
const MAX_PROGRAM: u64 = 4 << 30;

/// The longest a runtime's set-up (program fetch and vessel) keeps its
/// booking past the booking expiry.
const STAGING_LIMIT: Duration = Duration::from_secs(600);

/// Environment variables a requester may not set (they would change how
/// the program is loaded, not what it does).
fn forbidden_env(name: &str) -> bool {
    name.starts_with("LD_")
        || name.starts_with("DYLD_")
        || name == "PATH"
        || name == "HOME"
        || name == vessel::ENV
}

/// One slot lent, from booking to release.
#[derive(Debug)]
struct Lent {
    requester: String,
    phase: Phase,
    since: Instant,
}

#[derive(Debug)]
enum Phase {
    /// Booked; the requester's launch specification has not come yet.
    AwaitingSpec,
    /// Fetching the program or starting the runtime.
    Starting,
    /// The runtime runs.
    Running {
        pid: u32,
        stop: oneshot::Sender<()>,
        vessel: Arc<Vessel>,
    },
}

/// The daemon's [`Role`].
#[derive(Debug)]
pub(crate) struct Lender {
    options: Arc<PeerOptions>,
    vessels: Arc<Vessels>,
    lent: Mutex<HashMap<BookingId, Lent>>,
    cache: Mutex<HashMap<String, Arc<OnceCell<PathBuf>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Lender {
    pub(crate) fn new(options: Arc<PeerOptions>, vessels: Arc<Vessels>) -> Lender {
        Lender {
            options,
            vessels,
            lent: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Stops every runtime (the daemon is leaving).
    pub(crate) fn stop_all(&self) {
        for (_, lent) in lock(&self.lent).drain() {
            if let Phase::Running { stop, .. } = lent.phase {
                let _ = stop.send(());
            }
        }
    }

    /// The vessels (their protections and what ended).
    pub(crate) fn vessels(&self) -> &Arc<Vessels> {
        &self.vessels
    }

    /// The program of `spec`, from the cache or fetched into it.
    async fn program(&self, spec: &LaunchSpec) -> Result<PathBuf, String> {
        let cell = lock(&self.cache)
            .entry(spec.sha256.clone())
            .or_default()
            .clone();
        cell.get_or_try_init(|| fetch(&self.options.work_dir, spec))
            .await
            .cloned()
    }

    async fn start(
        self: Arc<Self>,
        driver: Arc<Driver>,
        booking: BookingId,
        requester: String,
        spec: LaunchSpec,
    ) {
        let started = async {
            let program = self.program(&spec).await?;
            let began = Instant::now();
            let vessels = self.vessels.clone();
            let (who, env) = (requester.clone(), spec.env.clone());
            let vessel = tokio::task::spawn_blocking(move || {
                vessels.prepare(booking.0, &who, &program, &env)
            })
            .await
            .map_err(|e| format!("setting up the vessel failed: {e}"))??;
            match vessel.command(&spec.env).spawn() {
                Ok(child) => {
                    tracing::debug!(
                        "slot {}: vessel set up and started in {} µs",
                        booking.0,
                        began.elapsed().as_micros()
                    );
                    Ok::<_, String>((child, vessel))
                }
                Err(e) => {
                    let end = format!("not started: {e}");
                    let _ = tokio::task::spawn_blocking(move || vessel.finish(end, false)).await;
                    Err(format!("cannot start the vessel: {e}"))
                }
            }
        };
        // A set-up that takes long (a large program fetched on a busy
        // machine) keeps its booking: the expiry is for a requester that
        // never deploys. The fetch has timeouts of its own; the set-up as
        // a whole gets at most `STAGING_LIMIT`.
        let expiry = self.options.booking_expiry;
        let keep = async {
            let began = Instant::now();
            loop {
                tokio::time::sleep(expiry / 3).await;
                if began.elapsed() > STAGING_LIMIT
                    || !driver.step(|core, now| core.staging(booking, now))
                {
                    return std::future::pending::<std::convert::Infallible>().await;
                }
            }
        };
        let started = tokio::select! {
            started = started => started,
            never = keep => match never {},
        };
        let (mut child, vessel) = match started {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("slot {} for {requester}: {e}", booking.0);
                lock(&self.lent).remove(&booking);
                driver.step(|core, _| core.runtime_ended(booking));
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        vessel.started(pid);
        let (stop, stopped) = oneshot::channel();
        let still_booked = match lock(&self.lent).get_mut(&booking) {
            Some(lent) => {
                lent.phase = Phase::Running {
                    pid,
                    stop,
                    vessel: vessel.clone(),
                };
                true
            }
            None => false,
        };
        // Its credentials first; then holding stdin open keeps the runtime
        // alive: it exits when this daemon dies and the pipe closes.
        let mut stdin = child.stdin.take();
        if let Some(input) = stdin.as_mut() {
            use tokio::io::AsyncWriteExt as _;
            let _ = input.write_all(spec.credentials.as_bytes()).await;
            let _ = input.flush().await;
        }
        let tail = StderrTail::collect(child.stderr.take());
        let in_use = still_booked && driver.step(|core, _| core.deployed(booking));
        if in_use {
            tracing::info!(
                "slot {}: runtime {pid} runs for {requester}{}",
                booking.0,
                vessel
                    .uid()
                    .map(|u| format!(" as uid {u}"))
                    .unwrap_or_default()
            );
        }
        let (over, mut over_limit) = oneshot::channel();
        let watcher = tokio::spawn(watch(vessel.clone(), over));
        let mut freed = false;
        let exit = if in_use {
            tokio::select! {
                exit = child.wait() => exit,
                _ = stopped => {
                    freed = true;
                    let _ = child.kill().await;
                    child.wait().await
                }
                Ok(()) = &mut over_limit => {
                    let _ = child.kill().await;
                    child.wait().await
                }
            }
        } else {
            freed = true;
            let _ = child.kill().await;
            child.wait().await
        };
        watcher.abort();
        drop(stdin);
        let mut how = match &exit {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        };
        // The slot is free as soon as the program ended: taking the vessel
        // down (killing what it left, unmounting, reclaiming) runs on,
        // under another identity than the next vessel's.
        let mine = {
            let mut lent = lock(&self.lent);
            let mine = matches!(lent.get(&booking), Some(Lent { phase: Phase::Running { pid: p, .. }, .. }) if *p == pid);
            if mine {
                lent.remove(&booking);
            }
            mine
        };
        if mine {
            driver.step(|core, _| core.runtime_ended(booking));
        }
        let tail = tail.text().await;
        let tail = tail.trim().to_owned();
        // Why a program failed, for the status: its last word.
        if exit
            .as_ref()
            .is_ok_and(|s| s.code().is_some_and(|c| c != 0))
        {
            if let Some(last) = tail.lines().next_back() {
                how = format!("{how}: {}", last.trim());
            }
        }
        let taken_down = vessel.clone();
        let ended = tokio::task::spawn_blocking(move || taken_down.finish(how, freed)).await;
        let how = ended.as_ref().map_or_else(
            |e| format!("its take-down failed: {e}"),
            |e| {
                let mut how = e.end.clone();
                if !e.limits_hit.is_empty() {
                    how.push_str(&format!("; limits reached: {}", e.limits_hit.join("; ")));
                }
                how
            },
        );
        if tail.is_empty() {
            tracing::info!("slot {}: runtime {pid} ended ({how})", booking.0);
        } else {
            tracing::info!(
                "slot {}: runtime {pid} ended ({how}); its last error output: {tail}",
                booking.0
            );
        }
    }
}

/// Measures `vessel` every [`SAMPLE_EVERY`] until aborted; tells `over`
/// when it must be killed (past its disk limit, where no tmpfs holds it).
async fn watch(vessel: Arc<Vessel>, over: oneshot::Sender<()>) {
    let mut over = Some(over);
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    loop {
        every.tick().await;
        let v = vessel.clone();
        let kill = tokio::task::spawn_blocking(move || v.sample())
            .await
            .unwrap_or(false);
        if kill {
            if let Some(over) = over.take() {
                let _ = over.send(());
            }
        }
    }
}

/// Checks what a requester sent before anything is fetched or started.
fn check(spec: &LaunchSpec) -> Result<(), String> {
    let hex = spec.sha256.len() == 64
        && spec
            .sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return Err("malformed launch: sha256 must be 64 lowercase hexadecimal digits".into());
    }
    if spec.size == 0 || spec.size > MAX_PROGRAM {
        return Err(format!(
            "malformed launch: a program of {} bytes (at most {MAX_PROGRAM})",
            spec.size
        ));
    }
    if spec.credentials.len() > 64 * 1024 {
        return Err("malformed launch: credentials larger than 64 KiB".into());
    }
    if spec.env.len() > 256 {
        return Err("malformed launch: more than 256 environment variables".into());
    }
    for (name, value) in &spec.env {
        let valid = !name.is_empty()
            && name.len() <= 256
            && value.len() <= 64 * 1024
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !value.contains('\0');
        if !valid {
            return Err(format!(
                "malformed launch: bad environment variable `{name}`"
            ));
        }
        if forbidden_env(name) {
            return Err(format!(
                "malformed launch: the environment variable `{name}` may not be set"
            ));
        }
    }
    Ok(())
}

/// Puts the program of `spec` into the cache of `work_dir`: reused when
/// present with the right hash, else fetched from the requester piece by
/// piece, checked, and renamed into place. Daemons sharing a work
/// directory fetch one content once: the others wait for the first (a lock
/// on the content's directory) and use its file.
async fn fetch(work_dir: &Path, spec: &LaunchSpec) -> Result<PathBuf, String> {
    let dir = work_dir.join("bin").join(&spec.sha256);
    let path = dir.join("program");
    // Present and right: nothing to write (the cache may be someone
    // else's, readable only).
    if cached(&path, spec).await {
        return Ok(path);
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock_path = dir.join(".fetching");
    // Held until the content is in place (or the fetch failed); released
    // by the kernel if this daemon dies.
    let _fetching = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        Ok::<_, String>(file)
    })
    .await
    .map_err(|e| format!("locking the program's cache entry: {e}"))??;
    // Another daemon may have put it there while this one waited.
    if cached(&path, spec).await {
        return Ok(path);
    }
    let partial = dir.join(format!(".partial-{}", fastrand::u64(..)));
    let fetched = fetch_into(&partial, spec).await;
    match fetched {
        Ok(()) => {}
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    }
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(|e| format!("cannot move the program into {}: {e}", path.display()))?;
    tracing::info!("cached program {} ({} bytes)", spec.sha256, spec.size);
    Ok(path)
}

/// Whether the cache holds the program of `spec` at `path`, with the
/// right hash; a corrupt copy is removed.
async fn cached(path: &Path, spec: &LaunchSpec) -> bool {
    if tokio::fs::metadata(path).await.is_err() {
        return false;
    }
    match file_sha256(path).await {
        Ok((sha, _)) if sha == spec.sha256 => true,
        _ => {
            tracing::warn!("{}: corrupt, fetching it again", path.display());
            let _ = tokio::fs::remove_file(path).await;
            false
        }
    }
}

async fn fetch_into(partial: &Path, spec: &LaunchSpec) -> Result<(), String> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::File::create(partial)
        .await
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let mut hasher = Sha256Hasher::default();
    let mut offset = 0u64;
    while offset < spec.size {
        let call = spec.binary.chunk(spec.sha256.clone(), offset, MAX_CHUNK);
        let piece = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .map_err(|_| "fetching the program: no answer within 60 s".to_owned())?
            .map_err(|e| format!("fetching the program: {e}"))?
            .0;
        if piece.is_empty() || offset + piece.len() as u64 > spec.size {
            return Err("fetching the program: the requester sent a wrong piece".into());
        }
        hasher.update(&piece);
        file.write_all(&piece)
            .await
            .map_err(|e| format!("writing {}: {e}", partial.display()))?;
        offset += piece.len() as u64;
    }
    file.flush()
        .await
        .map_err(|e| format!("writing {}: {e}", partial.display()))?;
    drop(file);
    let got = hasher.finish();
    if got != spec.sha256 {
        return Err(format!(
            "the program received has sha256 {got}, not the announced {}: refused",
            spec.sha256
        ));
    }
    set_executable(partial).await
}

async fn set_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .await
        .map_err(|e| format!("cannot make {} executable: {e}", path.display()))
}

/// The lender as the driver sees it (a cheap handle on the shared state).
pub(crate) struct LenderRole(pub(crate) Arc<Lender>);

impl Role for LenderRole {
    fn on_event(&self, _driver: &Arc<Driver>, event: Event<String>) {
        let lender = &self.0;
        match event {
            Event::Deploy {
                booking, requester, ..
            } => {
                tracing::info!("slot {} booked by {requester}", booking.0);
                lock(&lender.lent).insert(
                    booking,
                    Lent {
                        requester,
                        phase: Phase::AwaitingSpec,
                        since: Instant::now(),
                    },
                );
            }
            Event::SlotFreed {
                booking,
                requester,
                reason,
            } => {
                tracing::info!("slot {} of {requester} is free ({reason:?})", booking.0);
                if let Some(lent) = lock(&lender.lent).remove(&booking) {
                    if let Phase::Running { stop, .. } = lent.phase {
                        let _ = stop.send(());
                    }
                }
            }
            _ => {}
        }
    }

    fn launch(
        &self,
        driver: &Arc<Driver>,
        from: String,
        booking: BookingId,
        spec: LaunchSpec,
    ) -> Result<(), String> {
        let lender = &self.0;
        {
            let mut lent = lock(&lender.lent);
            let Some(entry) = lent.get_mut(&booking) else {
                tracing::warn!(
                    "refused a launch from {from}: slot {} is not booked",
                    booking.0
                );
                return Err(format!("no slot is booked as {} here", booking.0));
            };
            if entry.requester != from || !matches!(entry.phase, Phase::AwaitingSpec) {
                tracing::warn!(
                    "refused a launch from {from}: slot {} is not booked by it, or already started",
                    booking.0
                );
                return Err(format!("slot {} is not yours to start", booking.0));
            }
            if let Err(e) = check(&spec) {
                tracing::warn!("refused a launch from {from}: {e}");
                lent.remove(&booking);
                drop(lent);
                driver.step(|core, _| core.runtime_ended(booking));
                return Err(e);
            }
            entry.phase = Phase::Starting;
        }
        let binary = driver.runtime().adopt(&spec.binary);
        let spec = LaunchSpec { binary, ..spec };
        tokio::spawn(lender.clone().start(driver.clone(), booking, from, spec));
        Ok(())
    }

    fn lent(&self) -> Vec<LentNode> {
        let mut list: Vec<LentNode> = lock(&self.0.lent)
            .iter()
            .map(|(booking, lent)| {
                let (pid, vessel) = match &lent.phase {
                    Phase::Running { pid, vessel, .. } => (Some(*pid), Some(vessel)),
                    _ => (None, None),
                };
                let (usage, limits_hit) = vessel.map(|v| v.usage()).unzip();
                LentNode {
                    requester: lent.requester.clone(),
                    booking: booking.0,
                    pid,
                    seconds: lent.since.elapsed().as_secs(),
                    uid: vessel.and_then(|v| v.uid()),
                    usage,
                    limits_hit: limits_hit.unwrap_or_default(),
                }
            })
            .collect();
        list.sort_by_key(|l| l.booking);
        list
    }

    fn vessels(&self) -> Option<VesselStatus> {
        Some(self.0.vessels.status())
    }
}
