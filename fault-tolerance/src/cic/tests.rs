//! The rules of CIC, one at a time, on the cores alone.

use super::*;

fn id(target: u64, sender: u64, seq: u64) -> RequestId {
    RequestId {
        target: ObjectId(target),
        sender: ObjectId(sender),
        seq,
    }
}

fn stamp(index: u64, delivered: u64) -> Option<Stamp> {
    Some(Stamp {
        epoch: Incarnation::FIRST,
        index,
        delivered,
        consumed: 0,
    })
}

fn drain(m: &mut Member<&'static str>) -> Vec<Action<&'static str>> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn config() -> Config {
    Config {
        ttc: 1_000,
        resend_after: 100,
        max_ahead: 16,
    }
}

#[test]
fn a_request_from_ahead_is_delivered_after_a_checkpoint_of_its_index() {
    let mut m = Member::new(ObjectId(1), config(), Time(0));
    m.on_request(
        Time(1),
        Request {
            id: id(1, 2, 1),
            from: stamp(4, 1),
            payload: "credit",
        },
    );
    let actions = drain(&mut m);
    let checkpoint = actions
        .iter()
        .position(|a| matches!(a, Action::Checkpoint(r) if r.lo == 1 && r.hi == 4))
        .expect("a checkpoint standing for 1..=4");
    let deliver = actions
        .iter()
        .position(|a| matches!(a, Action::Deliver(_)))
        .expect("delivered");
    assert!(checkpoint < deliver, "{actions:?}");
    assert_eq!(m.index(), 4);
}

#[test]
fn a_reply_from_ahead_records_a_dependency_and_raises_the_next_checkpoint() {
    let mut m = Member::new(ObjectId(1), config(), Time(0));
    m.on_request(
        Time(1),
        Request {
            id: id(1, 100, 1),
            from: None,
            payload: "transfer",
        },
    );
    drain(&mut m);
    let call = m.call(Time(2), ObjectId(3), "withdraw");
    m.on_reply(
        Time(3),
        Reply {
            id: call,
            from: Some(Stamp {
                epoch: Incarnation::FIRST,
                index: 6,
                delivered: 9,
                consumed: 0,
            }),
            payload: "balance",
        },
    );
    // Consumed inside the service: no checkpoint there.
    assert!(
        !drain(&mut m)
            .iter()
            .any(|a| matches!(a, Action::Checkpoint(_)))
    );
    m.reply(Time(4), "done");
    m.service_done(Time(5));
    let record = drain(&mut m)
        .into_iter()
        .find_map(|a| match a {
            Action::Checkpoint(r) => Some(r),
            _ => None,
        })
        .expect("a checkpoint at the boundary");
    assert_eq!((record.lo, record.hi), (1, 6));
    assert_eq!(
        record.deps,
        vec![Dep {
            on: ObjectId(3),
            index: 6,
            at: At {
                position: 9,
                sub: 0
            }
        }]
    );
}

#[test]
fn a_reply_to_an_outside_caller_waits_for_the_line() {
    let mut m = Member::new(ObjectId(1), config(), Time(0));
    m.on_request(
        Time(1),
        Request {
            id: id(1, 100, 1),
            from: None,
            payload: "deposit",
        },
    );
    drain(&mut m);
    m.reply(Time(2), "balance");
    m.service_done(Time(3));
    assert!(
        !drain(&mut m)
            .iter()
            .any(|a| matches!(a, Action::SendReply(_))),
        "sent before any line passed the service"
    );
    // Produced at index 0: a line of 1 passes it.
    m.line_advanced(Time(4), Incarnation::FIRST, 1);
    assert!(
        drain(&mut m)
            .iter()
            .any(|a| matches!(a, Action::SendReply(r) if r.payload == "balance"))
    );
}

#[test]
fn duplicates_and_other_epochs_are_not_delivered() {
    let mut m = Member::new(ObjectId(1), config(), Time(0));
    let request = Request {
        id: id(1, 2, 1),
        from: stamp(0, 1),
        payload: "credit",
    };
    m.on_request(Time(1), request.clone());
    assert!(
        drain(&mut m)
            .iter()
            .any(|a| matches!(a, Action::Deliver(_)))
    );
    m.service_done(Time(2));
    drain(&mut m);
    m.on_request(Time(3), request.clone());
    let again = drain(&mut m);
    assert!(!again.iter().any(|a| matches!(a, Action::Deliver(_))));
    assert!(
        again
            .iter()
            .any(|a| matches!(a, Action::SendAck { ack, .. } if !ack.reply))
    );
    let mut newer = request;
    newer.id.seq = 2;
    newer.from = Some(Stamp {
        epoch: Incarnation(1),
        ..newer.from.unwrap()
    });
    m.on_request(Time(4), newer);
    assert!(drain(&mut m).is_empty(), "a message of another epoch");
}

/// Two members, a reply from ahead: the line that holds its consumption
/// needs the replier's history up to its sending, and a recovery replays
/// it.
#[test]
fn the_line_waits_for_the_history_a_reply_from_ahead_needs() {
    let (a, b) = (ObjectId(1), ObjectId(2));
    let mut keeper: LineKeeper<&str> =
        LineKeeper::new([Member::initial_record(a), Member::initial_record(b)]);
    let record = |object, lo, hi, delivered, deps| Record {
        object,
        epoch: Incarnation::FIRST,
        lo,
        hi,
        delivered,
        consumed: 0,
        deps,
        unchanged: false,
        state: State::default(),
    };
    // b delivered a request from outside at position 1, after its
    // checkpoint 1, and replied from there to a's call; a consumed that
    // reply and then checkpointed to 1.
    assert_eq!(keeper.store_checkpoint(record(b, 1, 1, 0, vec![])), None);
    let dep = Dep {
        on: b,
        index: 1,
        at: At {
            position: 1,
            sub: 0,
        },
    };
    assert_eq!(
        keeper.store_checkpoint(record(a, 1, 1, 0, vec![dep])),
        None,
        "line 1 needs b's history, not durable yet"
    );
    let entry = Entry {
        at: At {
            position: 1,
            sub: 0,
        },
        kind: EntryKind::Request(1),
        sender: ObjectId(100),
        stamp: None,
    };
    assert_eq!(
        keeper.store_history(b, Incarnation::FIRST, vec![entry]),
        Some(1)
    );
    let plan = keeper.recover().expect("a plan");
    assert_eq!(plan.line, 1);
    assert_eq!(plan.epoch, Incarnation(1));
    let b_restart = plan.restarts.iter().find(|r| r.object == b).unwrap();
    assert_eq!(b_restart.replay, vec![(ObjectId(100), 1)]);
    let a_restart = plan.restarts.iter().find(|r| r.object == a).unwrap();
    assert!(a_restart.replay.is_empty());
    // Older epochs are fenced from the store.
    assert_eq!(keeper.store_checkpoint(record(a, 2, 2, 0, vec![])), None);
    assert_eq!(keeper.kept().0, 2);
}
