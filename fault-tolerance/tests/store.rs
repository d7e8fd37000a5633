//! The FT store on real files: what survives a crash, what checkpoints keep
//! and cut, and how damaged or foreign files are reported.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use actogrid_fault_tolerance::store::RecordFault;
use actogrid_fault_tolerance::{
    Checkpoint, CheckpointIndex, Incarnation, LogPosition, ObjectKey, ReplyId, Store, StoreConfig,
    StoreError,
};
use redb::{ReadableTable as _, TableDefinition};

/// A directory of its own for each test, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "actogrid-ft-store-{what}-{}-{n}",
            std::process::id()
        ));
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

fn open(path: &Path) -> Store {
    Store::open(path, StoreConfig::default()).expect("the store opens")
}

fn checkpoint(index: u64, incarnation: u64, state: &str) -> Checkpoint {
    Checkpoint {
        index: CheckpointIndex(index),
        incarnation: Incarnation(incarnation),
        state: state.as_bytes().to_vec(),
    }
}

const FIRST: Incarnation = Incarnation(0);

/// A table of a closed store, opened through redb.
type RawTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// Flips `mask` in the byte `from_end` bytes before the end of the first
/// record of `table`, in the closed store at `path`.
fn damage_first_record(path: &Path, table: &str, from_end: usize, mask: u8) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let definition: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(table);
        let mut table = txn.open_table(definition).unwrap();
        let (key, mut value) = {
            let (key, value) = table.first().unwrap().expect("a record");
            (key.value().to_vec(), value.value().to_vec())
        };
        let at = value.len() - from_end;
        value[at] ^= mask;
        table.insert(key.as_slice(), value.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

/// Rewrites the first value of a table of a closed store, through redb.
fn tamper(path: &Path, table: &str, change: impl FnOnce(&mut Vec<u8>)) {
    let db = redb::Database::open(path).expect("the store is a redb database");
    let txn = db.begin_write().expect("a write transaction");
    {
        let definition: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new(table);
        let mut table = txn.open_table(definition).expect("the table");
        let (key, mut value) = {
            let (key, value) = table.first().expect("readable").expect("a record");
            (key.value().to_vec(), value.value().to_vec())
        };
        change(&mut value);
        table
            .insert(key.as_slice(), value.as_slice())
            .expect("rewritten");
    }
    txn.commit().expect("committed");
}

fn assert_names(error: &StoreError, what: &[&str]) {
    let message = error.to_string();
    for part in what {
        assert!(message.contains(part), "{message:?} does not name {part:?}");
    }
}

#[tokio::test]
async fn log_entries_read_back_in_order_after_reopening() {
    let dir = TempDir::new("order");
    let path = dir.file();
    let store = open(&path);
    let a = ObjectKey::from("a");
    let b = ObjectKey::from("b");
    for i in 0..5u64 {
        assert_eq!(
            store.append(&a, FIRST, format!("a{i}")).await.unwrap(),
            LogPosition(i)
        );
        assert_eq!(
            store.append(&b, FIRST, format!("b{i}")).await.unwrap(),
            LogPosition(i)
        );
    }
    drop(store);

    let store = open(&path);
    let entries = store.read_log(&a, LogPosition(2), 100).unwrap();
    let texts: Vec<_> = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.bytes))
        .collect();
    assert_eq!(texts, ["a2", "a3", "a4"]);
    assert_eq!(entries[0].position, LogPosition(2));
    assert_eq!(store.read_log(&b, LogPosition(0), 2).unwrap().len(), 2);
    // Positions go on where they stopped.
    assert_eq!(store.append(&a, FIRST, "a5").await.unwrap(), LogPosition(5));
    let unknown = ObjectKey::from("never written");
    assert!(
        store
            .read_log(&unknown, LogPosition(0), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.latest_checkpoint(&unknown).unwrap(), None);
}

