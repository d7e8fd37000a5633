//! CIC driven by the runtime's hooks, without failures: members on real
//! runtimes stamp what they send, checkpoint when a message from ahead
//! reaches them, hand checkpoints and histories to the FT server, whose
//! line moves and tells them what they may forget; replies to callers
//! outside the group leave once the line is past them.

use std::sync::Arc;
use std::time::Duration;

use actogrid_builtin::{AccountProxy, RecorderProxy, TellerProxy};
use actogrid_fault_tolerance::cic::Config;
use actogrid_fault_tolerance::cic_node::CicProtection;
use actogrid_fault_tolerance::server::{FtServer, Served};
use actogrid_runtime::{Proxy, Runtime};

mod support;

use support::{NEVER, TempDir, node, runtime, within};

fn config(ttc_ms: u64) -> Config {
    Config {
        ttc: ttc_ms,
        ..Config::default()
    }
}

/// A runtime whose node `n` is a CIC node of `server`'s group, reaching
/// it in the process, or over the wire when `served`.
async fn member_runtime(
    server: &Arc<FtServer>,
    served: Option<&Served>,
    ttc_ms: u64,
) -> anyhow::Result<(Runtime, Arc<CicProtection>)> {
    let rt = runtime().await?;
    let protection = match served {
        Some(served) => CicProtection::remote(rt.adopt(&served.endpoint), config(ttc_ms)),
        None => server.cic_protection(config(ttc_ms)),
    };
    rt.local_node("n").add_interceptor(protection.clone())?;
    Ok((rt, protection))
}

/// Four accounts holding 10,000 in all and two tellers, made by `client`
/// on node `n` of `a` and `b` in turn.
async fn bank(
    client: &Runtime,
    a: &Runtime,
    b: &Runtime,
) -> anyhow::Result<(Vec<AccountProxy>, [TellerProxy; 2])> {
    let mut accounts = Vec::new();
    for (i, rt) in [a, b, a, b].into_iter().enumerate() {
        let start = 1_000 * (i as i64 + 1);
        accounts.push(within(AccountProxy::new(&node(client, rt, "n")?, start)).await?);
    }
    let tellers = [
        within(TellerProxy::new(&node(client, a, "n")?)).await?,
        within(TellerProxy::new(&node(client, b, "n")?)).await?,
    ];
    Ok((accounts, tellers))
}

/// Transfer `id`, of `id + 1`, by teller `id % 2` from account `id % 4`
/// to the next one, under way.
fn transfer(
    accounts: &[AccountProxy],
    tellers: &[TellerProxy; 2],
    id: u64,
) -> tokio::task::JoinHandle<Result<u64, actogrid_runtime::CallError<actogrid_builtin::WorkerError>>>
{
    let teller = &tellers[(id % 2) as usize];
    let from = accounts[(id % 4) as usize].clone();
    let to = accounts[((id + 1) % 4) as usize].clone();
    tokio::spawn(teller.transfer(id, from, to, id as i64 + 1).into_future())
}

/// The money in `accounts`.
async fn money(accounts: &[AccountProxy]) -> anyhow::Result<i64> {
    let mut total = 0;
    for a in accounts {
        total += within(a.balance()).await?;
    }
    Ok(total)
}

