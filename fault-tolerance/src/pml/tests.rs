//! The rules of the protocol, one at a time, on one core. The simulator
//! (`tests/pml_sim.rs`) checks that together they give exactly-once effects
//! under failures.

use std::time::Duration;

use super::*;

const ME: ObjectId = ObjectId(1);
const ALICE: ObjectId = ObjectId(10);
const BOB: ObjectId = ObjectId(20);

fn config() -> Config {
    Config {
        ttc: Duration::from_millis(100),
        resend_after: Duration::from_millis(50),
        max_ahead: 4,
    }
}

fn t(ms: u64) -> Time {
    Time(ms)
}

fn drain(core: &mut Protected<&'static str>) -> Vec<Action<&'static str>> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

fn request(sender: ObjectId, seq: u64, payload: &'static str) -> Request<&'static str> {
    Request {
        id: RequestId {
            target: ME,
            sender,
            seq,
        },
        incarnation: Incarnation::FIRST,
        acked: 0,
        payload,
    }
}

/// A running object: its first checkpoint is durable.
fn running() -> Protected<&'static str> {
    let mut core = Protected::new(ME, config(), t(0));
    drain(&mut core);
    core.checkpoint_durable(t(0), LogPosition(0)).unwrap();
    assert!(drain(&mut core).is_empty());
    core
}

/// Delivers `req` (logged and made durable) and returns what followed.
fn deliver(core: &mut Protected<&'static str>, now: u64, req: Request<&'static str>) {
    core.on_request(t(now), req.clone());
    let Some(Action::Append { position, .. }) = core.poll_action() else {
        panic!("not logged");
    };
    core.log_durable(t(now), position).unwrap();
    assert_eq!(
        drain(core),
        vec![Action::Deliver(Message::Request(req))],
        "delivered once durable"
    );
}

#[test]
fn nothing_is_delivered_before_the_first_checkpoint_is_durable() {
    let mut core = Protected::new(ME, config(), t(0));
    let actions = drain(&mut core);
    assert!(
        matches!(&actions[..], [Action::Checkpoint { protocol }] if protocol.position() == LogPosition(0))
    );

    core.on_request(t(1), request(ALICE, 1, "a"));
    core.log_durable(t(1), LogPosition(0)).unwrap();
    let actions = drain(&mut core);
    assert!(matches!(
        &actions[..],
        [Action::Append {
            position: LogPosition(0),
            ..
        }]
    ));

    core.checkpoint_durable(t(2), LogPosition(0)).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![Action::Deliver(Message::Request(request(ALICE, 1, "a")))]
    );
}

#[test]
fn a_request_is_delivered_only_once_its_log_entry_is_durable() {
    let mut core = running();
    core.on_request(t(1), request(ALICE, 1, "a"));
    core.on_request(t(1), request(BOB, 1, "b"));
    assert_eq!(
        drain(&mut core),
        vec![
            Action::Append {
                position: LogPosition(0),
                message: Message::Request(request(ALICE, 1, "a"))
            },
            Action::Append {
                position: LogPosition(1),
                message: Message::Request(request(BOB, 1, "b"))
            },
        ]
    );
    assert!(
        core.log_durable(t(1), LogPosition(2)).is_err(),
        "never appended"
    );
    core.log_durable(t(2), LogPosition(1)).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![Action::Deliver(Message::Request(request(ALICE, 1, "a")))],
        "one at a time, in log order"
    );
    core.step_done(t(3)).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![Action::Deliver(Message::Request(request(BOB, 1, "b")))]
    );
}

#[test]
fn a_duplicate_is_answered_with_the_original_reply_and_never_served_again() {
    let mut core = running();
    deliver(&mut core, 1, request(ALICE, 1, "a"));
    // The duplicate of a request being served is dropped: its reply comes.
    core.on_request(t(2), request(ALICE, 1, "a"));
    assert!(drain(&mut core).is_empty());
    let id = request(ALICE, 1, "a").id;
    core.reply(id, "one").unwrap();
    core.step_done(t(3)).unwrap();
    let reply = Reply {
        request: id,
        incarnation: Incarnation::FIRST,
        value: "one",
    };
    assert_eq!(drain(&mut core), vec![Action::Reply(reply.clone())]);

    core.on_request(t(4), request(ALICE, 1, "a"));
    assert_eq!(drain(&mut core), vec![Action::AnswerDuplicate(reply)]);
    assert_eq!(core.stats().duplicates_answered, 1);

    // Once the sender says it holds the reply, the object forgets it, and
    // a late copy of the request is dropped.
    let mut next = request(ALICE, 2, "b");
    next.acked = 1;
    deliver(&mut core, 5, next);
    core.on_request(t(6), request(ALICE, 1, "a"));
    assert!(drain(&mut core).is_empty());
}