#[tokio::test]
async fn concurrent_appenders_share_commits_and_each_keeps_its_order() {
    let dir = TempDir::new("group");
    let store = open(&dir.file());
    let object = ObjectKey::from("busy");
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let store = store.clone();
            let object = object.clone();
            tokio::spawn(async move {
                for n in 0..20 {
                    store
                        .append(&object, FIRST, format!("{task}:{n}"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let entries = store.read_log(&object, LogPosition(0), usize::MAX).unwrap();
    assert_eq!(entries.len(), 64 * 20);
    let mut next: HashMap<String, u32> = HashMap::new();
    for entry in &entries {
        let text = String::from_utf8(entry.bytes.clone()).unwrap();
        let (task, n) = text.split_once(':').unwrap();
        let expected = next.entry(task.to_owned()).or_default();
        assert_eq!(n.parse::<u32>().unwrap(), *expected, "{text} out of order");
        *expected += 1;
    }
    // Any window of the log reads back the same entries.
    for (from, count) in [(0, 1), (7, 5), (100, 300), (1270, 100)] {
        let window = store.read_log(&object, LogPosition(from), count).unwrap();
        let end = (from as usize + count).min(entries.len());
        assert_eq!(window, entries[from as usize..end], "from {from}");
    }
    let stats = store.stats();
    assert_eq!(stats.entries_written, 64 * 20);
    assert!(
        stats.commits < stats.entries_written,
        "{} commits for {} entries: no write was grouped",
        stats.commits,
        stats.entries_written
    );
}

#[tokio::test]
async fn a_checkpoint_truncates_the_log_it_covers() {
    let dir = TempDir::new("truncate");
    let store = open(&dir.file());
    let object = ObjectKey::from("ao-1");
    for i in 0..10u64 {
        let position = store
            .append(&object, FIRST, format!("request {i}"))
            .await
            .unwrap();
        let id = ReplyId {
            sender: "caller".into(),
            sequence: i,
        };
        store
            .record_reply(&object, &id, position, format!("reply {i}"))
            .await
            .unwrap();
    }
    store
        .put_checkpoint(
            &object,
            checkpoint(1, 0, "state after 6"),
            Some(LogPosition(6)),
        )
        .await
        .unwrap();

    let bounds = store.log_bounds(&object).unwrap();
    assert_eq!(
        (bounds.first, bounds.next),
        (LogPosition(6), LogPosition(10))
    );
    let rest = store.read_log(&object, LogPosition(6), 100).unwrap();
    assert_eq!(rest.len(), 4);
    assert_eq!(rest[0].bytes, b"request 6");
    let error = store.read_log(&object, LogPosition(0), 100).unwrap_err();
    assert!(matches!(
        error,
        StoreError::Truncated {
            first: LogPosition(6),
            ..
        }
    ));

    let reply = |sequence| {
        store.reply(
            &object,
            &ReplyId {
                sender: "caller".into(),
                sequence,
            },
        )
    };
    assert_eq!(reply(5).unwrap(), None);
    assert_eq!(reply(6).unwrap(), Some(b"reply 6".to_vec()));

    // A later truncation on its own, and one past the end refused.
    assert_eq!(
        store.truncate_log(&object, LogPosition(8)).await.unwrap(),
        2
    );
    assert_eq!(
        store.truncate_log(&object, LogPosition(8)).await.unwrap(),
        0
    );
    let error = store
        .truncate_log(&object, LogPosition(11))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::TruncateBeyondEnd { .. }),
        "{error}"
    );
    assert_eq!(
        store.append(&object, FIRST, "after").await.unwrap(),
        LogPosition(10)
    );
}

#[tokio::test]
async fn a_truncation_inside_a_group_of_entries_keeps_the_rest_of_it() {
    let dir = TempDir::new("truncate-group");
    let path = dir.file();
    let store = open(&path);
    let object = ObjectKey::from("ao-14");
    // Appended together, so that commits hold several entries of the object.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (store, object) = (store.clone(), object.clone());
            tokio::spawn(async move { store.append(&object, FIRST, format!("{i}")).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(
        store.stats().commits < 200,
        "no two appends were committed together"
    );
    let all = store.read_log(&object, LogPosition(0), usize::MAX).unwrap();
    for keep_from in [1, 57, 58, 150, 199, 200] {
        store
            .truncate_log(&object, LogPosition(keep_from))
            .await
            .unwrap();
        let rest = store
            .read_log(&object, LogPosition(keep_from), usize::MAX)
            .unwrap();
        assert_eq!(rest, all[keep_from as usize..], "kept from {keep_from}");
        assert!(
            store
                .read_log(&object, LogPosition(keep_from - 1), 1)
                .is_err()
        );
    }
    drop(store);
    let store = open(&path);
    assert!(
        store
            .read_log(&object, LogPosition(200), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.append(&object, FIRST, "next").await.unwrap(),
        LogPosition(200)
    );
}

#[tokio::test]
async fn a_duplicate_request_is_answered_with_the_original_reply_after_a_restart() {
    let dir = TempDir::new("reply");
    let path = dir.file();
    let object = ObjectKey::from("ao-2");
    let id = ReplyId {
        sender: ObjectKey::new(vec![0, 1, 2]),
        sequence: 41,
    };
    {
        let store = open(&path);
        let at = store.append(&object, FIRST, "the request").await.unwrap();
        store
            .record_reply(&object, &id, at, "the original reply")
            .await
            .unwrap();
    }
    let store = open(&path);
    assert_eq!(
        store.reply(&object, &id).unwrap(),
        Some(b"the original reply".to_vec())
    );
    let other = ReplyId {
        sequence: 42,
        ..id.clone()
    };
    assert_eq!(store.reply(&object, &other).unwrap(), None);
}

#[tokio::test]
async fn replies_recorded_together_are_read_forgotten_and_truncated_as_single_ones() {
    let dir = TempDir::new("replies-together");
    let path = dir.file();
    let object = ObjectKey::from("ao-r");
    let id = |sender: &str, sequence| ReplyId {
        sender: ObjectKey::from(sender),
        sequence,
    };
    let reply = |store: &Store, sender: &str, sequence| {
        store
            .reply(&object, &id(sender, sequence))
            .unwrap()
            .map(|r| String::from_utf8(r).unwrap())
    };
    {
        let store = open(&path);
        for n in 0..6 {
            store
                .append(&object, FIRST, format!("request {n}"))
                .await
                .unwrap();
        }
        let replies = vec![
            (id("a", 1), LogPosition(0), b"a1".to_vec()),
            (id("a", 2), LogPosition(1), b"a2".to_vec()),
            (id("b", 1), LogPosition(2), b"b1".to_vec()),
            // Kept until its sender forgets it: whatever the truncation.
            (id("c", 1), LogPosition(u64::MAX), b"c1".to_vec()),
        ];
        store.record_replies(&object, replies).await.unwrap();
        store
            .record_reply(&object, &id("b", 2), LogPosition(3), "b2")
            .await
            .unwrap();
        assert_eq!(reply(&store, "a", 2).as_deref(), Some("a2"));
        assert_eq!(reply(&store, "a", 3), None);
        let mut all: Vec<_> = store
            .replies(&object)
            .unwrap()
            .into_iter()
            .map(|(id, r)| (id.to_string(), String::from_utf8(r).unwrap()))
            .collect();
        all.sort();
        assert_eq!(all.len(), 5, "{all:?}");
        assert_eq!(
            store
                .forget_replies(&object, &ObjectKey::from("a"), 2)
                .await
                .unwrap(),
            1
        );
        assert_eq!(reply(&store, "a", 1), None);
        assert_eq!(reply(&store, "a", 2).as_deref(), Some("a2"));
        // The log cut before the newest of them keeps them all.
        store.truncate_log(&object, LogPosition(2)).await.unwrap();
        assert_eq!(reply(&store, "a", 2).as_deref(), Some("a2"));
        assert_eq!(reply(&store, "b", 1).as_deref(), Some("b1"));
    }
    let store = open(&path);
    assert_eq!(reply(&store, "b", 1).as_deref(), Some("b1"));
    store.truncate_log(&object, LogPosition(3)).await.unwrap();
    assert_eq!(reply(&store, "a", 2), None);
    assert_eq!(reply(&store, "b", 1), None);
    assert_eq!(reply(&store, "b", 2).as_deref(), Some("b2"));
    assert_eq!(reply(&store, "c", 1).as_deref(), Some("c1"));
    assert_eq!(store.replies(&object).unwrap().len(), 2);
}

#[tokio::test]
async fn damaged_replies_recorded_together_name_the_object_and_the_file() {
    let dir = TempDir::new("replies-together-damaged");
    let path = dir.file();
    let object = ObjectKey::from("ao-rd");
    let id = |sequence| ReplyId {
        sender: ObjectKey::from("caller"),
        sequence,
    };
    {
        let store = open(&path);
        let replies = (1..=3)
            .map(|n| (id(n), LogPosition(0), format!("reply {n}").into_bytes()))
            .collect();
        store.record_replies(&object, replies).await.unwrap();
    }
    damage_first_record(&path, "replies", 6, 0x20);
    let store = open(&path);
    for error in [
        store.reply(&object, &id(2)).unwrap_err(),
        store.replies(&object).unwrap_err(),
    ] {
        assert!(
            matches!(
                error,
                StoreError::Corrupt {
                    fault: RecordFault::Checksum { .. },
                    ..
                }
            ),
            "{error}"
        );
        assert_names(
            &error,
            &[
                "\"ao-rd\"",
                "replies recorded together",
                &path.display().to_string(),
            ],
        );
    }
}

#[tokio::test]
async fn only_the_newest_checkpoints_are_kept() {
    let dir = TempDir::new("keep");
    let config = StoreConfig {
        checkpoints_kept: 2,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.file(), config).unwrap();
    let object = ObjectKey::from("ao-3");
    for index in 1..=4 {
        store
            .put_checkpoint(
                &object,
                checkpoint(index, 0, &format!("state {index}")),
                None,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.checkpoint_indices(&object).unwrap(),
        [CheckpointIndex(3), CheckpointIndex(4)]
    );
    assert_eq!(store.checkpoint(&object, CheckpointIndex(2)).unwrap(), None);
    assert_eq!(
        store.checkpoint(&object, CheckpointIndex(3)).unwrap(),
        Some(checkpoint(3, 0, "state 3"))
    );
    assert_eq!(
        store.latest_checkpoint(&object).unwrap(),
        Some(checkpoint(4, 0, "state 4"))
    );
    let error = store
        .put_checkpoint(&object, checkpoint(4, 0, "again"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::CheckpointOutOfOrder { .. }),
        "{error}"
    );
    assert_names(&error, &["\"ao-3\"", "checkpoint 4"]);
}

/// A store in `dir` keeping ten checkpoints per object, and `object` with
/// checkpoints 1 to `count` of incarnation 0 holding `state`.
async fn keeping_ten_checkpoints(
    dir: &TempDir,
    object: &str,
    count: u64,
    state: &str,
) -> (Store, ObjectKey) {
    let config = StoreConfig {
        checkpoints_kept: 10,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.file(), config).unwrap();
    let object = ObjectKey::from(object);
    for index in 1..=count {
        store
            .put_checkpoint(&object, checkpoint(index, 0, state), None)
            .await
            .unwrap();
    }
    (store, object)
}

#[tokio::test]
async fn a_new_incarnation_replaces_the_checkpoints_past_the_one_it_restarted_from() {
    let dir = TempDir::new("incarnation");
    let (store, object) = keeping_ten_checkpoints(&dir, "ao-4", 3, "before").await;
    // Rolled back to checkpoint 1; the next one is 2 again, of incarnation 1.
    store
        .put_checkpoint(&object, checkpoint(2, 1, "after"), None)
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint_indices(&object).unwrap(),
        [CheckpointIndex(1), CheckpointIndex(2)]
    );
    assert_eq!(
        store.latest_checkpoint(&object).unwrap(),
        Some(checkpoint(2, 1, "after"))
    );
}

#[tokio::test]
async fn checkpoints_below_a_recovery_line_can_be_dropped() {
    let dir = TempDir::new("recovery-line");
    let (store, object) = keeping_ten_checkpoints(&dir, "ao-13", 5, "s").await;
    let removed = store
        .drop_checkpoints_before(&object, CheckpointIndex(4))
        .await
        .unwrap();
    assert_eq!(removed, 3);
    assert_eq!(
        store.checkpoint_indices(&object).unwrap(),
        [CheckpointIndex(4), CheckpointIndex(5)]
    );
}

#[tokio::test]
async fn writes_of_a_replaced_incarnation_are_refused() {
    let dir = TempDir::new("stale");
    let store = open(&dir.file());
    let object = ObjectKey::from("ao-5");
    store.append(&object, Incarnation(0), "old").await.unwrap();
    store.append(&object, Incarnation(1), "new").await.unwrap();
    let error = store
        .append(&object, Incarnation(0), "late write of the old instance")
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::StaleIncarnation { .. }),
        "{error}"
    );
    let error = store
        .put_checkpoint(&object, checkpoint(9, 0, "old"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::StaleIncarnation { .. }),
        "{error}"
    );
    assert_eq!(store.log_bounds(&object).unwrap().next, LogPosition(2));
    assert_eq!(
        store.log_bounds(&object).unwrap().incarnation,
        Incarnation(1)
    );
}

/// A fence makes an incarnation the newest without writing anything else:
/// the checkpoints and the log stay as they were, the older incarnation's
/// writes are refused from then on, and so is a fence going back.
#[tokio::test]
async fn a_fence_refuses_the_older_incarnation_and_changes_nothing_else() {
    let dir = TempDir::new("fence");
    let store = open(&dir.file());
    let object = ObjectKey::from("ao-fence");
    store
        .put_checkpoint(&object, checkpoint(1, 1, "s1"), None)
        .await
        .unwrap();
    store.append(&object, Incarnation(1), "a").await.unwrap();
    store
        .put_checkpoint(&object, checkpoint(2, 1, "s2"), Some(LogPosition(1)))
        .await
        .unwrap();
    store.append(&object, Incarnation(1), "b").await.unwrap();
    store.fence(&object, Incarnation(2)).await.unwrap();
    let error = store
        .append(&object, Incarnation(1), "late")
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::StaleIncarnation { .. }),
        "{error}"
    );
    let error = store.fence(&object, Incarnation(1)).await.unwrap_err();
    assert!(
        matches!(error, StoreError::StaleIncarnation { .. }),
        "{error}"
    );
    let latest = store.latest_checkpoint(&object).unwrap().expect("kept");
    assert_eq!(
        (latest.index, latest.state.as_slice()),
        (CheckpointIndex(2), &b"s2"[..])
    );
    let bounds = store.log_bounds(&object).unwrap();
    assert_eq!(
        (bounds.first, bounds.next),
        (LogPosition(1), LogPosition(2))
    );
    assert_eq!(bounds.incarnation, Incarnation(2));
    let log = store.read_log(&object, LogPosition(1), 10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].bytes, b"b");
}

#[tokio::test]
async fn a_corrupt_log_entry_names_the_object_and_the_file() {
    let dir = TempDir::new("corrupt-log");
    let path = dir.file();
    let object = ObjectKey::from("ao-6");
    {
        let store = open(&path);
        store
            .append(&object, FIRST, "a logged request")
            .await
            .unwrap();
    }
    tamper(&path, "log", |value| value[12] ^= 0x01);
    let store = open(&path);
    let error = store.read_log(&object, LogPosition(0), 10).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Corrupt {
                fault: RecordFault::Checksum { .. },
                ..
            }
        ),
        "{error}"
    );
    assert_names(
        &error,
        &[
            "\"ao-6\"",
            "position 0",
            &path.display().to_string(),
            "checksum",
        ],
    );
}

