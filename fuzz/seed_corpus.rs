//! Writes the seed corpora of `wire_envelopes` and `overlay_messages` from
//! valid messages, into `<dir>/wire_envelopes` and `<dir>/overlay_messages`.
//! Not a fuzz target; `seed-corpus.sh` builds and runs it.

use std::path::Path;

use actogrid_acquisition::overlay::{
    BookingId, Envelope, FloodId, Message, ReleaseReason, RequestId, Token, Wanted,
};
use actogrid_fuzz as format;
use actogrid_runtime::__fuzz::{self as wire};

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: seed-corpus <corpus directory>");
        std::process::exit(2);
    };
    let dir = Path::new(&dir);
    let written = write(&dir.join("wire_envelopes"), wire_seeds())
        + write(&dir.join("overlay_messages"), overlay_seeds());
    println!("{written} seed files in {}", dir.display());
}

fn write(dir: &Path, seeds: Vec<(&str, Vec<u8>)>) -> usize {
    std::fs::create_dir_all(dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    for (name, bytes) in &seeds {
        let path = dir.join(name);
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    seeds.len()
}

/// One batch per kind of envelope, and one of all of them.
fn wire_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let envelopes = [
        (
            "request",
            wire::Envelope::Request {
                call_id: 1,
                target: 0x5eed_0000_0000_0001,
                sender: 0x5eed_0000_0000_0002,
                seq: 1,
                flags: 0,
                header: Vec::new(),
                futures: Vec::new(),
                payload: b"\x02hi".to_vec(),
            },
        ),
        (
            "request-futures",
            wire::Envelope::Request {
                call_id: 300,
                target: 7,
                sender: 8,
                seq: 0,
                flags: 1 | 8,
                header: b"service header".to_vec(),
                futures: vec![(0x5eed, 1), (0x5eed, 200)],
                payload: vec![0; 20],
            },
        ),
        (
            "reply",
            wire::Envelope::Reply {
                call_id: 1,
                status: 0,
                header: Vec::new(),
                futures: vec![(9, 9)],
                moved: None,
                payload: b"\x2a".to_vec(),
            },
        ),
        (
            "reply-moved",
            wire::Envelope::Reply {
                call_id: 2,
                status: 3,
                header: b"stamp".to_vec(),
                futures: Vec::new(),
                moved: Some((7, "10.0.0.2:7000".to_owned())),
                payload: b"no such object".to_vec(),
            },
        ),
        (
            "value",
            wire::Envelope::Value {
                future: (0x5eed, 1),
                status: 1,
                futures: vec![(3, 4)],
                payload: b"error".to_vec(),
            },
        ),
        (
            "claim",
            wire::Envelope::Claim {
                sender: 0x5eed_0000_0000_0002,
                public_key: [0x5e; 32],
                signature: vec![0xed; 64],
            },
        ),
        ("ping", wire::Envelope::Other),
    ];
    let mut seeds = Vec::new();
    let mut all = Vec::new();
    for (name, envelope) in &envelopes {
        let mut batch = Vec::new();
        wire::encode(&mut batch, envelope);
        all.extend_from_slice(&batch);
        seeds.push((*name, batch));
    }
    // An envelope of a kind from a newer runtime, which is skipped.
    all.extend_from_slice(&[3, 9, 1, 2]);
    seeds.push(("batch", all));
    seeds
}

/// For each kind of message: a peer with two slots and a request for two
/// nodes receives it from `p1`, then time passes. Then one with all of
/// them in a row.
fn overlay_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let peer = |name: &str| name.to_owned();
    let bookings = vec![BookingId(1), BookingId(2)];
    let messages: Vec<(&str, Message<String>)> = vec![
        (
            "heartbeat",
            Message::Heartbeat {
                lent: vec![BookingId(1)],
                borrowed: vec![BookingId(2)],
            },
        ),
        ("heartbeat-ack", Message::HeartbeatAck { acquainted: true }),
        ("acquaint-request", Message::AcquaintRequest),
        (
            "acquaint-reply",
            Message::AcquaintReply {
                accepted: false,
                referrals: vec![peer("p3"), peer("p4")],
            },
        ),
        ("leave", Message::Leave),
        (
            "explore",
            Message::Explore {
                flood: FloodId(1),
                origin: peer("p3"),
                ttl: 2,
            },
        ),
        (
            "request",
            Message::Request {
                flood: FloodId(2),
                request: RequestId(5),
                origin: peer("p3"),
                ttl: 3,
                wanted: Wanted::Count(2),
            },
        ),
        (
            "offer",
            Message::Offer {
                request: RequestId(5),
                bookings: bookings.clone(),
            },
        ),
        (
            "book",
            Message::Book {
                request: RequestId(5),
                take: vec![BookingId(1)],
                decline: vec![BookingId(2)],
            },
        ),
        (
            "booked",
            Message::Booked {
                request: RequestId(5),
                booked: vec![BookingId(1)],
                refused: vec![BookingId(2)],
            },
        ),
        (
            "release",
            Message::Release {
                bookings: bookings.clone(),
            },
        ),
        (
            "released",
            Message::Released {
                bookings,
                reason: ReleaseReason::Ended,
            },
        ),
    ];
    // Two slots, NOA 2, the open overlay, seed 1; a request for two nodes.
    let start = [2, 1, 0, 1, format::ACQUIRE, 2];
    let mut seeds = Vec::new();
    let mut all = start.to_vec();
    for (name, message) in messages {
        let mut ops = Vec::new();
        raw(&mut ops, 1, &message);
        ops.extend_from_slice(&[format::WAIT, 0x10, 0x00, format::DEADLINE]);
        all.extend_from_slice(&ops);
        seeds.push((name, [&start[..], &ops].concat()));
    }
    seeds.push(("all", all));
    seeds
}

/// A `RAW` operation carrying `message` from peer `from`, encoded.
fn raw(ops: &mut Vec<u8>, from: u8, message: &Message<String>) {
    let bytes = Envelope {
        token: Token::OPEN,
        message: message.clone(),
    }
    .encode();
    let len = u16::try_from(bytes.len()).expect("a seed message under 64 KiB");
    ops.push(format::RAW);
    ops.push(from);
    ops.extend_from_slice(&len.to_le_bytes());
    ops.extend_from_slice(&bytes);
}
