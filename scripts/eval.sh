#!/usr/bin/env bash
# Match-quality figures on the evaluation corpus beside the checkout (../shared/corpus,
# or $CORPUS). Prints one block per case set; docs/matching.md quotes these numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${CORPUS:-../shared/corpus}
cargo build --locked --quiet
run() { target/debug/runlink eval --runbooks "$corpus/runbooks" "$@"; }
run --cases "$corpus/alerts-dev.jsonl" --name "alerts-dev, with alert name"
run --cases "$corpus/alerts-dev.jsonl" --drop-alertname --name "alerts-dev, alert name dropped"
run --cases "$corpus/alerts-awesome.jsonl" --drop-alertname --name "alerts-awesome, alert name dropped"
run --cases "$corpus/alerts-norunbook-dev.jsonl" --name "alerts-norunbook-dev (near misses, not clean negatives)"
