//! Deployments through a real SLURM (the single-node cluster of
//! `scripts/testbed/slurm`): submit, run, cancel, a job that fails, a job
//! that stays pending, a deployer killed while its job is pending.
//! Skipped unless `ACTOGRID_TEST_SLURM=1`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actogrid::{DeployError, DeployOptions, Deployment};
use support::{TempDir, alive, eventually, runtime};

fn enabled() -> bool {
    if std::env::var("ACTOGRID_TEST_SLURM").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("skipped: set ACTOGRID_TEST_SLURM=1 with scripts/testbed/slurm up");
    false
}

fn descriptor(slurm: &str, command: Option<&str>, vn_attrs: &str) -> String {
    descriptor_with(slurm, "", command, vn_attrs)
}

fn descriptor_with(slurm: &str, attrs: &str, command: Option<&str>, vn_attrs: &str) -> String {
    let command = command
        .map(|c| format!("<commandPath value=\"{c}\"/>"))
        .unwrap_or_default();
    support::descriptor(
        vn_attrs,
        "",
        "job",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess>{command}</jvmProcess></processDefinition>
            <processDefinition id="job">
              <slurmProcess {attrs}>
                <processReference refid="runtime"/>
                {slurm}
              </slurmProcess>
            </processDefinition>"#
        ),
        false,
    )
}

/// Gives the job process a name of its own, so that parallel tests can
/// tell their jobs apart (`actogrid-Workers-<name>`).
async fn deploy(dir: &TempDir, text: &str, name: &str) -> (actogrid::Runtime, Deployment) {
    let text = text
        .replace("refid=\"job\"", &format!("refid=\"{name}\""))
        .replace("id=\"job\"", &format!("id=\"{name}\""));
    let path = dir.write("slurm.xml", &text);
    let rt = runtime().await;
    let options = DeployOptions {
        work_dir: dir.0.join("jobs").display().to_string(),
        ..support::options(&rt)
    };
    let d = Deployment::load_with(&path, Default::default(), options)
        .await
        .expect("loads");
    d.activate().await.expect("activates");
    (rt, d)
}

