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

#[test]
fn without_acknowledgements_on_the_wire_the_committed_line_says_what_was_taken() {
    let (a, b) = (ObjectId(1), ObjectId(2));
    let mut ma: Member<&'static str> = Member::new(a, config(), Time(0));
    let mut mb: Member<&'static str> = Member::new(b, config(), Time(0));
    let mut keeper = LineKeeper::new([Member::initial_record(a), Member::initial_record(b)]);
    ma.on_request(
        Time(1),
        Request {
            id: id(1, 100, 1),
            from: None,
            payload: "transfer",
        },
    );
    // The transport numbers the calls: the member takes its number.
    let call = ma.call_numbered(Time(2), b, 1, "withdraw");
    let Some(Action::SendRequest(q)) = drain(&mut ma).pop() else {
        panic!("not sent")
    };
    mb.on_request(Time(3), q);
    mb.reply(Time(4), "withdrawn");
    mb.service_done(Time(4));
    let reply = drain(&mut mb)
        .into_iter()
        .find_map(|a| match a {
            Action::SendReply(p) => Some(p),
            _ => None,
        })
        .expect("replied");
    assert_eq!(mb.kept_reply(call), Some(&reply));
    ma.on_reply(Time(5), reply);
    ma.reply(Time(6), "done");
    assert!(ma.holds(id(1, 100, 1)));
    ma.service_done(Time(6));
    // Nobody acknowledged anything: both keep what they sent.
    assert_eq!((ma.retained(), mb.retained()), (1, 1));

    // A joins while the line is 0.
    let c = ObjectId(3);
    let mc: Member<&'static str> = Member::join(c, config(), Time(7), Incarnation::FIRST, 0);
    keeper.join(Member::joining_record(c, Incarnation::FIRST, 0));
    assert!(keeper.is_member(c) && !keeper.is_member(ObjectId(100)));
    assert_eq!(mc.index(), 0);

    for (object, m, at) in [(a, &mut ma, 1_001), (b, &mut mb, 1_002)] {
        m.tick(Time(at));
        for action in drain(m) {
            match action {
                Action::Checkpoint(r) => {
                    keeper.store_checkpoint(r);
                }
                Action::History(h) => {
                    keeper.store_history(object, Incarnation::FIRST, h);
                }
                _ => {}
            }
        }
    }
    // C checkpoints once too.
    keeper.store_checkpoint(Record {
        lo: 1,
        hi: 1,
        unchanged: true,
        ..Member::<&'static str>::joining_record(c, Incarnation::FIRST, 0)
    });
    assert_eq!(keeper.line(), 1);
    let to_a = keeper.received_from(a);
    assert_eq!(to_a.delivered(b), 1);
    let to_b = keeper.received_from(b);
    assert!(to_b.consumed(call));
    let member = |o: ObjectId| keeper.is_member(o);
    ma.line_committed(Time(1_003), Incarnation::FIRST, 1, &to_a, member);
    mb.line_committed(Time(1_003), Incarnation::FIRST, 1, &to_b, member);
    assert_eq!(mb.retained(), 0);
    // A's request went; its reply to the outside caller leaves now.
    let released: Vec<_> = drain(&mut ma)
        .into_iter()
        .filter_map(|a| match a {
            Action::SendReply(p) => Some(p.id),
            _ => None,
        })
        .collect();
    assert_eq!(released, [id(1, 100, 1)]);
    assert!(!ma.holds(id(1, 100, 1)));
}