#[tokio::test]
async fn a_corrupt_or_truncated_checkpoint_names_the_object_and_the_file() {
    let dir = TempDir::new("corrupt-checkpoint");
    let path = dir.file();
    let object = ObjectKey::from("ao-7");
    {
        let store = open(&path);
        store
            .put_checkpoint(&object, checkpoint(3, 0, "the state"), None)
            .await
            .unwrap();
    }
    tamper(&path, "checkpoints", |value| {
        value.truncate(value.len() - 3)
    });
    let store = open(&path);
    let error = store.latest_checkpoint(&object).unwrap_err();
    assert_names(
        &error,
        &["\"ao-7\"", "checkpoint 3", &path.display().to_string()],
    );
    let error = store.checkpoint(&object, CheckpointIndex(3)).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    // And a later checkpoint cannot be written over it without notice.
    let error = store
        .put_checkpoint(&object, checkpoint(4, 0, "next"), None)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
}

#[tokio::test]
async fn a_corrupt_log_head_stops_appends_and_reads_of_its_object_only() {
    let dir = TempDir::new("corrupt-head");
    let path = dir.file();
    let object = ObjectKey::from("ao-15");
    let other = ObjectKey::from("ao-16");
    {
        let store = open(&path);
        store.append(&object, FIRST, "x").await.unwrap();
    }
    tamper(&path, "heads", |value| value[8] ^= 0x80);
    let store = open(&path);
    let error = store.append(&object, FIRST, "y").await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert_names(
        &error,
        &["\"ao-15\"", "log head", &path.display().to_string()],
    );
    assert!(store.read_log(&object, LogPosition(0), 1).is_err());
    assert_eq!(
        store.append(&other, FIRST, "z").await.unwrap(),
        LogPosition(0)
    );
}

