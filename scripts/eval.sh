#!/usr/bin/env bash
# Match-quality figures on the evaluation corpus beside the checkout (../shared/corpus).
# Prints one block per case set; the same numbers are quoted in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${CORPUS:-../shared/corpus}
cargo build --locked --quiet
bin=target/debug/runlink
"$bin" eval --runbooks "$corpus/runbooks" --cases "$corpus/alerts-dev.jsonl" --name "dev, with alert name"
