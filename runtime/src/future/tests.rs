use super::*;

fn ok(payload: Vec<u8>) -> Outcome {
    Outcome {
        status: Status::Ok,
        payload: payload.into(),
        held: Vec::new(),
        runtime: None,
        header: bytes::Bytes::new(),
    }
}

#[test]
fn a_slot_leaves_the_table_with_its_last_holder() {
    let table = FutureTable::new(7);
    let slot = table.new_slot(None, false);
    assert_eq!(
        table.len(),
        0,
        "call slots enter the table only when encoded"
    );
    table.publish(&slot);
    assert_eq!(table.len(), 1);
    let id = slot.id;
    assert!(table.get(id).is_some());
    drop(slot);
    assert!(table.get(id).is_none());
    assert_eq!(table.len(), 0);
}

#[test]
fn the_first_value_wins() {
    let table = FutureTable::new(7);
    let slot = table.new_slot(None, false);
    slot.resolve(ok(postcard::to_allocvec(&1u64).unwrap()));
    slot.resolve(ok(postcard::to_allocvec(&2u64).unwrap()));
    let outcome = slot.outcome().expect("resolved");
    assert_eq!(postcard::from_bytes::<u64>(&outcome.payload).unwrap(), 1);
}

#[test]
fn every_copy_of_a_future_decodes_the_value() {
    let table = FutureTable::new(7);
    let slot = table.new_slot(None, false);
    let a: Future<String> = Future::from_slot(slot.clone(), None);
    let b = a.clone();
    assert!(!a.is_resolved());
    slot.resolve(ok(postcard::to_allocvec("hello").unwrap()));
    let a = futures::executor::block_on(a);
    let b = futures::executor::block_on(b);
    assert_eq!(a.unwrap(), "hello");
    assert_eq!(b.unwrap(), "hello");
}

#[test]
fn failures_decode_to_their_kinds() {
    use crate::ErrorKind;
    let cases = [
        (Status::Panicked, ErrorKind::Panicked),
        (Status::NodeDied, ErrorKind::NodeDied),
        (Status::NoSuchObject, ErrorKind::NoSuchObject),
        (Status::NotMigratable, ErrorKind::Refused),
        (Status::BadRequest, ErrorKind::Refused),
    ];
    for (status, kind) in cases {
        let f: Future<u64> = Future::failed(status, "why");
        let err = futures::executor::block_on(f).unwrap_err();
        assert_eq!(err.kind(), kind, "{status:?}");
        assert!(err.to_string().contains("why"), "{err}");
    }
}

#[test]
fn a_method_error_keeps_its_type() {
    let slot = Slot::ready(Outcome {
        status: Status::MethodError,
        payload: postcard::to_allocvec(&"no such file".to_owned())
            .unwrap()
            .into(),
        held: Vec::new(),
        runtime: None,
        header: bytes::Bytes::new(),
    });
    let f: Future<u64, String> = Future::from_slot(slot, None);
    let err = futures::executor::block_on(f).unwrap_err();
    assert_eq!(err, CallError::Method("no such file".to_owned()));
}

#[test]
fn a_follower_takes_the_value_of_the_future_it_follows() {
    let table = FutureTable::new(7);
    // A flattened reply carrying a resolved future takes its value.
    let outer = table.new_slot(None, true);
    let ready = FutureWire::Ready {
        status: Status::Ok,
        payload: postcard::to_allocvec(&5u64).unwrap(),
    };
    outer.resolve(ok(postcard::to_allocvec(&ready).unwrap()));
    let f: Future<u64> = Future::from_slot(outer, None);
    assert_eq!(futures::executor::block_on(f).unwrap(), 5);

    // A follower of a pending future takes its value when it comes.
    let inner = table.new_slot(None, false);
    let follower = table.new_slot(None, false);
    assert!(inner.follow(follower.clone()).is_none());
    inner.resolve(ok(postcard::to_allocvec(&9u64).unwrap()));
    let f: Future<u64> = Future::from_slot(follower, None);
    assert_eq!(futures::executor::block_on(f).unwrap(), 9);
}

#[test]
fn a_timeout_is_its_own_kind() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let table = FutureTable::new(7);
    let slot = table.new_slot(None, false);
    let f: Future<u64> = Future::from_slot(slot.clone(), None).timeout(Duration::from_millis(10));
    let err = rt.block_on(f).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Timeout);
}
