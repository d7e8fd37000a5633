//! A virtual node acquired by lookup: its nodes are there as soon as the
//! looked-up directory has been read, so `nodes()` does not wait for the
//! timeout; the timeout of `<virtualNodesAcquisition><virtualNode>` is the
//! one that applies.

mod support;

use std::time::{Duration, Instant};

use actogrid::descriptor::LoadOptions;
use support::{TempDir, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looked_up_virtual_node_returns_its_nodes_without_waiting_for_the_timeout() {
    // One program registers its own process as virtual node `Shared`.
    let dir = TempDir::new("lookup");
    let owner_rt = runtime().await;
    let owner_path = dir.write(
        "owner.xml",
        r#"<ProActiveDescriptor>
  <componentDefinition><virtualNodesDefinition><virtualNode name="Shared"/></virtualNodesDefinition></componentDefinition>
  <deployment>
    <register virtualNode="Shared"/>
    <mapping><map virtualNode="Shared"><jvmSet><currentJVM/></jvmSet></map></mapping>
  </deployment>
</ProActiveDescriptor>"#,
    );
    let owner = actogrid::Deployment::load_with(
        &owner_path,
        LoadOptions::default(),
        support::options(&owner_rt),
    )
    .await
    .expect("the owner's descriptor loads");
    owner.activate().await.expect("the owner activates");
    assert_eq!(
        owner
            .virtual_node("Shared")
            .unwrap()
            .nodes()
            .await
            .unwrap()
            .len(),
        1
    );
    let address = owner_rt.address().expect("an address").to_owned();
    let (host, port) = address.rsplit_once(':').expect("host:port");

    // Another looks it up, with a timeout far longer than the test may take.
    let user_rt = runtime().await;
    let user_path = dir.write(
        "user.xml",
        &format!(
            r#"<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesAcquisition><virtualNode name="Shared" timeout="10m" minNodeNumber="1"/></virtualNodesAcquisition>
  </componentDefinition>
  <deployment><lookup virtualNode="Shared" host="{host}" port="{port}"/></deployment>
</ProActiveDescriptor>"#
        ),
    );
    let user = actogrid::Deployment::load_with(
        &user_path,
        LoadOptions::default(),
        support::options(&user_rt),
    )
    .await
    .expect("the user's descriptor loads");
    let acquired = user.descriptor().acquired_virtual_nodes[0].clone();
    assert_eq!(acquired.timeout, Duration::from_secs(600));
    assert_eq!(acquired.min_node_number, Some(1));

    // Without minNodeNumber too: the directory says how many nodes there are.
    let started = Instant::now();
    user.activate().await.expect("the lookup starts");
    let nodes = user.virtual_node("Shared").unwrap().nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "nodes() waited {:?} for a node that was there at once",
        started.elapsed()
    );
    user.kill().await;
    owner.kill().await;
    user_rt.shutdown();
    owner_rt.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looked_up_virtual_node_without_min_node_number_returns_once_the_directory_is_read() {
    let dir = TempDir::new("lookup-count");
    let owner_rt = runtime().await;
    let owner_path = dir.write(
        "owner.xml",
        r#"<ProActiveDescriptor>
  <componentDefinition><virtualNodesDefinition><virtualNode name="Pool"/></virtualNodesDefinition></componentDefinition>
  <deployment>
    <register virtualNode="Pool"/>
    <mapping><map virtualNode="Pool"><jvmSet><currentJVM/></jvmSet></map></mapping>
  </deployment>
</ProActiveDescriptor>"#,
    );
    let owner = actogrid::Deployment::load_with(
        &owner_path,
        LoadOptions::default(),
        support::options(&owner_rt),
    )
    .await
    .unwrap();
    owner.activate().await.unwrap();
    owner.virtual_node("Pool").unwrap().nodes().await.unwrap();
    let address = owner_rt.address().unwrap().to_owned();
    let (host, port) = address.rsplit_once(':').unwrap();
    let user_rt = runtime().await;
    let user_path = dir.write(
        "user.xml",
        &format!(
            r#"<ProActiveDescriptor>
  <componentDefinition>
    <virtualNodesAcquisition><virtualNode name="Pool" timeout="10m"/></virtualNodesAcquisition>
  </componentDefinition>
  <deployment><lookup virtualNode="Pool" host="{host}" port="{port}"/></deployment>
</ProActiveDescriptor>"#
        ),
    );
    let user = actogrid::Deployment::load_with(
        &user_path,
        LoadOptions::default(),
        support::options(&user_rt),
    )
    .await
    .unwrap();
    let started = Instant::now();
    user.activate().await.unwrap();
    let nodes = user.virtual_node("Pool").unwrap().nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "nodes() waited {:?}",
        started.elapsed()
    );
    user.kill().await;
    owner.kill().await;
    user_rt.shutdown();
    owner_rt.shutdown();
}