#[test]
fn requests_overtaken_on_the_way_are_logged_in_their_senders_order() {
    let mut core = running();
    core.on_request(t(1), request(ALICE, 3, "c"));
    core.on_request(t(1), request(ALICE, 2, "b"));
    assert!(drain(&mut core).is_empty(), "held until request 1 comes");
    core.on_request(t(2), request(ALICE, 1, "a"));
    let logged: Vec<_> = drain(&mut core)
        .into_iter()
        .map(|a| match a {
            Action::Append {
                message: Message::Request(r),
                ..
            } => r.payload,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(logged, ["a", "b", "c"]);
}

#[test]
fn a_reply_is_logged_before_the_body_observes_it_and_observed_once() {
    let mut core = running();
    deliver(&mut core, 1, request(ALICE, 1, "a"));
    let call = core.call(t(1), BOB, "ask").unwrap();
    assert!(matches!(&drain(&mut core)[..], [Action::Send(r)] if r.id == call));

    // The body awaits the reply inside its request.
    let reply = Reply {
        request: call,
        incarnation: Incarnation::FIRST,
        value: "answer",
    };
    core.on_reply(t(3), reply.clone());
    core.on_reply(t(3), reply.clone());
    assert_eq!(
        drain(&mut core),
        vec![Action::Append {
            position: LogPosition(1),
            message: Message::Reply(reply.clone())
        }],
        "logged once, not observed yet"
    );
    core.log_durable(t(4), LogPosition(1)).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![Action::Deliver(Message::Reply(reply.clone()))],
        "delivered in the middle of the service"
    );
    core.reply(request(ALICE, 1, "a").id, "done").unwrap();
    core.step_done(t(5)).unwrap();
    drain(&mut core);
    core.on_reply(t(6), reply);
    assert!(drain(&mut core).is_empty(), "a late copy is dropped");
    assert!(core.is_idle());
}

#[test]
fn a_replay_makes_its_calls_again_and_gets_their_logged_replies_without_sending() {
    let first = first_checkpoint();
    let log = vec![
        (LogPosition(0), Message::Request(request(ALICE, 1, "a"))),
        (
            LogPosition(1),
            Message::Reply(Reply {
                request: RequestId {
                    target: BOB,
                    sender: ME,
                    seq: 1,
                },
                incarnation: Incarnation::FIRST,
                value: "answer",
            }),
        ),
    ];
    let mut core = Protected::recover(ME, Incarnation(1), config(), t(10), first, log).unwrap();
    assert!(matches!(
        &drain(&mut core)[..],
        [Action::Replay(Message::Request(_))]
    ));
    let call = core.call(t(11), BOB, "ask").unwrap();
    assert_eq!(call.seq, 1, "the same number as before the failure");
    assert!(
        matches!(&drain(&mut core)[..], [Action::Replay(Message::Reply(r))] if r.value == "answer")
    );
    core.reply(request(ALICE, 1, "a").id, "done").unwrap();
    core.step_done(t(12)).unwrap();
    assert!(matches!(&drain(&mut core)[..], [Action::Reply(_)]));
    assert!(!core.is_replaying());
    assert!(core.is_idle());
}

/// The forced first checkpoint of a new object, as the store keeps it.
fn first_checkpoint() -> Snapshot<&'static str> {
    match Protected::new(ME, config(), t(0)).poll_action() {
        Some(Action::Checkpoint { protocol }) => protocol,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_checkpoint_waits_for_a_request_boundary_and_the_log_for_its_durability() {
    let mut core = running();
    deliver(&mut core, 1, request(ALICE, 1, "a"));
    core.on_request(t(2), request(ALICE, 2, "b"));
    core.log_durable(t(2), LogPosition(1)).unwrap();
    drain(&mut core);
    core.tick(t(500));
    assert!(
        drain(&mut core).is_empty(),
        "TTC passed, but the body is serving"
    );

    core.reply(request(ALICE, 1, "a").id, "one").unwrap();
    core.step_done(t(501)).unwrap();
    let actions = drain(&mut core);
    let [
        Action::Reply(_),
        Action::Checkpoint { protocol },
        Action::Deliver(_),
    ] = &actions[..]
    else {
        panic!("{actions:?}");
    };
    assert_eq!(
        protocol.position(),
        LogPosition(1),
        "covers what was served"
    );

    core.step_done(t(502)).unwrap();
    core.tick(t(503));
    assert!(drain(&mut core).is_empty(), "one checkpoint at a time");
    core.checkpoint_durable(t(504), LogPosition(1)).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![Action::Truncate {
            before: LogPosition(1)
        }]
    );
}

#[test]
fn an_idle_object_checkpoints_when_its_ttc_elapses_and_not_again_while_nothing_happens() {
    let mut core = running();
    deliver(&mut core, 1, request(ALICE, 1, "a"));
    core.reply(request(ALICE, 1, "a").id, "one").unwrap();
    core.step_done(t(2)).unwrap();
    drain(&mut core);
    core.tick(t(50));
    assert!(drain(&mut core).is_empty());
    core.tick(t(150));
    let actions = drain(&mut core);
    assert!(
        matches!(&actions[..], [Action::Checkpoint { protocol }] if protocol.position() == LogPosition(1))
    );
    core.checkpoint_durable(t(151), LogPosition(1)).unwrap();
    drain(&mut core);
    core.tick(t(400));
    assert!(drain(&mut core).is_empty());
}

#[test]
fn recovery_replays_the_log_in_order_then_serves_what_is_new() {
    let mut core = running();
    deliver(&mut core, 1, request(ALICE, 1, "a"));
    core.reply(request(ALICE, 1, "a").id, "one").unwrap();
    core.step_done(t(2)).unwrap();
    core.tick(t(200));
    let protocol = drain(&mut core)
        .into_iter()
        .find_map(|a| match a {
            Action::Checkpoint { protocol } => Some(protocol),
            _ => None,
        })
        .unwrap();
    let log = vec![
        (LogPosition(1), Message::Request(request(BOB, 1, "b"))),
        (LogPosition(2), Message::Request(request(ALICE, 2, "c"))),
    ];

    let mut core = Protected::recover(ME, Incarnation(1), config(), t(300), protocol, log).unwrap();
    assert!(core.is_replaying());
    assert_eq!(
        drain(&mut core),
        vec![Action::Replay(Message::Request(request(BOB, 1, "b")))]
    );
    // A sender resending a logged request while the replay runs: not
    // served twice; the replay answers it.
    core.on_request(t(301), request(ALICE, 2, "c"));
    // A request served before the checkpoint: the original reply.
    core.on_request(t(301), request(ALICE, 1, "a"));
    // Something new: logged after what is replayed.
    core.on_request(t(301), request(BOB, 2, "d"));
    let actions = drain(&mut core);
    assert!(matches!(&actions[..], [
        Action::AnswerDuplicate(r),
        Action::Append { position: LogPosition(3), .. },
    ] if r.value == "one"));
    core.log_durable(t(302), LogPosition(3)).unwrap();
    core.reply(request(BOB, 1, "b").id, "two").unwrap();
    core.step_done(t(302)).unwrap();
    let actions = drain(&mut core);
    assert!(
        matches!(&actions[..], [Action::Reply(_), Action::Replay(Message::Request(r))] if r.payload == "c")
    );
    core.step_done(t(303)).unwrap();
    let actions = drain(&mut core);
    assert!(matches!(&actions[..], [Action::Deliver(Message::Request(r))] if r.payload == "d"));
    assert!(!core.is_replaying());
}

#[test]
fn a_log_that_does_not_follow_its_checkpoint_is_refused() {
    let mut core = Protected::new(ME, config(), t(0));
    let Some(Action::Checkpoint { protocol }) = core.poll_action() else {
        panic!()
    };
    let gap = vec![(LogPosition(1), Message::Request(request(ALICE, 1, "a")))];
    assert!(matches!(
        Protected::recover(ME, Incarnation(1), config(), t(0), protocol.clone(), gap),
        Err(Error::LogGap { .. })
    ));
    let disorder = vec![(LogPosition(0), Message::Request(request(ALICE, 2, "b")))];
    assert!(matches!(
        Protected::recover(ME, Incarnation(1), config(), t(0), protocol, disorder),
        Err(Error::LogOutOfOrder { .. })
    ));
}

#[test]
fn messages_from_a_fenced_incarnation_are_dropped() {
    let mut core = running();
    core.peer_restarted(t(1), ALICE, Incarnation(2));
    let mut old = request(ALICE, 1, "a");
    old.incarnation = Incarnation(1);
    core.on_request(t(2), old);
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.stats().stale_dropped, 1);
    let mut new = request(ALICE, 1, "a");
    new.incarnation = Incarnation(2);
    core.on_request(t(3), new);
    assert_eq!(drain(&mut core).len(), 1);
}

