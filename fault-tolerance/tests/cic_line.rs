//! The CIC recovery line durable in the FT store: what it keeps, what it
//! collects when the line moves, what a recovery reads back, and how a
//! damaged record is reported. (The simulator, `cic_sim.rs`, runs whole
//! applications on it while the FT server restarts.)

use std::path::PathBuf;

use actogrid_fault_tolerance::cic::{self, DurableLine, LineError, Member, ObjectId, Record};
use actogrid_fault_tolerance::{ObjectKey, Store, StoreConfig};

struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("actogrid-cic-line-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("ft.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const A: ObjectId = ObjectId(0xa);
const B: ObjectId = ObjectId(0xb);

/// Checkpoint `index` of `object` in `epoch`, with nothing delivered.
fn record(object: ObjectId, epoch: u64, index: u64) -> Record<String> {
    Record {
        epoch: cic::Incarnation(epoch),
        lo: index,
        hi: index,
        ..Member::initial_record(object)
    }
}

fn state(object: ObjectId, index: u64) -> Vec<u8> {
    format!("{:x}@{index}", object.0).into_bytes()
}

fn open(path: &std::path::Path) -> Store {
    Store::open(path, StoreConfig::default()).expect("the store opens")
}

async fn group(store: &Store) -> DurableLine<String> {
    let members = [A, B]
        .into_iter()
        .map(|m| (Member::initial_record(m), state(m, 0)))
        .collect();
    DurableLine::create(store, "g", members)
        .await
        .expect("the group starts")
}

/// The indices of the body states the store holds for `object`.
fn states(store: &Store, object: ObjectId) -> Vec<u64> {
    let key = ObjectKey::new(format!("cic-body:g:{:x}", object.0));
    let indices = store.checkpoint_indices(&key).expect("readable");
    indices.into_iter().map(|i| i.0).collect()
}

fn journal() -> ObjectKey {
    ObjectKey::new("cic-line:g")
}

#[tokio::test]
async fn the_line_moves_collects_behind_it_and_reads_back_after_a_restart() {
    let dir = TempDir::new("moves");
    let store = open(&dir.file());
    let mut line = group(&store).await;
    assert_eq!(line.keeper().line(), 0);

    let moved = line
        .store_checkpoint(record(A, 0, 1), state(A, 1))
        .await
        .expect("stored");
    assert_eq!(moved, None, "B has no checkpoint 1 yet");
    let moved = line
        .store_checkpoint(record(B, 0, 1), state(B, 1))
        .await
        .expect("stored");
    assert_eq!(moved, Some(1));
    // Behind the line: the states of checkpoint 0 went, and the journal
    // was cut after a snapshot.
    assert_eq!(states(&store, A), [1]);
    assert_eq!(states(&store, B), [1]);
    let bounds = store.log_bounds(&journal()).expect("readable");
    assert_eq!(bounds.first, bounds.next, "the journal was cut");

    // A checkpoint past the line is journaled, and read back.
    line.store_checkpoint(record(A, 0, 2), state(A, 2))
        .await
        .expect("stored");
    assert_eq!(states(&store, A), [1, 2]);
    let kept = line.keeper().kept();
    drop(line);
    drop(store);

    let store = open(&dir.file());
    let mut line = DurableLine::<String>::open(&store, "g")
        .await
        .expect("readable")
        .expect("the group is there");
    assert_eq!((line.keeper().line(), line.keeper().kept()), (1, kept));

    // A recovery restarts both from the line, with their states there, in
    // a new epoch that is durable at once.
    let recovery = line.recover().await.expect("durable").expect("a plan");
    assert_eq!(recovery.plan.line, 1);
    assert_eq!(recovery.plan.epoch, cic::Incarnation(1));
    assert_eq!(recovery.states.get(&A), Some(&state(A, 1)));
    assert_eq!(recovery.states.get(&B), Some(&state(B, 1)));
    assert_eq!(states(&store, A), [1], "what lay past the line went");

    // The old epoch is fenced: its checkpoints are refused, with why.
    let refused = line
        .store_checkpoint(record(A, 0, 3), state(A, 3))
        .await
        .expect_err("from before the recovery");
    assert!(
        matches!(refused, LineError::Stale { .. }) && refused.to_string().contains("epoch"),
        "{refused}"
    );
    drop(line);
    drop(store);
    let store = open(&dir.file());
    let line = DurableLine::<String>::open(&store, "g")
        .await
        .expect("readable")
        .expect("the group is there");
    assert_eq!(line.keeper().epoch(), cic::Incarnation(1));
}

#[tokio::test]
async fn an_unchanged_checkpoint_costs_no_state_and_a_group_started_again_replaces_the_old_one() {
    let dir = TempDir::new("unchanged");
    let store = open(&dir.file());
    let mut line = group(&store).await;
    let unchanged = Record {
        unchanged: true,
        ..record(A, 0, 1)
    };
    line.store_checkpoint(unchanged, state(A, 1))
        .await
        .expect("stored");
    // It stretches checkpoint 0: no state of its own.
    assert_eq!(states(&store, A), [0]);
    line.store_checkpoint(record(B, 0, 1), state(B, 1))
        .await
        .expect("stored");
    assert_eq!(line.keeper().line(), 1);
    assert_eq!(states(&store, A), [0], "checkpoint 0 stands for 1 as well");
    drop(line);

    // Started again under the same name: a new epoch, nothing of the old.
    let line = group(&store).await;
    assert_eq!(line.keeper().line(), 0);
    assert_eq!(line.keeper().epoch(), cic::Incarnation(1));
    drop(line);
    let line = DurableLine::<String>::open(&store, "g")
        .await
        .expect("readable")
        .expect("the group is there");
    assert_eq!(line.keeper().line(), 0);
    assert_eq!(line.keeper().kept(), (2, 0));
}

#[tokio::test]
async fn a_journal_entry_that_does_not_decode_names_the_group_the_entry_and_the_file() {
    let dir = TempDir::new("corrupt");
    let store = open(&dir.file());
    let mut line = group(&store).await;
    line.store_checkpoint(record(A, 0, 1), state(A, 1))
        .await
        .expect("stored");
    drop(line);
    // Something else wrote to the group's journal: a valid store record,
    // not an input of the line.
    let at = store
        .append(
            &journal(),
            actogrid_fault_tolerance::Incarnation(0),
            vec![0xff; 7],
        )
        .await
        .expect("appended");
    let err = DurableLine::<String>::open(&store, "g")
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, LineError::Corrupt { .. }), "{text}");
    assert!(
        text.contains("group `g`")
            && text.contains(&format!("journal entry {}", at.0))
            && text.contains(&dir.file().display().to_string()),
        "{text}"
    );
    // A missing group is not an error: there is none.
    assert!(
        DurableLine::<String>::open(&store, "other")
            .await
            .expect("readable")
            .is_none()
    );
}