/// Waits until `done` holds, or fails saying `what`.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done().await {
        assert!(start.elapsed() < NEVER, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_checkpoint_on_their_own_and_the_line_follows() -> anyhow::Result<()> {
    let dir = TempDir::new("cic-line");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_secs(3600))?;
    transfers_among_members(&server, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_reach_a_server_over_the_wire_the_same_way() -> anyhow::Result<()> {
    let dir = TempDir::new("cic-remote");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_secs(3600))?;
    let home = runtime().await?;
    let served = within(server.serve(&home.local_node("ft"), "ft-server")).await?;
    transfers_among_members(&server, Some(&served)).await
}

/// Tellers and accounts on two runtimes whose members checkpoint at
/// periods far apart, transfers from a caller outside the group: exact
/// ledgers, forced checkpoints, a line that moves, nothing kept at the
/// end.
async fn transfers_among_members(
    server: &Arc<FtServer>,
    served: Option<&Served>,
) -> anyhow::Result<()> {
    // The fast runtime's stamps run ahead and force the slow one's
    // checkpoints.
    let (fast, fast_cic) = member_runtime(server, served, 20).await?;
    let (slow, slow_cic) = member_runtime(server, served, 400).await?;
    let client = runtime().await?;

    let (accounts, tellers) = bank(&client, &fast, &slow).await?;
    // All at once: each teller serves its transfers in turn while their
    // replies wait for the line.
    let transfers = 40u64;
    let mut pending = Vec::new();
    for id in 0..transfers {
        pending.push(transfer(&accounts, &tellers, id));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for p in pending {
        within(p).await??;
    }

    // Every transfer once in each of its two ledgers; the money adds up.
    let mut total = 0;
    let mut seen = std::collections::BTreeMap::<u64, usize>::new();
    for a in &accounts {
        total += within(a.balance()).await?;
        for (id, _) in within(a.ledger()).await? {
            *seen.entry(id).or_default() += 1;
        }
    }
    assert_eq!(total, 10_000);
    assert_eq!(seen.len() as u64, transfers);
    assert!(seen.values().all(|n| *n == 2), "{seen:?}");

    let stats = server.cic().stats().await;
    assert_eq!(stats.members, 6, "{stats:?}");
    assert!(stats.line > 0, "{stats:?}");
    assert!(
        stats.spanning > 0,
        "no checkpoint stood for several indices (forced over a jump): {stats:?}"
    );
    assert!(stats.entries >= 3 * transfers, "{stats:?}");

    // Idle now: the line moves on, and every member forgets what it
    // kept for a rollback; the store keeps little behind the line.
    let ids: Vec<u64> = accounts
        .iter()
        .map(|a| a.active_ref().id())
        .chain(tellers.iter().map(|t| t.active_ref().id()))
        .collect();
    until("every member forgot what it kept", async || {
        ids.iter().all(|id| {
            [&fast_cic, &slow_cic]
                .iter()
                .find_map(|p| p.retained(*id))
                .is_some_and(|n| n == 0)
        })
    })
    .await;
    let kept = server.cic().stats().await.kept;
    assert!(kept.0 <= 3 * ids.len(), "{kept:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_an_outside_caller_waits_for_the_line() -> anyhow::Result<()> {
    let dir = TempDir::new("cic-output");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_secs(3600))?;
    let (fast, fast_cic) = member_runtime(&server, None, 20).await?;
    // Never checkpoints for its period.
    let (slow, slow_cic) = member_runtime(&server, None, 3_600_000).await?;
    let client = runtime().await?;

    let busy = within(AccountProxy::new(&node(&client, &fast, "n")?, 0)).await?;
    let long = within(RecorderProxy::new(&node(&client, &slow, "n")?)).await?;
    // Members now; their replies left once the line passed them (an idle
    // member checkpoints for a line the group waits for).
    assert_eq!(within(busy.apply(0, 1)).await?, 1);
    assert_eq!(within(long.push(0)).await?, 1);
    let (busy_id, long_id) = (busy.active_ref().id(), long.active_ref().id());
    // `long` serves for a while: no request boundary, no checkpoint.
    let serving = tokio::spawn(long.push_after(1_500, 1).into_future());
    until("`long` serves", async || {
        slow_cic.serving(long_id) == Some(true)
    })
    .await;
    let at = slow_cic.index(long_id).unwrap_or(0);
    until("`busy` checkpointed past `long`", async || {
        fast_cic.index(busy_id).is_some_and(|i| i > at)
    })
    .await;
    // Produced past `long`'s last checkpoint: the line cannot pass it
    // before `long` reaches a boundary. The reply waits.
    let held = tokio::spawn(busy.apply(1, 5).into_future());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !held.is_finished(),
        "a reply left before the line passed it"
    );
    assert_eq!(slow_cic.serving(long_id), Some(true), "the test's premise");
    // `long` is done: it checkpoints at its boundary, the line passes,
    // the replies leave.
    assert_eq!(within(held).await??, 6);
    assert_eq!(within(serving).await??, 2);
    Ok(())
}

/// A runtime hosting members dies in the middle of transfers: the whole
/// group rolls back to its line — the members of the live runtime in
/// place, those of the dead one on a spare — and every transfer ends
/// exactly once in each of its two ledgers; the caller sees no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_rolls_back_to_its_line_when_a_runtime_dies() -> anyhow::Result<()> {
    let dir = TempDir::new("cic-recover");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_secs(3600))?;
    let (doomed, _) = member_runtime(&server, None, 20).await?;
    let (stays, stays_cic) = member_runtime(&server, None, 50).await?;
    let (spare, spare_cic) = member_runtime(&server, None, 20).await?;
    let client = runtime().await?;
    for rt in [&doomed, &stays, &spare, &client] {
        rt.set_locator(server.locator())?;
    }
    let (accounts, tellers) = bank(&client, &doomed, &stays).await?;
    let transfers = 60u64;
    let mut pending = Vec::new();
    let mut recovery = None;
    for id in 0..transfers {
        pending.push(transfer(&accounts, &tellers, id));
        tokio::time::sleep(Duration::from_millis(5)).await;
        if id == transfers / 2 {
            let before = server.cic().stats().await.epoch;
            let address = doomed.address().expect("it serves").to_owned();
            doomed.shutdown();
            let r = within(server.cic_runtime_failed(&address, &spare.local_node("n")))
                .await
                .map_err(anyhow::Error::msg)?;
            assert_eq!(r.epoch, before + 1, "{r:?}");
            recovery = Some(r);
        }
    }
    for p in pending {
        within(p).await??;
    }
    let recovery = recovery.expect("it ran");
    assert_eq!(recovery.members, 6, "{recovery:?}");
    assert_eq!(recovery.moved, 3, "{recovery:?}");

    // Every transfer once in each of its two ledgers; the money adds up.
    let mut total = 0;
    let mut seen = std::collections::BTreeMap::<u64, usize>::new();
    for a in &accounts {
        total += within(a.balance()).await?;
        for (id, _) in within(a.ledger()).await? {
            *seen.entry(id).or_default() += 1;
        }
    }
    assert_eq!(total, 10_000);
    assert_eq!(seen.len() as u64, transfers, "{seen:?}");
    assert!(seen.values().all(|n| *n == 2), "{seen:?}");
    // The members serve in the new epoch, on the runtimes said.
    for a in &accounts {
        let id = a.active_ref().id();
        let line = [&stays_cic, &spare_cic].iter().find_map(|p| p.line(id));
        assert!(
            line.is_some_and(|(epoch, _)| epoch.0 == recovery.epoch),
            "{id:#x}: {line:?}"
        );
    }
    Ok(())
}