#[test]
fn an_incarnation_that_learns_of_a_newer_one_stops() {
    let mut core = running();
    core.peer_restarted(t(1), ME, Incarnation(1));
    assert_eq!(drain(&mut core), vec![Action::Stop]);
    core.on_request(t(2), request(ALICE, 1, "a"));
    assert!(drain(&mut core).is_empty());
    assert!(matches!(
        core.call(t(2), BOB, "x"),
        Err(Error::Fenced { .. })
    ));

    let mut core = running();
    core.fenced();
    assert_eq!(drain(&mut core), vec![Action::Stop]);
}

#[test]
fn unanswered_calls_are_resent_after_a_while_and_at_once_when_their_target_restarts() {
    let mut core = running();
    deliver(&mut core, 1, request(ALICE, 1, "a"));
    let call = core.call(t(1), BOB, "ask").unwrap();
    core.step_done(t(1)).unwrap();
    drain(&mut core);
    core.tick(t(20));
    assert!(drain(&mut core).is_empty());
    core.tick(t(60));
    assert!(matches!(&drain(&mut core)[..], [Action::Resend(r)] if r.id == call));
    core.peer_restarted(t(61), BOB, Incarnation(1));
    assert!(matches!(&drain(&mut core)[..], [Action::Resend(r)] if r.id == call));
}

