#!/usr/bin/env bash
# The main job, offline, on the embedded defaults. Writes everything under out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
export PATH="$PWD/.venv/bin:$PATH"
OUT=out/demo
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "validate the demo data (3 bad lines on purpose: they go to the ledger)"
curate validate --input data/demo.jsonl --allow-invalid --rejects "$OUT/validate.rejects.jsonl"

step "score it with the reward"
curate score --input data/demo.jsonl --output "$OUT/scored.jsonl"
