//! Arbitrary bytes as a batch of envelopes received on the wire between two
//! runtimes (`runtime/src/wire.rs`, format in `wire.proto`).
//!
//! * Decoding never panics; it stops at the first malformed envelope.
//! * What decodes, encoded again as a sender does, decodes back equal.
//! * The writer's frame cutter, on that batch and on various frame sizes,
//!   cuts between whole envelopes only, never returns an empty frame, never
//!   more than the batch, and fills each frame as far as the next envelope
//!   allows; the frames decode to the batch's envelopes. On bytes that are
//!   not a batch it still stays within them.

#![no_main]

use actogrid_runtime::__fuzz::{Envelope, decode, encode, frame_end};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let received = decode(data);
    if let Some(at) = received.iter().position(Result::is_err) {
        assert_eq!(
            at,
            received.len() - 1,
            "the decoder went on after a malformed envelope"
        );
    }
    for max in frame_sizes(data.len()) {
        let end = frame_end(data, max);
        assert!(end <= data.len(), "cut {end} past a batch of {}", data.len());
        assert!(data.is_empty() || end > 0, "empty frame");
    }

    let envelopes: Vec<Envelope> = received.into_iter().filter_map(Result::ok).collect();
    let mut batch = Vec::new();
    // Where each envelope ends in the batch.
    let mut ends = Vec::with_capacity(envelopes.len());
    for envelope in &envelopes {
        encode(&mut batch, envelope);
        ends.push(batch.len());
    }
    let again: Vec<Envelope> = decode(&batch)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("an encoded batch does not decode: {e}"));
    assert_eq!(again, envelopes, "what was encoded decodes differently");

    for max in frame_sizes(batch.len()) {
        check_frames(&batch, &ends, max, &envelopes);
    }
});

/// Frame sizes worth trying on a batch of `len` bytes: tiny ones (every
/// envelope over the limit), middling ones, and around the whole batch.
fn frame_sizes(len: usize) -> Vec<usize> {
    let mut sizes = vec![1, 2, 9, 64, len / 3, len / 2, len.saturating_sub(1), len];
    sizes.retain(|&s| s > 0);
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Cuts `batch` into frames of at most `max` bytes as the writer does.
fn check_frames(batch: &[u8], ends: &[usize], max: usize, envelopes: &[Envelope]) {
    let mut start = 0;
    let mut received = Vec::with_capacity(envelopes.len());
    while start < batch.len() {
        let rest = &batch[start..];
        let cut = frame_end(rest, max);
        assert!(cut > 0, "empty frame at {start} (max {max})");
        assert!(cut <= rest.len(), "frame past the batch at {start} (max {max})");
        let end = start + cut;
        let Ok(last) = ends.binary_search(&end) else {
            panic!("frame {start}..{end} ends inside an envelope (max {max})");
        };
        let first = ends.partition_point(|&e| e <= start);
        if cut > max {
            assert_eq!(
                first, last,
                "frame {start}..{end} over {max} bytes holds more than one envelope"
            );
        } else if let Some(&next) = ends.get(last + 1) {
            assert!(
                next - start > max,
                "frame {start}..{end} left out an envelope that fits in {max} bytes"
            );
        }
        for envelope in decode(&batch[start..end]) {
            received.push(envelope.unwrap_or_else(|e| panic!("a frame does not decode: {e}")));
        }
        start = end;
    }
    assert_eq!(received, envelopes, "the frames hold other envelopes (max {max})");
}