#[test]
fn a_caller_resolves_each_future_once_and_resends_until_then() {
    let mut caller = Caller::new(ALICE, Duration::from_millis(50));
    let id = caller.call(t(0), ME, "a");
    assert!(matches!(caller.poll_action(), Some(CallerAction::Send(r)) if r.id == id));
    caller.tick(t(60));
    assert!(matches!(caller.poll_action(), Some(CallerAction::Resend(r)) if r.id == id));
    let reply = Reply {
        request: id,
        incarnation: Incarnation(3),
        value: "x",
    };
    assert_eq!(caller.on_reply(reply.clone()), Some((id, "x")));
    assert_eq!(caller.on_reply(reply), None);
    caller.tick(t(500));
    assert_eq!(caller.poll_action(), None);
    assert_eq!(caller.pending(), 0);
}

#[test]
fn the_recovery_process_fences_before_it_restarts_and_ignores_stale_reports() {
    let mut recovery = RecoveryProcess::new();
    recovery.register(ME);
    recovery.failure_detected(ME, Incarnation::FIRST);
    assert_eq!(
        std::iter::from_fn(|| recovery.poll_action()).collect::<Vec<_>>(),
        vec![
            RecoveryAction::Fence {
                object: ME,
                below: Incarnation(1)
            },
            RecoveryAction::Restart {
                object: ME,
                incarnation: Incarnation(1)
            },
        ]
    );
    // The same failure, reported again.
    recovery.failure_detected(ME, Incarnation::FIRST);
    assert!(
        std::iter::from_fn(|| recovery.poll_action())
            .collect::<Vec<_>>()
            .is_empty()
    );
    // The restarted node fails before it reports: restart again.
    recovery.failure_detected(ME, Incarnation(1));
    assert_eq!(
        std::iter::from_fn(|| recovery.poll_action())
            .collect::<Vec<_>>()
            .len(),
        2
    );
    recovery.restarted(ME, Incarnation(1));
    assert!(
        std::iter::from_fn(|| recovery.poll_action())
            .collect::<Vec<_>>()
            .is_empty(),
        "superseded"
    );
    recovery.restarted(ME, Incarnation(2));
    assert_eq!(
        std::iter::from_fn(|| recovery.poll_action()).collect::<Vec<_>>(),
        vec![RecoveryAction::Announce {
            object: ME,
            incarnation: Incarnation(2)
        }]
    );
    assert_eq!(recovery.status(ME), Some(Status::Running(Incarnation(2))));
}

#[test]
fn driver_mistakes_are_errors_and_leave_the_core_unchanged() {
    let mut core = running();
    let id = request(ALICE, 1, "a").id;
    assert!(matches!(
        core.reply(id, "x"),
        Err(Error::UnknownRequest { .. })
    ));
    assert!(matches!(
        core.call(t(1), BOB, "x"),
        Err(Error::NotServing { .. })
    ));
    assert!(matches!(
        core.step_done(t(1)),
        Err(Error::NotServing { .. })
    ));
    assert!(matches!(
        core.checkpoint_durable(t(1), LogPosition(7)),
        Err(Error::UnknownCheckpoint { .. })
    ));
    deliver(&mut core, 1, request(ALICE, 1, "a"));
    let other = request(BOB, 1, "b").id;
    assert!(matches!(
        core.reply(other, "x"),
        Err(Error::UnknownRequest { .. })
    ));
    core.reply(id, "x").unwrap();
    assert!(matches!(
        core.reply(id, "y"),
        Err(Error::AlreadyAnswered { .. })
    ));
    core.step_done(t(2)).unwrap();
    assert!(core.is_idle());
}

