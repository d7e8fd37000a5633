//! `actogrid deploy` through a PBS scheduler played by the fake scheduler
//! commands of `acquisition/tests/fake-scheduler` (PBS has not run here
//! against a real one): the job's tasks start runtimes that register, the
//! virtual node registered by name is found by another program, and
//! Ctrl-C cancels the job.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use actogrid::{NodeUrl, lookup_vn};
use actogrid_builtin::EchoProxy;
use support::{Killed, TempDir, alive, runtime};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbs_job_starts_runtimes_and_a_registered_vn_is_found_by_url() {
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("../acquisition/tests/fake-scheduler");
    let fake = fake.canonicalize().unwrap();
    let dir = TempDir::new("pbs");
    let state = dir.0.join("fake-state");
    std::fs::create_dir_all(&state).unwrap();
    let text = support::descriptor(
        "timeout=\"60s\"",
        "",
        "job",
        &format!(
            r#"<processDefinition id="runtime"><jvmProcess/></processDefinition>
            <processDefinition id="job">
              <pbsProcess>
                <processReference refid="runtime"/>
                <commandPath value="{}/qsub"/>
                <pbsOption><hostsNumber>1</hostsNumber><processorPerNode>3</processorPerNode></pbsOption>
              </pbsProcess>
            </processDefinition>"#,
            fake.display()
        ),
        true,
    );
    let path = dir.write("pbs.xml", &text);
    let port = free_port();
    let path_env = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The deployer and this test are two programs: they share objects
    // because they are given the same authority (a site's, say).
    let authority = std::sync::Arc::new(actogrid::Authority::generate("site").unwrap());
    let ca = dir.write("ca.pem", &authority.cert_pem());
    let ca_key = dir.write("ca.key", &authority.key_pem());
    // Killed whatever happens to the test, so that no deployer outlives it.
    let mut deployer = Killed(
        Command::new(env!("CARGO_BIN_EXE_actogrid"))
            .args([
                "deploy",
                "--no-progress",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg(&path)
            .env(actogrid::tls::AUTHORITY_ENV, &ca)
            .env(actogrid::tls::AUTHORITY_KEY_ENV, &ca_key)
            .env("PATH", path_env)
            .env("FAKE_SCHED_DIR", &state)
            .env("HOME", &dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(deployer.0.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        let line = lines.next().expect("a node URL").unwrap();
        assert!(line.starts_with("Workers\tactogrid://"), "{line}");
    }

    // The runtimes' ticket is in a file of its own, private to the user,
    // never in the job script.
    let jobs = dir.0.join(".cache/actogrid/jobs");
    let mut credentials = Vec::new();
    for job in std::fs::read_dir(&jobs).unwrap().flatten() {
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&job.path()), 0o700, "{}", job.path().display());
        for file in std::fs::read_dir(job.path()).unwrap().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(file.path()).unwrap_or_default();
            if name.ends_with(".credentials") {
                assert_eq!(mode(&file.path()), 0o600, "{name}");
                assert!(text.contains("\"ticket\""), "{text}");
                credentials.push(name);
            } else {
                assert!(!text.contains("\"ticket\""), "{name} holds the ticket");
            }
        }
    }
    assert_eq!(credentials.len(), 1, "one job, one credentials file");

    // Another program finds the virtual node by URL and calls its nodes:
    // a program of another authority cannot, one of the same can.
    let stranger = runtime().await;
    let url: NodeUrl = format!("actogrid://127.0.0.1:{port}/Workers")
        .parse()
        .unwrap();
    assert!(lookup_vn(&stranger, &url).await.is_err());
    stranger.shutdown();
    let rt = actogrid::Runtime::builder()
        .identity(actogrid::Identity::member_of(&authority).unwrap())
        .build();
    let url: NodeUrl = format!("actogrid://127.0.0.1:{port}/Workers")
        .parse()
        .unwrap();
    let nodes = lookup_vn(&rt, &url).await.unwrap();
    assert_eq!(nodes.len(), 3);
    for node in &nodes {
        EchoProxy::new(node).await.unwrap().ping().await.unwrap();
    }
    rt.shutdown();

    let pids: Vec<u32> = std::fs::read_dir(state.join("jobs"))
        .unwrap()
        .flatten()
        .filter_map(|j| std::fs::read_to_string(j.path().join("pid")).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "one job");
    Command::new("kill")
        .args(["-INT", &deployer.0.id().to_string()])
        .status()
        .unwrap();
    assert!(deployer.0.wait().unwrap().success());
    let job = std::fs::read_dir(state.join("jobs"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let final_state = std::fs::read_to_string(job.join("state")).unwrap();
    assert_eq!(final_state.trim(), "X", "the job was cancelled");
    let start = std::time::Instant::now();
    while alive(pids[0]) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pids[0]));
}