fn squeue_state(job: &str) -> String {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-t", "all", "-j", job, "-o", "%T"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slurm_job_starts_runtimes_that_answer_and_is_cancelled_at_the_end() {
    if !enabled() {
        return;
    }
    let dir = TempDir::new("slurm-run");
    let slurm = r#"<slurmOption><nodes>1</nodes><tasksPerNode>2</tasksPerNode></slurmOption>"#;
    let (rt, d) = deploy(&dir, &descriptor(slurm, None, "timeout=\"60s\""), "run").await;
    let vn = d.virtual_node("Workers").unwrap();
    let nodes = vn.nodes().await.expect("two runtimes from the job");
    assert_eq!(nodes.len(), 2);
    support::ping_all(&nodes).await;
    let pids: Vec<u32> = d.runtimes().iter().map(|r| r.pid).collect();
    let jobs = d.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = jobs[0].1.clone();
    assert_eq!(squeue_state(&job), "RUNNING");
    // The dashboard's state says where the runtimes come from.
    let providers: Vec<String> = d.status().await.virtual_nodes[0]
        .runtimes
        .iter()
        .map(|r| r.provider.clone())
        .collect();
    assert_eq!(providers, vec![format!("slurm job {job}"); 2]);
    d.kill().await;
    assert!(eventually(Duration::from_secs(15), || pids.iter().all(|p| !alive(*p))).await);
    assert!(
        eventually(Duration::from_secs(15), || {
            let s = squeue_state(&job);
            s.is_empty() || s == "CANCELLED" || s == "COMPLETED"
        })
        .await
    );
    assert!(
        !dir.0.join("jobs").exists() || std::fs::read_dir(dir.0.join("jobs")).unwrap().count() == 0
    );
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_scheduler_refuses_is_reported() {
    if !enabled() {
        return;
    }
    let dir = TempDir::new("slurm-refused");
    let text = descriptor_with(
        "",
        "partition=\"no-such-partition\"",
        None,
        "timeout=\"30s\"",
    );
    let (rt, d) = deploy(&dir, &text, "refused").await;
    let (_, text) = support::nodes_error(&d).await;
    assert!(text.contains("sbatch"), "{text}");
    assert!(text.to_lowercase().contains("partition"), "{text}");
    d.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_runtimes_fail_is_reported_with_its_state_and_stderr() {
    if !enabled() {
        return;
    }
    let dir = TempDir::new("slurm-failing");
    let slurm = r#"<slurmOption><nodes>1</nodes><tasksPerNode>1</tasksPerNode></slurmOption>"#;
    let (rt, d) = deploy(
        &dir,
        &descriptor(slurm, Some("/nonexistent/runtime"), "timeout=\"60s\""),
        "failing",
    )
    .await;
    let (err, text) = support::nodes_error(&d).await;
    assert!(
        matches!(
            err,
            DeployError::NotEnoughNodes {
                impossible: true,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("ended"), "{text}");
    assert!(text.contains("/nonexistent/runtime"), "{text}");
    d.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_pending_past_the_timeout_is_reported_with_its_state() {
    if !enabled() {
        return;
    }
    let dir = TempDir::new("slurm-pending");
    let slurm = r#"<slurmOption><nodes>1</nodes><extraOptions>--begin=now+1hour</extraOptions></slurmOption>"#;
    let (rt, d) = deploy(&dir, &descriptor(slurm, None, "timeout=\"4s\""), "pending").await;
    let err = d
        .virtual_node("Workers")
        .unwrap()
        .nodes()
        .await
        .unwrap_err();
    let job = d.jobs()[0].1.clone();
    let text = err.to_string();
    assert!(text.contains("pending"), "{text}");
    assert!(text.contains("BeginTime"), "{text}");
    d.kill().await;
    assert!(
        eventually(Duration::from_secs(15), || {
            let s = squeue_state(&job);
            s.is_empty() || s == "CANCELLED"
        })
        .await,
        "the pending job was not cancelled"
    );
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technical_service_applies_on_slurm_created_nodes_as_on_local_ones() {
    if !enabled() {
        return;
    }
    let dir = TempDir::new("slurm-service");
    let slurm = r#"<slurmOption><nodes>1</nodes><tasksPerNode>2</tasksPerNode></slurmOption>"#;
    let text = support::with_services(
        &descriptor(slurm, None, "timeout=\"60s\""),
        "site",
        support::SITE_SERVICE,
    );
    let (rt, d) = deploy(&dir, &text, "service").await;
    let vn = d.virtual_node("Workers").unwrap();
    assert_eq!(vn.nodes().await.unwrap().len(), 2);
    support::assert_site_applied(&d, &vn);
    d.kill().await;
    rt.shutdown();
}

fn jobs_named(name: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "-n", name, "-o", "%i"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_deployer_killed_with_sigkill_leaves_no_pending_job_and_no_job_directory() {
    if !enabled() {
        return;
    }
    let dir = TempDir::new("slurm-sigkill");
    // A job name of its own, so that the test finds its job in the queue.
    let process = format!("pending{}", fastrand::u32(..));
    let slurm = r#"<slurmOption><nodes>1</nodes><extraOptions>--begin=now+1hour</extraOptions></slurmOption>"#;
    let text = descriptor(slurm, None, "timeout=\"300s\"")
        .replace("refid=\"job\"", &format!("refid=\"{process}\""))
        .replace("id=\"job\"", &format!("id=\"{process}\""));
    let path = dir.write("d.xml", &text);
    // Its job files go below this home, its reaper and ssh masters below
    // this temporary directory.
    let home = dir.0.join("home");
    let tmp = dir.0.join("tmp");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let deployer = Command::new(env!("CARGO_BIN_EXE_actogrid"))
        .args(["deploy", "--no-progress", "--lease-ms", "3000"])
        .arg(&path)
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut deployer = support::Killed(deployer);
    let deployer = &mut deployer.0;
    // Drained, so that the deployer never blocks on a full pipe.
    let stderr = deployer.stderr.take().unwrap();
    std::thread::spawn(move || BufReader::new(stderr).lines().for_each(drop));
    let name = format!("actogrid-Workers-{process}");
    let jobs_dir = home.join(".cache/actogrid/jobs");
    let job_dir = jobs_dir.join(format!("{name}-{}", deployer.id()));
    let started = Instant::now();
    let job = loop {
        if let Some(job) = jobs_named(&name).pop() {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the job was never submitted"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(squeue_state(&job).starts_with("PENDING"));
    assert!(job_dir.exists(), "{}", job_dir.display());
    deployer.kill().unwrap(); // SIGKILL: no chance to clean up
    deployer.wait().unwrap();
    let killed = Instant::now();
    let clean = || {
        let state = squeue_state(&job);
        (state.is_empty() || state == "CANCELLED")
            && !job_dir.exists()
            && std::fs::read_dir(&tmp).unwrap().count() == 0
    };
    let limit = Duration::from_secs(30);
    while !clean() && killed.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    let state = squeue_state(&job);
    if !clean() {
        let _ = Command::new("scancel").arg(&job).status();
    }
    assert!(
        state.is_empty() || state == "CANCELLED",
        "the pending job outlived its deployer: {state}"
    );
    assert!(!job_dir.exists(), "{} left behind", job_dir.display());
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the temporary directory: {left:?}");
    eprintln!(
        "job cancelled and files removed {:.1} s after SIGKILL (lease 3 s)",
        killed.elapsed().as_secs_f64()
    );
}