#[test]
fn a_reply_handed_over_before_a_request_logged_earlier_is_not_handed_over_again() {
    let mut core = running();
    deliver(&mut core, 1, request(ALICE, 1, "a"));
    let call = core.call(t(1), BOB, "ask").unwrap();
    core.on_request(t(2), request(ALICE, 2, "b"));
    let reply = Reply {
        request: call,
        incarnation: Incarnation::FIRST,
        value: "answer",
    };
    core.on_reply(t(2), reply.clone());
    core.log_durable(t(3), LogPosition(2)).unwrap();
    let actions = drain(&mut core);
    assert_eq!(
        actions.last(),
        Some(&Action::Deliver(Message::Reply(reply.clone()))),
        "the reply overtakes request 2, which waits for the service to end"
    );
    core.reply(request(ALICE, 1, "a").id, "one").unwrap();
    core.tick(t(200));
    core.step_done(t(200)).unwrap();
    let protocol = drain(&mut core)
        .into_iter()
        .find_map(|a| match a {
            Action::Checkpoint { protocol } => Some(protocol),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        protocol.position(),
        LogPosition(1),
        "request 2 is not served"
    );

    let log = vec![
        (LogPosition(1), Message::Request(request(ALICE, 2, "b"))),
        (LogPosition(2), Message::Reply(reply)),
    ];
    let mut core = Protected::recover(ME, Incarnation(1), config(), t(300), protocol, log).unwrap();
    assert_eq!(
        drain(&mut core),
        vec![Action::Replay(Message::Request(request(ALICE, 2, "b")))]
    );
    core.reply(request(ALICE, 2, "b").id, "two").unwrap();
    core.step_done(t(301)).unwrap();
    assert!(matches!(&drain(&mut core)[..], [Action::Reply(_)]));
    assert!(core.is_idle(), "the reply was not handed over again");
}

/// Whatever arrives, in whatever order, and whatever the driver reports,
/// the core neither panics nor delivers anything twice or undurable.
#[test]
fn arbitrary_input_never_panics_nor_breaks_the_delivery_rules() {
    let mut state = 0x1234_5678_9abc_def0_u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let pick = |v: u64| match v {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => u64::MAX - 1,
        _ => u64::MAX,
    };
    for _ in 0..200 {
        let mut core = running();
        let mut durable = 0u64;
        let mut appended = 0u64;
        let mut logged_at = std::collections::BTreeMap::new();
        let mut delivered = std::collections::BTreeSet::new();
        for step in 0..300u64 {
            let now = t(step);
            match next(9) {
                0..=2 => {
                    let mut r = request([ALICE, BOB, ME][next(3) as usize], 1 + next(6), "x");
                    if next(8) == 0 {
                        r.id.seq = pick(next(5));
                    }
                    if next(4) == 0 {
                        r.acked = pick(next(5));
                    }
                    r.incarnation = Incarnation(next(3));
                    r.id.target = if next(10) == 0 { BOB } else { ME };
                    core.on_request(now, r);
                }
                3 => core.on_reply(
                    now,
                    Reply {
                        request: RequestId {
                            target: BOB,
                            sender: if next(5) == 0 { ALICE } else { ME },
                            seq: pick(next(5)),
                        },
                        incarnation: Incarnation(next(3)),
                        value: "y",
                    },
                ),
                4 => {
                    let position = next(appended + 2);
                    if core.log_durable(now, LogPosition(position)).is_ok() {
                        durable = durable.max(position + 1);
                    }
                }
                5 => {
                    let _ = core.call(now, BOB, "z");
                }
                6 => {
                    let _ = core.step_done(now);
                }
                7 => core.tick(t(step * 50)),
                _ => {
                    let _ = core.checkpoint_durable(now, LogPosition(next(appended + 2)));
                }
            }
            while let Some(action) = core.poll_action() {
                match action {
                    Action::Append { position, message } => {
                        assert_eq!(position, LogPosition(appended));
                        appended += 1;
                        if let Message::Request(r) = message {
                            assert!(logged_at.insert(r.id, position.0).is_none(), "logged twice");
                        }
                    }
                    Action::Deliver(Message::Request(r)) => {
                        assert!(logged_at[&r.id] < durable, "{} delivered undurable", r.id);
                        assert!(delivered.insert(r.id), "{} delivered twice", r.id);
                        let _ = core.reply(r.id, "v");
                    }
                    Action::Deliver(Message::Reply(_)) => {}
                    _ => {}
                }
            }
        }
    }
}
