//! PBS, LSF, OAR and Grid Engine jobs submitted to the fake scheduler of
//! `tests/fake-scheduler/`: shell scripts with the commands' names that
//! print real-format output, run the job script with the environment the
//! real scheduler gives it (node files, `PE_HOSTFILE`), fake the launchers
//! (`pbsdsh`, `blaunch`, `oarsh`, `qrsh`), answer states from files and kill
//! on cancel.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actogrid_acquisition::batch::{
    BatchError, BatchJob, JobState, Scheduler, SchedulerKind, submit,
};
use actogrid_acquisition::exec::{
    BoxFuture, ExecError, LocalShell, Output, Running, RuntimeCommand, Shell, quote,
};
use actogrid_descriptor::Spanned;
use actogrid_descriptor::model::{
    GridEngineProcess, Link, LsfProcess, OarProcess, PbsProcess, ProcessKind,
};

/// This machine, with the fake scheduler first on the `PATH`.
struct FakeShell {
    prefix: String,
}

impl Shell for FakeShell {
    fn host(&self) -> &str {
        "localhost"
    }

    fn run<'a>(
        &'a self,
        script: &'a str,
        stdin: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Output, ExecError>> {
        Box::pin(async move {
            LocalShell
                .run(&format!("{}{script}", self.prefix), stdin)
                .await
        })
    }

    fn spawn<'a>(
        &'a self,
        script: &'a str,
        input: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Box<dyn Running>, ExecError>> {
        Box::pin(async move {
            LocalShell
                .spawn(&format!("{}{script}", self.prefix), input)
                .await
        })
    }
}

/// A test's directory and fake scheduler; kills every job left and removes
/// the directory when dropped.
struct Fake {
    dir: PathBuf,
    shell: FakeShell,
}

