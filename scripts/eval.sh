#!/usr/bin/env bash
# Match-quality figures on the evaluation corpora beside the checkout: one runbook per file
# (../shared/corpus, or $CORPUS) and runbooks that are sections of big pages
# (../shared/corpus-sections, or $CORPUS_SECTIONS). Prints one block per case set, the text
# sets also on words alone (without the embedding model) to compare; docs/matching.md
# quotes these numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${CORPUS:-../shared/corpus}
sections=${CORPUS_SECTIONS:-../shared/corpus-sections}
cargo build --locked --quiet
run() { target/debug/runlink eval --runbooks "$corpus/runbooks" "$@"; }
run --cases "$corpus/alerts-dev.jsonl" --name "alerts-dev, with alert name"
run --cases "$corpus/alerts-dev.jsonl" --drop-alertname --name "alerts-dev, alert name dropped"
run --cases "$corpus/alerts-dev.jsonl" --drop-alertname --no-semantic --name "alerts-dev, alert name dropped, words alone"
run --cases "$corpus/alerts-awesome.jsonl" --drop-alertname --name "alerts-awesome, alert name dropped"
run --cases "$corpus/alerts-awesome.jsonl" --drop-alertname --no-semantic --name "alerts-awesome, alert name dropped, words alone"
run --cases "$corpus/alerts-norunbook-dev.jsonl" --name "alerts-norunbook-dev (near misses, not clean negatives)"
if [ -d "$sections/runbooks" ]; then
  run_sections() { target/debug/runlink eval --runbooks "$sections/runbooks" "$@"; }
  run_sections --cases "$sections/alerts.jsonl" --name "sections, with alert name"
  run_sections --cases "$sections/alerts.jsonl" --drop-alertname --name "sections, alert name dropped"
  run_sections --cases "$sections/alerts.jsonl" --drop-alertname --no-semantic --name "sections, alert name dropped, words alone"
fi