#[tokio::test]
async fn large_and_small_entries_appended_together_read_back_whole() {
    let dir = TempDir::new("large");
    let store = open(&dir.file());
    let object = ObjectKey::from("ao-17");
    let sizes = [10, 1_500_000, 3, 700_000, 700_000, 0, 2_000_000, 5];
    let tasks: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let (store, object) = (store.clone(), object.clone());
            tokio::spawn(async move {
                let position = store.append(&object, FIRST, vec![i as u8; size]).await?;
                Ok::<_, StoreError>((position, i, size))
            })
        })
        .collect();
    let mut appended = Vec::new();
    for task in tasks {
        appended.push(task.await.unwrap().unwrap());
    }
    let entries = store.read_log(&object, LogPosition(0), 100).unwrap();
    assert_eq!(entries.len(), sizes.len());
    for (position, i, size) in appended {
        assert_eq!(entries[position.0 as usize].bytes, vec![i as u8; size]);
    }
}

#[tokio::test]
async fn writes_beyond_the_queued_bytes_limit_wait_their_turn() {
    let dir = TempDir::new("queued-bytes");
    let config = StoreConfig {
        max_queued_bytes: 1000,
        ..StoreConfig::default()
    };
    let store = Store::open(dir.file(), config).unwrap();
    let object = ObjectKey::from("ao-18");
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (store, object) = (store.clone(), object.clone());
            // Half of them larger than the limit on their own.
            let size = if i % 2 == 0 { 5000 } else { 300 };
            tokio::spawn(async move { store.append(&object, FIRST, vec![1u8; size]).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.log_bounds(&object).unwrap().next, LogPosition(40));
}

#[tokio::test]
async fn a_log_entry_of_another_format_or_program_is_refused() {
    let dir = TempDir::new("foreign-record");
    let path = dir.file();
    let object = ObjectKey::from("ao-8");
    {
        let store = open(&path);
        store.append(&object, FIRST, "x").await.unwrap();
    }
    tamper(&path, "log", |value| value[4] = 0x63);
    let error = open(&path)
        .read_log(&object, LogPosition(0), 1)
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Corrupt {
                fault: RecordFault::Version { found: 0x63 },
                ..
            }
        ),
        "{error}"
    );
    tamper(&path, "log", |value| *value = b"{\"entry\": 1}".to_vec());
    let error = open(&path)
        .read_log(&object, LogPosition(0), 1)
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Corrupt {
                fault: RecordFault::Foreign,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_log_entry_removed_or_moved_is_not_replayed_silently() {
    let dir = TempDir::new("moved");
    let path = dir.file();
    let object = ObjectKey::from("ao-9");
    for i in 0..4 {
        // One per opening: each entry is a record of its own (the entries
        // one opening stages move to the log as one record).
        let store = open(&path);
        store
            .append(&object, FIRST, format!("request {i}"))
            .await
            .unwrap();
    }
    let log: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("log");
    let edit = |change: &dyn Fn(&mut RawTable<'_>, &[Vec<u8>])| {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(log).unwrap();
            let keys: Vec<Vec<u8>> = table
                .iter()
                .unwrap()
                .map(|entry| entry.unwrap().0.value().to_vec())
                .collect();
            change(&mut table, &keys);
        }
        txn.commit().unwrap();
    };

    // Position 3 removed: a replay from 0 stops with the gap named.
    edit(&|table, keys| {
        table.remove(keys[3].as_slice()).unwrap();
    });
    let store = open(&path);
    let error = store.read_log(&object, LogPosition(0), 10).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Corrupt {
                fault: RecordFault::Missing,
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, &["\"ao-9\"", "position 3", "gap"]);
    assert_eq!(store.read_log(&object, LogPosition(0), 3).unwrap().len(), 3);
    drop(store);

    // Entry 2 put where entry 1 was: its checksum covers its key.
    edit(&|table, keys| {
        let value = table
            .remove(keys[2].as_slice())
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        table.insert(keys[1].as_slice(), value.as_slice()).unwrap();
    });
    let store = open(&path);
    let error = store.read_log(&object, LogPosition(0), 10).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Corrupt {
                fault: RecordFault::Checksum { .. },
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, &["position 1"]);
}