impl Fake {
    fn new(test: &str, mode: &str) -> Fake {
        let dir = PathBuf::from(format!(
            "/tmp/actogrid-batch-fake-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-scheduler");
        let prefix = format!(
            "export PATH={}:\"$PATH\" FAKE_SCHED_DIR={} FAKE_SCHED_MODE={mode}; ",
            quote(bin.to_str().unwrap()),
            quote(dir.join("sched").to_str().unwrap()),
        );
        Fake {
            dir,
            shell: FakeShell { prefix },
        }
    }

    fn work(&self) -> String {
        self.dir.join("work").to_str().unwrap().to_owned()
    }

    fn markers(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("work"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("marker."))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let jobs = self.dir.join("sched/jobs");
        if let Ok(rd) = std::fs::read_dir(&jobs) {
            for job in rd.flatten() {
                if let Ok(pid) = std::fs::read_to_string(job.path().join("pid")) {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{}", pid.trim())])
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn link() -> Link {
    Link {
        next: Spanned::new("runtime".to_owned(), Default::default()),
        environment: Vec::new(),
        command_path: None,
    }
}

fn pbs(queue: Option<&str>) -> Scheduler {
    Scheduler::from_process(&ProcessKind::Pbs(PbsProcess {
        interactive: false,
        queue: queue.map(str::to_owned),
        job_name: Some("fake-pbs".into()),
        hostlist: Vec::new(),
        hosts_number: Some(1),
        processor_per_node: Some(3),
        booking_duration: Some(Duration::from_secs(600)),
        output_file: None,
        script_path: None,
        link: link(),
    }))
    .unwrap()
}

fn lsf(queue: Option<&str>) -> Scheduler {
    Scheduler::from_process(&ProcessKind::Lsf(LsfProcess {
        interactive: false,
        job_name: None,
        queue: queue.map(str::to_owned),
        hostlist: Vec::new(),
        processor: Some(3),
        resource_requirement: None,
        script_path: None,
        link: link(),
    }))
    .unwrap()
}

fn oar(queue: Option<&str>) -> Scheduler {
    Scheduler::from_process(&ProcessKind::Oar(OarProcess {
        booked_nodes_access: None,
        interactive: false,
        queue: queue.map(str::to_owned),
        resources: Some("nodes=3,walltime=0:10:00".into()),
        script_path: None,
        link: link(),
    }))
    .unwrap()
}

fn sge(queue: Option<&str>) -> Scheduler {
    Scheduler::from_process(&ProcessKind::GridEngine(GridEngineProcess {
        interactive: false,
        queue: queue.map(str::to_owned),
        hosts_number: Some(3),
        booking_duration: None,
        parallel_environment: Some("smp".into()),
        hostlist: Vec::new(),
        script_path: None,
        link: link(),
    }))
    .unwrap()
}

/// A runtime that is a shell command.
fn sh(command: &str) -> RuntimeCommand {
    RuntimeCommand {
        program: "sh".into(),
        args: vec!["-c".into(), command.into()],
        env: vec![("MARK".into(), "hello world".into())],
        credentials: None,
    }
}

async fn wait_until_finished(fake: &Fake, job: &BatchJob, seen: &mut Vec<JobState>) -> JobState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = job.state(&fake.shell).await.unwrap();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state.is_finished() {
            return state;
        }
        assert!(Instant::now() < deadline, "job never ended: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_running(fake: &Fake, job: &BatchJob) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = job.state(&fake.shell).await.unwrap();
        if state == JobState::Running {
            return;
        }
        assert!(!state.is_finished(), "ended before running: {state}");
        assert!(Instant::now() < deadline, "never running: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a 3-task job to completion, a failing one, a long one that is
/// cancelled, and one refused by the scheduler.
async fn scenario(test: &str, mode: &str, make: fn(Option<&str>) -> Scheduler) {
    let fake = Fake::new(test, mode);
    let scheduler = make(None);
    let kind = scheduler.kind();
    let work = fake.work();

    // Three tasks, each writing a marker with its pid.
    let runtime = sh("printf '%s' \"$MARK\" > marker.$$");
    let job = submit(&fake.shell, &scheduler, &runtime, &work, "ok")
        .await
        .unwrap();
    assert_eq!(job.kind, kind);
    let mut seen = Vec::new();
    let end = wait_until_finished(&fake, &job, &mut seen).await;
    assert_eq!(end, JobState::Completed, "{seen:?}");
    assert!(
        matches!(seen[0], JobState::Pending { .. } | JobState::Running),
        "{seen:?}"
    );
    let markers = fake.markers();
    assert_eq!(markers.len(), 3, "{markers:?}");
    for m in &markers {
        let text = std::fs::read_to_string(fake.dir.join("work").join(m)).unwrap();
        assert_eq!(text, "hello world");
    }
    assert_eq!(job.stderr_tail(&fake.shell).await.unwrap(), "");
    // The job's directory and script are the submitter's alone.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&job.files.work_dir), 0o700);
        assert_eq!(mode(&job.files.script), 0o700);
    }
    // Cancelling a finished job is fine.
    job.cancel(&fake.shell).await.unwrap();

    // A runtime that fails: the job fails and its error file says why.
    let job = submit(
        &fake.shell,
        &scheduler,
        &sh("echo boom >&2; exit 3"),
        &work,
        "bad",
    )
    .await
    .unwrap();
    let end = wait_until_finished(&fake, &job, &mut Vec::new()).await;
    assert!(matches!(end, JobState::Failed { .. }), "{end}");
    let tail = job.stderr_tail(&fake.shell).await.unwrap();
    assert!(tail.contains("boom"), "{tail:?}");

    // A long job, cancelled while running: its tasks are gone.
    let job = submit(
        &fake.shell,
        &scheduler,
        &sh("echo $$ > pid.$$; exec sleep 60"),
        &work,
        "long",
    )
    .await
    .unwrap();
    wait_for_running(&fake, &job).await;
    let pids_written = Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let pids: Vec<String> = std::fs::read_dir(fake.dir.join("work"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pid."))
            .collect();
        if pids.len() == 3 || Instant::now() > pids_written {
            break pids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pids.len(), 3, "{pids:?}");
    job.cancel(&fake.shell).await.unwrap();
    assert_eq!(job.state(&fake.shell).await.unwrap(), JobState::Cancelled);
    for p in pids {
        let pid = p.trim_start_matches("pid.");
        let alive = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| !s.contains("State:\tZ"))
            .unwrap_or(false);
        assert!(!alive, "task {pid} survived the cancel");
    }

    // A queue the scheduler does not know.
    let err = submit(&fake.shell, &make(Some("nope")), &runtime, &work, "refused")
        .await
        .unwrap_err();
    assert!(matches!(err, BatchError::Refused { .. }), "{err:?}");
    let text = err.to_string();
    let program = kind.submit_program();
    let prefix = format!("{kind} on localhost: {program} refused the job: ");
    assert!(text.starts_with(&prefix), "{text}");
    let BatchError::Refused { stderr, .. } = &err else {
        unreachable!()
    };
    assert!(
        !stderr.is_empty() && text.ends_with(stderr.as_str()),
        "{text}"
    );
    // Nothing is left of a refused job.
    let script = std::path::Path::new(&work).join("refused.sh");
    assert!(!script.exists(), "{} left behind", script.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn pbs_jobs() {
    scenario("pbs", "pbs", pbs).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lsf_jobs() {
    scenario("lsf", "pbs", lsf).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oar_jobs() {
    scenario("oar", "pbs", oar).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grid_engine_jobs() {
    scenario("sge", "sge", sge).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_jobs_are_gone() {
    let fake = Fake::new("gone", "pbs");
    let scheduler = pbs(None);
    let job = submit(&fake.shell, &scheduler, &sh("true"), &fake.work(), "gone")
        .await
        .unwrap();
    wait_until_finished(&fake, &job, &mut Vec::new()).await;
    std::fs::remove_dir_all(fake.dir.join("sched/jobs")).unwrap();
    assert_eq!(job.state(&fake.shell).await.unwrap(), JobState::Gone);
    assert_eq!(job.kind, SchedulerKind::Pbs);
}
