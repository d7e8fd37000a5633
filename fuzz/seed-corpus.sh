#!/bin/sh
# Seeds the fuzzing corpora, in fuzz/corpus/<target>:
# - descriptor: the valid example descriptors;
# - wire_envelopes, overlay_messages: valid envelopes and overlay messages,
#   written by the seed-corpus program of this directory (built like the
#   targets, with cargo-fuzz).
# Run from anywhere.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/corpus/descriptor"
cp "$here"/../descriptor/tests/data/valid/*.xml "$here/corpus/descriptor/"
ls "$here/corpus/descriptor" | wc -l | xargs printf '%s seed files in fuzz/corpus/descriptor\n'

cd "$here/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTC_BOOTSTRAP=1 cargo fuzz build seed-corpus
"$here/target/$triple/release/seed-corpus" "$here/corpus"
