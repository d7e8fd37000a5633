//! What the facade offers so a program needs no other crate for the
//! common cases: timers and blocking work without naming tokio, errors of
//! group calls that `?` can carry, the URL of a registered name, a
//! one-line view of a deployment's runtimes. All in one process, over
//! loopback.

use actogrid::time::{Duration, Instant, sleep, timeout};
use actogrid::{CallError, Config, Group, GroupError, NodeUrl, Runtime, RuntimeSummary};
use actogrid_builtin::{RecorderProxy, WorkerError, WorkerProxy};

/// Waits and computes without naming tokio.
struct Patient;

#[actogrid::active]
#[allow(unreachable_pub)]
impl Patient {
    pub fn new() -> Self {
        Patient
    }

    pub async fn sum_later(&self, ms: u64, upto: u64) -> u64 {
        sleep(Duration::from_millis(ms)).await;
        actogrid::spawn_blocking(move || (1..=upto).sum())
            .await
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_and_blocking_work_come_from_the_facade() -> anyhow::Result<()> {
    let rt = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let patient = PatientProxy::new(&rt.local_node("here")).await?;
    let started = Instant::now();
    let sum = timeout(Duration::from_secs(30), patient.sum_later(50, 100)).await??;
    assert_eq!(sum, 5050);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(
        timeout(Duration::from_millis(10), patient.sum_later(5_000, 1))
            .await
            .is_err()
    );
    rt.shutdown();
    Ok(())
}

/// `values()` fails with an error that `?` turns into any error type.
async fn all_values(group: &Group<WorkerProxy>, fail: &[bool]) -> anyhow::Result<Vec<u64>> {
    Ok(group
        .scatter(fail.iter().copied(), |w, f| w.maybe_fail(f))
        .values()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_error_says_which_member_and_carries_its_error() -> anyhow::Result<()> {
    let rt = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let nodes = vec![rt.local_node("a"), rt.local_node("b"), rt.local_node("c")];
    let group = Group::create(&nodes, |node, rank| {
        WorkerProxy::new(node, format!("w{rank}"))
    })
    .await?;
    assert_eq!(all_values(&group, &[false, false, false]).await?, [7, 7, 7]);

    let err = group
        .scatter([false, true, true], |w, f| w.maybe_fail(f))
        .values()
        .await
        .unwrap_err();
    let expected = CallError::Method(WorkerError("w1 was asked to fail".into()));
    assert_eq!(
        err,
        GroupError {
            rank: 1,
            error: expected.clone()
        }
    );
    assert_eq!(
        err.to_string(),
        format!("member 1 of the group: {expected}")
    );
    let (rank, error) = err.into();
    assert_eq!((rank, error), (1, expected));

    let err = all_values(&group, &[true, false, false]).await.unwrap_err();
    assert!(
        err.to_string().starts_with("member 0 of the group: "),
        "{err}"
    );
    rt.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_name_has_a_url_other_runtimes_look_up() -> anyhow::Result<()> {
    let a = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let b = Runtime::bind("127.0.0.1:0", Config::default()).await?;
    let node = a.local_node("journal-node");
    let journal = RecorderProxy::new(&node).await?;
    node.register("journal", &journal).await?;
    let url = node.url_of("journal");
    assert_eq!(
        url.to_string(),
        format!("actogrid://{}/journal", a.address().unwrap())
    );
    let found: RecorderProxy = b.lookup(&url).await?;
    found.push(3).await?;
    assert_eq!(journal.seen().await?, [3]);
    a.shutdown();
    b.shutdown();
    Ok(())
}

#[test]
fn a_runtime_summary_reads_on_one_line() {
    let summary = RuntimeSummary {
        id: 3,
        host: "node-3".into(),
        pid: 4242,
        nodes: vec![
            NodeUrl::new("10.0.0.3", 7000, "w-0"),
            NodeUrl::new("10.0.0.3", 7000, "w-1"),
        ],
        launch: "runtime `jvm` of `workers` on node-3".into(),
    };
    assert_eq!(
        summary.to_string(),
        "node-3 pid 4242 (runtime `jvm` of `workers` on node-3): \
         actogrid://10.0.0.3:7000/w-0, actogrid://10.0.0.3:7000/w-1"
    );
    let empty = RuntimeSummary {
        nodes: Vec::new(),
        ..summary
    };
    assert_eq!(
        empty.to_string(),
        "node-3 pid 4242 (runtime `jvm` of `workers` on node-3): no node"
    );
}