#[test]
fn a_file_that_is_not_a_redb_database_is_refused_with_its_path() {
    let dir = TempDir::new("garbage");
    let path = dir.file();
    std::fs::write(&path, b"this is a text file, not a store\n".repeat(200)).unwrap();
    let error = Store::open(&path, StoreConfig::default()).unwrap_err();
    assert!(matches!(error, StoreError::NotAStore { .. }), "{error}");
    assert_names(&error, &[&path.display().to_string(), "not"]);
    // The file was not touched.
    assert!(
        std::fs::read(&path)
            .unwrap()
            .starts_with(b"this is a text file")
    );
}

#[test]
fn a_redb_database_of_another_program_is_refused() {
    let dir = TempDir::new("other-redb");
    let path = dir.file();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let definition: TableDefinition<'_, u64, u64> = TableDefinition::new("counters");
            txn.open_table(definition).unwrap().insert(1, 2).unwrap();
        }
        txn.commit().unwrap();
    }
    let error = Store::open(&path, StoreConfig::default()).unwrap_err();
    assert!(matches!(error, StoreError::NotAStore { .. }), "{error}");
    assert_names(&error, &[&path.display().to_string(), "counters"]);

    // A redb file whose `log` table has other types is not taken for one either.
    let dir = TempDir::new("other-types");
    let path = dir.file();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let definition: TableDefinition<'_, &str, u64> = TableDefinition::new("format");
            txn.open_table(definition)
                .unwrap()
                .insert("format", 1)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let error = Store::open(&path, StoreConfig::default()).unwrap_err();
    assert!(matches!(error, StoreError::NotAStore { .. }), "{error}");
}

