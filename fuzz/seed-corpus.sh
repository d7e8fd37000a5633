#!/bin/sh
# Copies the valid example descriptors into the fuzzing corpus.
# Run from anywhere; the corpus is fuzz/corpus/descriptor.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$here/corpus/descriptor"
cp "$here"/../descriptor/tests/data/valid/*.xml "$here/corpus/descriptor/"
ls "$here/corpus/descriptor" | wc -l | xargs printf '%s seed files in fuzz/corpus/descriptor\n'
