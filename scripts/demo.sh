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

step "curate: the demo pipeline (configs/pipeline.yaml) with its HTML report"
curate run --config configs/pipeline.yaml
curate analyze --input "$OUT/curated.jsonl" --html "$OUT/analyze.html" --json "$OUT/stats.json" --targets configs/targets.yaml
curate card --input "$OUT/curated.jsonl" --output "$OUT/README.md" --split-dir "$OUT/splits"

step "generate: queries from the taxonomy, expanded offline by the embedded model (local/smollm2)"
generate queries --count 4 --seed 1 --output "$OUT/gen.queries.jsonl"
generate expand --model local/smollm2 --queries "$OUT/gen.queries.jsonl" --output "$OUT/generated.jsonl" --max-tokens 64 --no-progress

step "curate the generated records with the demo data; its plan feeds the next generate"
curate balance --input data/demo.jsonl "$OUT/generated.jsonl" --output "$OUT/with-generated.jsonl"
generate queries --from-plan "$OUT/with-generated.plan.json" --exclude "$OUT/with-generated.jsonl" --seed 1 --output "$OUT/next.queries.jsonl"

if [ "${DEMO_GEPA:-0}" = 1 ]; then
  printf '%s\n' "docker compose networking" "who is TDS motorsports" "git rebase vs merge" "React hooks tutorial" "kubernetes pod restart loop" "best pizza in Naples" > "$OUT/gepa-queries.txt"
  step "GEPA: optimize the expansion prompt for the embedded model (rubric proposer, tiny budget)"
  OMP_NUM_THREADS=1 gepa optimize --model local/smollm2 --reflection-model rubric --train "$OUT/gepa-queries.txt" --val-limit 2 --max-metric-calls 8 --minibatch-size 2 --max-tokens 64 --run-dir "$OUT/gepa-run" --save-prompt "$OUT/gepa-prompt.txt" --emit "$OUT/gepa-records.jsonl"
  step "generate with the optimized prompt (generate expand's runner)"
  OMP_NUM_THREADS=1 gepa generate --prompt "$OUT/gepa-prompt.txt" --model local/smollm2 --queries "$OUT/gepa-queries.txt" --output "$OUT/gepa-generated.jsonl" --max-tokens 64 --no-progress
fi

if [ "${DEMO_TRAIN:-0}" = 1 ]; then
  step "train (DEMO_TRAIN=1): prepare, 3 LoRA SFT steps on the embedded model, eval"
  train prepare --input data/demo.jsonl --output "$OUT/train" --val-split 0.1
  train sft --dataset "$OUT/train" --output_dir "$OUT/sft" --max_steps 3 --logging_steps 1 \
    --max_length 192 --per_device_train_batch_size 2 --torch_num_threads 1
  train eval --model "$OUT/sft/adapter" --queries configs/eval_queries.demo.txt --max-new-tokens 96 \
    --threads 1 --show 3 --output "$OUT/eval.json" --html "$OUT/eval.html"
fi

step "done"
echo "HTML report of the curation run: $OUT/curate-report.html"
echo "analysis report:                 $OUT/analyze.html"