#[tokio::test]
async fn a_store_of_another_format_version_is_refused() {
    let dir = TempDir::new("version");
    let path = dir.file();
    drop(open(&path));
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let definition: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("format");
            let mut table = txn.open_table(definition).unwrap();
            let mut value = table.get("format").unwrap().unwrap().value().to_vec();
            value[4..6].copy_from_slice(&7u16.to_le_bytes());
            table.insert("format", value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let error = Store::open(&path, StoreConfig::default()).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::IncompatibleFormat {
                found: 7,
                expected: 3,
                ..
            }
        ),
        "{error}"
    );
    assert_names(&error, &[&path.display().to_string(), "version 7"]);
}

#[tokio::test]
async fn a_truncated_store_file_is_refused_as_damaged_with_its_path() {
    let dir = TempDir::new("cut-file");
    let path = dir.file();
    let object = ObjectKey::from("ao-10");
    {
        let store = open(&path);
        for i in 0..200 {
            store
                .append(&object, FIRST, vec![i as u8; 500])
                .await
                .unwrap();
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();
    for cut in [len / 2, 4096, 100] {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        // redb asserts on some of these cuts: the store reports it instead.
        let error = Store::open(&path, StoreConfig::default()).unwrap_err();
        assert!(
            matches!(error, StoreError::Damaged { .. }),
            "cut at {cut}: {error}"
        );
        assert_names(&error, &[&path.display().to_string(), "damaged"]);
    }
}

#[test]
fn a_store_has_one_writer_at_a_time() {
    let dir = TempDir::new("in-use");
    let path = dir.file();
    let _store = open(&path);
    let error = Store::open(&path, StoreConfig::default()).unwrap_err();
    assert!(matches!(error, StoreError::InUse { .. }), "{error}");
    assert_names(&error, &[&path.display().to_string()]);
}

#[tokio::test]
async fn stats_show_the_file_size_and_what_was_written() {
    let dir = TempDir::new("stats");
    let store = open(&dir.file());
    let object = ObjectKey::from("ao-11");
    for _ in 0..10 {
        store.append(&object, FIRST, vec![0u8; 100]).await.unwrap();
    }
    store
        .put_checkpoint(&object, checkpoint(1, 0, "s"), Some(LogPosition(10)))
        .await
        .unwrap();
    let stats = store.stats();
    assert_eq!(stats.path, dir.file());
    assert_eq!(
        stats.file_bytes,
        std::fs::metadata(dir.file()).unwrap().len()
    );
    assert!(stats.file_bytes > 0);
    assert_eq!(stats.entries_written, 10);
    assert_eq!(stats.checkpoints_written, 1);
    assert!(stats.bytes_written >= 10 * 100);
    assert!(stats.commits >= 1 && stats.commits <= 11);
}

#[tokio::test]
async fn a_full_store_refuses_new_data_and_still_accepts_truncation() {
    let dir = TempDir::new("full");
    let path = dir.file();
    let config = StoreConfig {
        max_file_bytes: Some(1),
        ..StoreConfig::default()
    };
    let store = Store::open(&path, config).unwrap();
    let object = ObjectKey::from("ao-12");
    let error = store.append(&object, FIRST, "x").await.unwrap_err();
    assert!(
        matches!(error, StoreError::Full { limit: 1, .. }),
        "{error}"
    );
    assert_names(&error, &[&path.display().to_string(), "full"]);
    assert_eq!(
        store.truncate_log(&object, LogPosition(0)).await.unwrap(),
        0
    );

    let config = StoreConfig {
        max_entry_bytes: 4,
        ..StoreConfig::default()
    };
    drop(store);
    let store = Store::open(&path, config).unwrap();
    let error = store.append(&object, FIRST, "too long").await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::TooLarge {
                len: 8,
                limit: 4,
                ..
            }
        ),
        "{error}"
    );
}