/// A member that ends between two checkpoints (its state changed since
/// the last) holds no line back: the replies of the others to a caller
/// outside the group still leave, and so does the one it gave last. A
/// recovery after its end restores it from its last state and ends it
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_ends_holds_no_line_back() -> anyhow::Result<()> {
    let dir = TempDir::new("cic-end");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_secs(3600))?;
    // Periods far longer than the test: every checkpoint is one the group
    // waits for.
    let (a, a_cic) = member_runtime(&server, None, 60_000).await?;
    let (b, _b_cic) = member_runtime(&server, None, 60_000).await?;
    let client = runtime().await?;
    let ending = within(AccountProxy::new(&node(&client, &a, "n")?, 0)).await?;
    let staying = within(AccountProxy::new(&node(&client, &b, "n")?, 0)).await?;
    assert_eq!(within(ending.apply(0, 1)).await?, 1);
    assert_eq!(within(staying.apply(0, 1)).await?, 1);
    // Changed since its last checkpoint, then ended behind its reply.
    let last = ending.apply(1, 1);
    within(ending.terminate()).await?;
    assert_eq!(within(last).await?, 2);
    let before = server.cic().stats().await.line;
    for i in 1..6 {
        assert_eq!(within(staying.apply(i, 1)).await?, i as i64 + 1);
    }
    assert!(server.cic().stats().await.line > before);
    // It stays a member of its node, with nothing left to send.
    let id = ending.active_ref().id();
    until("the ended member keeps nothing", async || {
        a_cic.retained(id) == Some(0)
    })
    .await;
    assert!(ending.apply(2, 1).await.is_err(), "it serves nothing more");

    // A recovery after its end: the group rolls back with it (from its
    // last state, where it ended), and the other goes on exactly once.
    let (spare, _) = member_runtime(&server, None, 60_000).await?;
    for rt in [&a, &b, &spare, &client] {
        rt.set_locator(server.locator())?;
    }
    let address = b.address().expect("it serves").to_owned();
    b.shutdown();
    let r = within(server.cic_runtime_failed(&address, &spare.local_node("n")))
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!((r.members, r.moved), (2, 1), "{r:?}");
    assert_eq!(within(staying.apply(6, 1)).await?, 7);
    // Restored from where it ended, and ended again.
    assert!(ending.apply(2, 1).await.is_err(), "it serves nothing more");
    until(
        "the restored member follows the line in the new epoch",
        async || a_cic.line(id).is_some_and(|(epoch, _)| epoch.0 == r.epoch),
    )
    .await;
    Ok(())
}

/// A member refuses to migrate (what it is to the group stays on its
/// node): the caller learns why, and the member serves on where it is,
/// its transfers and their replies untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stays_on_its_node() -> anyhow::Result<()> {
    let dir = TempDir::new("cic-stay");
    let server = FtServer::open(dir.0.join("ft.redb"), Duration::from_secs(3600))?;
    let (fast, fast_cic) = member_runtime(&server, None, 20).await?;
    let (slow, _) = member_runtime(&server, None, 400).await?;
    let client = runtime().await?;
    let (accounts, tellers) = bank(&client, &fast, &slow).await?;
    let transfers = 40u64;
    let mut pending = Vec::new();
    for id in 0..transfers {
        pending.push(transfer(&accounts, &tellers, id));
        tokio::time::sleep(Duration::from_millis(5)).await;
        if id == 20 {
            let to = node(&client, &slow, "n")?;
            for moving in [accounts[0].active_ref(), tellers[0].active_ref()] {
                let refused = within(moving.migrate_to(to.url())).await;
                let why = format!("{:?}", refused.expect_err("a member does not move"));
                assert!(why.contains("CIC group"), "{why}");
                assert!(fast_cic.index(moving.id()).is_some(), "still a member here");
            }
        }
    }
    for p in pending {
        within(p).await??;
    }
    assert_eq!(money(&accounts).await?, 10_000);
    Ok(())
}
