//! SLURM jobs on a real SLURM cluster. Skipped (with a note) unless `sbatch`
//! is on the `PATH` and `ACTOGRID_TEST_SLURM=1`; `scripts/testbed/slurm up`
//! provides a single-node cluster.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actogrid_acquisition::batch::{BatchError, BatchJob, JobState, Scheduler, submit};
use actogrid_acquisition::exec::{LocalShell, RuntimeCommand};
use actogrid_descriptor::Spanned;
use actogrid_descriptor::model::{Link, ProcessKind, SlurmProcess};

fn enabled() -> bool {
    let has_sbatch = std::process::Command::new("sh")
        .args(["-c", "command -v sbatch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let asked = std::env::var("ACTOGRID_TEST_SLURM").as_deref() == Ok("1");
    if !(has_sbatch && asked) {
        eprintln!(
            "note: SLURM test skipped (needs sbatch on the PATH and ACTOGRID_TEST_SLURM=1; \
             `scripts/testbed/slurm up` starts a cluster)"
        );
        return false;
    }
    true
}

/// The test's working directory and jobs: cancels what is left and removes
/// the directory when dropped.
struct Scratch {
    dir: PathBuf,
    jobs: Mutex<Vec<String>>,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = PathBuf::from(format!(
            "/tmp/actogrid-batch-slurm-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch {
            dir,
            jobs: Mutex::new(Vec::new()),
        }
    }

    fn work(&self) -> String {
        self.dir.to_str().unwrap().to_owned()
    }

    fn track(&self, job: &BatchJob) {
        self.jobs.lock().unwrap().push(job.id.clone());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for id in self.jobs.lock().unwrap().iter() {
            let _ = std::process::Command::new("scancel").arg(id).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

fn slurm(partition: Option<&str>, tasks: u32) -> Scheduler {
    Scheduler::from_process(&ProcessKind::Slurm(SlurmProcess {
        job_name: None,
        partition: partition.map(str::to_owned),
        account: None,
        nodes: 1,
        tasks_per_node: tasks,
        cpus_per_task: None,
        walltime: Some(Duration::from_secs(300)),
        memory: None,
        extra_options: Vec::new(),
        output_file: None,
        error_file: None,
        script_path: None,
        link: Link {
            next: Spanned::new("runtime".to_owned(), Default::default()),
            environment: Vec::new(),
            command_path: None,
        },
    }))
    .unwrap()
}

fn sh(command: &str) -> RuntimeCommand {
    RuntimeCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), command.into()],
        env: vec![("MARK".into(), "from slurm".into())],
        credentials: None,
    }
}

async fn wait_for(job: &BatchJob, done: impl Fn(&JobState) -> bool) -> (JobState, Vec<JobState>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<JobState> = Vec::new();
    loop {
        let state = job.state(&LocalShell).await.unwrap();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if done(&state) {
            return (state, seen);
        }
        assert!(Instant::now() < deadline, "timed out: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slurm_jobs_run_fail_and_cancel() {
    if !enabled() {
        return;
    }
    let scratch = Scratch::new("jobs");
    let work = scratch.work();

    // Two tasks, each writing a marker named after its SLURM task rank.
    let runtime = sh("printf '%s' \"$MARK\" > marker.$SLURM_PROCID");
    let job = submit(&LocalShell, &slurm(None, 2), &runtime, &work, "two")
        .await
        .unwrap();
    scratch.track(&job);
    assert_eq!(job.runtimes, Some(2));
    let (end, seen) = wait_for(&job, JobState::is_finished).await;
    assert_eq!(end, JobState::Completed, "{seen:?}");
    for rank in 0..2 {
        let marker = scratch.dir.join(format!("marker.{rank}"));
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "from slurm",
            "{}",
            marker.display()
        );
    }
    assert_eq!(job.stderr_tail(&LocalShell).await.unwrap(), "");
    // The job's files are the submitter's alone: they hold its ticket.
    assert_eq!(mode(&scratch.dir), 0o700);
    assert_eq!(mode(std::path::Path::new(&job.files.script)), 0o700);
    assert_eq!(mode(std::path::Path::new(&job.files.output)), 0o600);
    assert_eq!(mode(std::path::Path::new(&job.files.error)), 0o600);

    // A failing runtime: the job fails, its error file says why.
    let job = submit(
        &LocalShell,
        &slurm(None, 1),
        &sh("echo boom >&2; exit 3"),
        &work,
        "bad",
    )
    .await
    .unwrap();
    scratch.track(&job);
    let (end, seen) = wait_for(&job, JobState::is_finished).await;
    assert!(matches!(end, JobState::Failed { .. }), "{seen:?}");
    assert!(
        job.stderr_tail(&LocalShell).await.unwrap().contains("boom"),
        "{end}"
    );

    // A long job, cancelled once running.
    let job = submit(
        &LocalShell,
        &slurm(None, 1),
        &sh("exec sleep 120"),
        &work,
        "long",
    )
    .await
    .unwrap();
    scratch.track(&job);
    wait_for(&job, |s| *s == JobState::Running || s.is_finished()).await;
    job.cancel(&LocalShell).await.unwrap();
    let (end, seen) = wait_for(&job, JobState::is_finished).await;
    assert_eq!(end, JobState::Cancelled, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slurm_refuses_a_bad_partition() {
    if !enabled() {
        return;
    }
    let scratch = Scratch::new("partition");
    let err = submit(
        &LocalShell,
        &slurm(Some("nope"), 1),
        &sh("true"),
        &scratch.work(),
        "refused",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BatchError::Refused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("slurm on localhost: sbatch refused the job: sbatch: error: "),
        "{text}"
    );
    assert!(text.contains("invalid partition specified: nope"), "{text}");
    // The refused job's script (and its directory) is removed again.
    assert!(
        !scratch.dir.exists(),
        "{} left behind",
        scratch.dir.display()
    );
}