/// The variable that makes [`child_appender`] append instead of returning:
/// the store's path.
const CHILD_STORE: &str = "ACTOGRID_FT_STORE_TEST_CHILD";
/// Which child this is, written in its entries.
const CHILD_ROUND: &str = "ACTOGRID_FT_STORE_TEST_ROUND";

/// Run by [`acknowledged_log_entries_survive_a_sigkill_of_the_writer`] in a
/// child process: appends `<round>/<task>:<n>` from 4 objects × 8 tasks
/// until killed, printing `acked <object> <position> <entry>` once each
/// entry is acknowledged.
#[test]
fn child_appender() {
    let Some(path) = std::env::var_os(CHILD_STORE) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let store = open(Path::new(&path));
        let mut tasks = Vec::new();
        for object in 0..4 {
            for task in 0..8 {
                let store = store.clone();
                let round = round.clone();
                tasks.push(tokio::spawn(async move {
                    let key = ObjectKey::from(format!("object-{object}"));
                    // Bounded, so that a child nobody kills still ends.
                    for n in 0..200_000 {
                        let entry = format!("{round}/{task}:{n}");
                        let position = store.append(&key, FIRST, entry.clone()).await.unwrap();
                        println!("acked object-{object} {} {entry}", position.0);
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// A child process killed and reaped however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a [`child_appender`] on `path`, kills it with SIGKILL once it
/// acknowledged `kill_after` entries, and adds every acknowledgement it
/// printed to `acked` ((object, position) → entry).
fn append_until_killed(
    path: &Path,
    round: usize,
    kill_after: usize,
    acked: &mut BTreeMap<(String, u64), String>,
) {
    use std::os::unix::process::ExitStatusExt as _;

    let mut child = Reaped(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "child_appender",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_STORE, path)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let mut count = 0;
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some(ack) = line.strip_prefix("acked ") else {
            continue;
        };
        let mut parts = ack.split(' ');
        let (object, position, entry) = (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().parse::<u64>().unwrap(),
            parts.next().unwrap().to_owned(),
        );
        let earlier = acked.insert((object.clone(), position), entry);
        assert_eq!(
            earlier, None,
            "{object}: position {position} acknowledged twice"
        );
        count += 1;
        if count == kill_after {
            child.0.kill().unwrap();
            // Reading goes on: what the child printed before dying was
            // acknowledged too.
        }
    }
    assert!(
        count >= kill_after,
        "child {round} stopped after {count} acknowledgements"
    );
    let status = child.0.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "child {round} was not killed: {status}"
    );
}

#[test]
fn acknowledged_log_entries_survive_a_sigkill_of_the_writer() {
    let dir = TempDir::new("sigkill");
    let path = dir.file();
    // Each child reopens what the previous one left after its SIGKILL.
    let mut acked = BTreeMap::new();
    for (round, kill_after) in [1000, 1500, 2000].into_iter().enumerate() {
        append_until_killed(&path, round, kill_after, &mut acked);
    }

    let store = open(&path);
    for object in 0..4 {
        let key = ObjectKey::from(format!("object-{object}"));
        let name = format!("object-{object}");
        // read_log refuses gaps, so this is a prefix of what was submitted.
        let entries = store.read_log(&key, LogPosition(0), usize::MAX).unwrap();
        let mut next_of_task: HashMap<String, u64> = HashMap::new();
        for entry in &entries {
            let text = String::from_utf8(entry.bytes.clone()).unwrap();
            if let Some(expected) = acked.get(&(name.clone(), entry.position.0)) {
                assert_eq!(&text, expected, "{name} at {}", entry.position);
            }
            // Each task appended its entries one after the other.
            let (task, n) = text.split_once(':').unwrap();
            let next = next_of_task.entry(task.to_owned()).or_default();
            assert_eq!(
                n.parse::<u64>().unwrap(),
                *next,
                "{name}: {text} out of order"
            );
            *next += 1;
        }
        let stored = entries.len() as u64;
        for (object_name, position) in acked.keys() {
            if *object_name == name {
                assert!(
                    *position < stored,
                    "{name}: acknowledged entry {position} lost ({stored} stored)"
                );
            }
        }
    }
}

/// Log records are staged side by side, then moved to the log in bulk:
/// an object's log reads the same whether its records are staged, moved,
/// or some of each, across truncations and reopenings.
#[tokio::test]
async fn a_log_reads_the_same_staged_or_moved() {
    for staged_records in [1, 3, 4096] {
        let dir = TempDir::new("staged");
        let path = dir.file();
        let config = StoreConfig {
            staged_records,
            ..StoreConfig::default()
        };
        let objects: Vec<ObjectKey> = (0..4).map(|i| ObjectKey::from(format!("ao-{i}"))).collect();
        let mut expected: Vec<Vec<String>> = vec![Vec::new(); objects.len()];
        let mut first = vec![0u64; objects.len()];
        let check = |store: &Store, expected: &[Vec<String>], first: &[u64]| {
            for (i, object) in objects.iter().enumerate() {
                let log = store
                    .read_log(object, LogPosition(first[i]), usize::MAX)
                    .unwrap();
                let read: Vec<String> = log
                    .iter()
                    .map(|e| String::from_utf8(e.bytes.clone()).unwrap())
                    .collect();
                assert_eq!(
                    read,
                    expected[i][first[i] as usize..],
                    "object {i}, staged {staged_records}"
                );
                for (k, entry) in log.iter().enumerate() {
                    assert_eq!(entry.position, LogPosition(first[i] + k as u64));
                }
                // From the middle too.
                if let Some(mid) = (first[i]..expected[i].len() as u64).nth(1) {
                    let tail = store.read_log(object, LogPosition(mid), 2).unwrap();
                    assert_eq!(tail[0].position, LogPosition(mid));
                    assert!(tail.len() <= 2);
                }
            }
        };
        for round in 0..3u64 {
            let store = Store::open(&path, config.clone()).unwrap();
            check(&store, &expected, &first);
            for step in 0..10u64 {
                // Several objects per batch, and one at a time.
                let mut appends = Vec::new();
                for (i, object) in objects.iter().enumerate() {
                    if (step + i as u64) % 3 == 0 {
                        continue;
                    }
                    let text = format!("r{round} s{step} o{i}");
                    expected[i].push(text.clone());
                    let store = store.clone();
                    let object = object.clone();
                    appends.push(tokio::spawn(async move {
                        store.append(&object, FIRST, text).await.unwrap()
                    }));
                }
                for append in appends {
                    append.await.unwrap();
                }
                check(&store, &expected, &first);
            }
            // A checkpoint of object 1 truncates its log before its last
            // two entries.
            let keep = expected[1].len() as u64 - 2;
            store
                .put_checkpoint(
                    &objects[1],
                    checkpoint(round + 1, 0, "state"),
                    Some(LogPosition(keep)),
                )
                .await
                .unwrap();
            first[1] = keep;
            check(&store, &expected, &first);
            assert!(
                store
                    .read_log(&objects[1], LogPosition(keep - 1), 1)
                    .is_err()
            );
        }
    }
}

/// A staged log record that fails its checks is reported like one in the
/// log: the object, the position, the file.
#[tokio::test]
async fn a_corrupt_staged_log_record_names_the_object_and_the_file() {
    let dir = TempDir::new("corrupt-staged");
    let path = dir.file();
    let killed = dir.0.join("killed.redb");
    let object = ObjectKey::from("ao-s");
    {
        let store = open(&path);
        store
            .append(&object, FIRST, "a logged request")
            .await
            .unwrap();
        // What a store killed before closing leaves: the record staged.
        std::fs::copy(&path, &killed).unwrap();
    }
    // In the entry's bytes.
    damage_first_record(&killed, "staged", 10, 0x01);
    // Read as it is, then after a closing that moved the staged records
    // (the damaged one stays staged).
    for _ in 0..2 {
        let store = open(&killed);
        let error = store.read_log(&object, LogPosition(0), 10).unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Corrupt {
                    fault: RecordFault::Checksum { .. },
                    ..
                }
            ),
            "{error}"
        );
        assert_names(
            &error,
            &[
                "\"ao-s\"",
                "staged log records",
                &killed.display().to_string(),
            ],
        );
    }
    // The store it was copied from reads it whole.
    let store = open(&path);
    let log = store.read_log(&object, LogPosition(0), 10).unwrap();
    assert_eq!(log.len(), 1);
}

#[test]
fn writes_are_answered_when_the_runtime_the_store_was_opened_in_ends() {
    let dir = TempDir::new("answers");
    let opening = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = opening.block_on(async { open(&dir.file()) });
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Appends from another runtime, while the first one ends.
    let appends = other.spawn({
        let store = store.clone();
        async move {
            let mut tasks = Vec::new();
            for o in 0..16 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let object = ObjectKey::from(format!("ao-{o}"));
                    for i in 0..200 {
                        let at = store.append(&object, FIRST, "entry").await.unwrap();
                        assert_eq!(at, LogPosition(i));
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(20));
    opening.shutdown_timeout(std::time::Duration::from_secs(5));
    other.block_on(appends).unwrap();
    let log = store
        .read_log(&ObjectKey::from("ao-3"), LogPosition(0), usize::MAX)
        .unwrap();
    assert_eq!(log.len(), 200);
}
