#!/usr/bin/env bash
# Runs the whole suite (slow end-to-end tests included). pytest exits 5 when it collects
# no test; that is a failure here too, with a clear message.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q -ra "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$status"
