//! Technical services on real local runtimes: applied in each node's own
//! runtime before the program sees the node, in the order listed, with
//! conflicts and requirements rejected when the deployment loads, and a
//! failing `apply` handled as the service asks.

mod support;

use actogrid::{Args, DeployError, NodeContext, ServiceError, TechnicalService};
use support::{
    SITE_SERVICE, TempDir, assert_site_applied, load, local_descriptor, runtime, with_services,
};

/// Needs an `actogrid.Environment` before it (registered in this test
/// binary only: used for load-time checks).
#[derive(Default)]
struct NeedsEnvironment;

impl TechnicalService for NeedsEnvironment {
    fn init(&mut self, _: &Args) -> Result<(), ServiceError> {
        Ok(())
    }
    fn apply(&self, _: &NodeContext) -> Result<(), ServiceError> {
        Ok(())
    }
    fn requires(&self) -> Vec<String> {
        vec!["actogrid.Environment".into()]
    }
}

actogrid::technical_service!("test.NeedsEnvironment", NeedsEnvironment);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reaches_every_node_and_its_runtime() {
    let dir = TempDir::new("svc-env");
    let text = with_services(
        &local_descriptor(2, 2, "timeout=\"30s\"", None),
        "site",
        SITE_SERVICE,
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let d = load(&rt, &path, &[]).await;
    d.activate().await.unwrap();
    let vn = d.virtual_node("Workers").unwrap();
    assert_eq!(vn.nodes().await.unwrap().len(), 4);
    assert_site_applied(&d, &vn);
    d.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_apply_in_the_order_listed() {
    let defs = r#"
      <technicalServiceDefinition id="red" class="actogrid.Environment"><arg name="color" value="red"/></technicalServiceDefinition>
      <technicalServiceDefinition id="blue" class="actogrid.Environment"><arg name="color" value="blue"/></technicalServiceDefinition>"#;
    for (order, last) in [("red blue", "blue"), ("blue red", "red")] {
        let dir = TempDir::new("svc-order");
        let text = with_services(&local_descriptor(1, 1, "", None), order, defs);
        let path = dir.write("d.xml", &text);
        let rt = runtime().await;
        let d = load(&rt, &path, &[]).await;
        d.activate().await.unwrap();
        let vn = d.virtual_node("Workers").unwrap();
        let node = vn.node().await.unwrap();
        vn.nodes().await.unwrap();
        assert_eq!(vn.properties(&node)["color"], last, "order {order}");
        d.kill().await;
        rt.shutdown();
    }
}

/// Options for loading only, with this test program as the application:
/// its classes (`test.NeedsEnvironment`) are the ones checked. (A program
/// given as `program` is asked for its own.)
fn this_program(rt: &actogrid::Runtime) -> actogrid::DeployOptions {
    actogrid::DeployOptions {
        program: None,
        ..support::options(rt)
    }
}

async fn load_error(text: &str) -> String {
    let dir = TempDir::new("svc-check");
    let path = dir.write("d.xml", text);
    let rt = runtime().await;
    let err = actogrid::Deployment::load_with(&path, Default::default(), this_program(&rt))
        .await
        .unwrap_err();
    rt.shutdown();
    assert!(matches!(err, DeployError::Descriptor(_)), "{err}");
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_requirements_unknown_classes_and_bad_arguments_stop_the_load() {
    let base = local_descriptor(1, 1, "", None);
    let two_logs = r#"
      <technicalServiceDefinition id="quiet" class="actogrid.Logging"><arg name="filter" value="warn"/></technicalServiceDefinition>
      <technicalServiceDefinition id="loud" class="actogrid.Logging"><arg name="filter" value="debug"/></technicalServiceDefinition>"#;
    let text = load_error(&with_services(&base, "quiet loud", two_logs)).await;
    assert!(
        text.contains("cannot both apply to virtual node `Workers`"),
        "{text}"
    );
    assert!(
        text.contains("d.xml:5:"),
        "points at the virtual node: {text}"
    );
    assert!(text.contains("(1 error(s))"), "one error per pair: {text}");

    let needs = r#"
      <technicalServiceDefinition id="needs" class="test.NeedsEnvironment"/>
      <technicalServiceDefinition id="env" class="actogrid.Environment"><arg name="a" value="b"/></technicalServiceDefinition>"#;
    let text = load_error(&with_services(&base, "needs env", needs)).await;
    assert!(
        text.contains("requires a `actogrid.Environment` service listed before it"),
        "{text}"
    );
    // The right order loads.
    let dir = TempDir::new("svc-ok");
    let path = dir.write("d.xml", &with_services(&base, "env needs", needs));
    let rt = runtime().await;
    actogrid::Deployment::load_with(&path, Default::default(), this_program(&rt))
        .await
        .unwrap();
    rt.shutdown();

    let unknown = r#"<technicalServiceDefinition id="x" class="nobody.Nothing"/>"#;
    let text = load_error(&with_services(&base, "x", unknown)).await;
    assert!(
        text.contains("no technical service class `nobody.Nothing` in this program"),
        "{text}"
    );

    let bad = r#"<technicalServiceDefinition id="lb" class="actogrid.LoadBalancing"><arg name="overload" value="0.3"/></technicalServiceDefinition>"#;
    let text = load_error(&with_services(&base, "lb", bad)).await;
    assert!(text.contains("refused its arguments"), "{text}");
    assert!(text.contains("must be below `overload`"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_service_drops_the_node_or_fails_the_virtual_node() {
    let refuse = |failure: &str| {
        format!(
            r#"<technicalServiceDefinition id="needs" class="actogrid.Require">
                 <arg name="commands" value="sh no-such-command-anywhere"/>
                 <arg name="failure" value="{failure}"/>
               </technicalServiceDefinition>"#
        )
    };
    // Dropped: the virtual node can no longer have its nodes.
    let dir = TempDir::new("svc-drop");
    let text = with_services(
        &local_descriptor(2, 1, "timeout=\"30s\"", None),
        "needs",
        &refuse("drop"),
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let d = load(&rt, &path, &[]).await;
    d.activate().await.unwrap();
    let vn = d.virtual_node("Workers").unwrap();
    let err = vn.nodes().await.unwrap_err();
    let text = err.to_string();
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
    assert!(
        text.contains("no `no-such-command-anywhere` on the PATH"),
        "{text}"
    );
    assert_eq!(vn.size(), 0, "a refused node is never visible");
    d.kill().await;

    // Fatal: the virtual node fails as a whole.
    let dir = TempDir::new("svc-fail");
    let text = with_services(
        &local_descriptor(1, 1, "timeout=\"30s\"", None),
        "needs",
        &refuse("fail"),
    );
    let path = dir.write("d.xml", &text);
    let d = load(&rt, &path, &[]).await;
    d.activate().await.unwrap();
    let err = d
        .virtual_node("Workers")
        .unwrap()
        .nodes()
        .await
        .unwrap_err();
    assert!(matches!(err, DeployError::ServiceFailed { .. }), "{err}");
    d.kill().await;

    // Satisfied: nodes are tagged.
    let ok = r#"<technicalServiceDefinition id="needs" class="actogrid.Require"><arg name="commands" value="sh"/></technicalServiceDefinition>"#;
    let dir = TempDir::new("svc-tag");
    let path = dir.write(
        "d.xml",
        &with_services(&local_descriptor(1, 1, "", None), "needs", ok),
    );
    let d = load(&rt, &path, &[]).await;
    d.activate().await.unwrap();
    let vn = d.virtual_node("Workers").unwrap();
    let node = vn.node().await.unwrap();
    assert_eq!(vn.properties(&node)["require.ok"], "yes");
    d.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logging_service_sets_the_runtimes_filter() {
    let defs = r#"<technicalServiceDefinition id="logs" class="actogrid.Logging"><arg name="filter" value="info,actogrid=debug"/></technicalServiceDefinition>"#;
    let dir = TempDir::new("svc-log");
    let path = dir.write(
        "d.xml",
        &with_services(&local_descriptor(1, 1, "", None), "logs", defs),
    );
    let rt = runtime().await;
    let d = load(&rt, &path, &[]).await;
    d.activate().await.unwrap();
    let vn = d.virtual_node("Workers").unwrap();
    let node = vn.node().await.unwrap();
    assert_eq!(vn.properties(&node)["log.filter"], "info,actogrid=debug");
    let pid = d.runtimes()[0].pid;
    assert!(support::has_env(pid, "RUST_LOG=info,actogrid=debug"));
    d.kill().await;
    rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancing_spreads_busy_objects_without_losing_a_request() {
    use actogrid_builtin::RecorderProxy;
    let defs = r#"
      <technicalServiceDefinition id="one-core" class="actogrid.Environment"><arg name="capacity" value="1"/></technicalServiceDefinition>
      <technicalServiceDefinition id="lb" class="actogrid.LoadBalancing"><arg name="period" value="100"/></technicalServiceDefinition>"#;
    let dir = TempDir::new("svc-lb");
    let text = with_services(
        &local_descriptor(3, 1, "timeout=\"30s\"", None),
        "one-core lb",
        defs,
    );
    let path = dir.write("d.xml", &text);
    let rt = runtime().await;
    let d = load(&rt, &path, &[]).await;
    d.activate().await.unwrap();
    let nodes = d.virtual_node("Workers").unwrap().nodes().await.unwrap();
    // Six busy objects, all on the first node.
    let recorders: Vec<RecorderProxy> =
        actogrid::wait_all((0..6).map(|_| RecorderProxy::new(&nodes[0])))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let first_pid = recorders[0].pid().await.unwrap();
    let mut pending = Vec::new();
    for value in 0..30u64 {
        for r in &recorders {
            pending.push(r.push_after(20, value));
        }
    }
    for (i, result) in actogrid::wait_all(pending).await.into_iter().enumerate() {
        assert_eq!(result.unwrap(), (i / 6) as u64 + 1, "reply {i}");
    }
    let mut pids = std::collections::HashSet::new();
    for r in &recorders {
        // Every value exactly once, in the order sent, wherever it ran.
        assert_eq!(r.seen().await.unwrap(), (0..30).collect::<Vec<u64>>());
        pids.insert(r.pid().await.unwrap());
    }
    assert!(
        pids.len() >= 2 && pids.iter().any(|p| *p != first_pid),
        "no object moved: {pids:?}"
    );
    d.kill().await;
    rt.shutdown();
}
