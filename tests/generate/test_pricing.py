"""Prices of openai/ and anthropic/ models come from LiteLLM's bundled map without importing LiteLLM,
and equal what litellm.get_model_info answers for every such entry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qmd_finetune.generate import providers

REPO = Path(__file__).resolve().parents[2]


def test_bundled_prices_equal_litellm_for_every_openai_and_anthropic_entry(monkeypatch):
    import litellm

    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    prices = providers._bundled_prices()
    checked = 0
    for key, entry in prices.items():
        if not isinstance(entry, dict) or entry.get("litellm_provider") not in providers._NATIVE_PRICED:
            continue
        provider = entry["litellm_provider"]
        model = key if key.startswith(provider + "/") else f"{provider}/{key}"
        with monkeypatch.context() as patch:  # as before LiteLLM is imported: the map file itself
            patch.delitem(sys.modules, "litellm")
            mine = providers.pricing_for(model)
        assert "litellm" in sys.modules
        info = litellm.get_model_info(model)
        theirs = (
            float(info.get("input_cost_per_token") or 0.0),
            float(info.get("output_cost_per_token") or 0.0),
            info.get("cache_read_input_token_cost"),
            info.get("cache_creation_input_token_cost"),
        )
        assert (mine.input, mine.output, mine.cache_read, mine.cache_write) == theirs, model
        assert mine.known
        checked += 1
    assert checked > 100  # the map holds hundreds of OpenAI and Anthropic models


def test_a_model_not_in_the_map_is_left_to_litellm(monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.delitem(sys.modules, "litellm", raising=False)
    assert providers._bundled_price("openai/no-such-model-here") is None
    assert providers._bundled_price("ollama_chat/qwen3:1.7b") is None
    assert providers.pricing_for("openai/no-such-model-here").known is False
    assert "litellm" in sys.modules  # LiteLLM decided


def test_once_litellm_is_imported_its_answer_holds_run_time_prices():
    import litellm

    model = "openai/qmd-test-registered-model"
    litellm.register_model({model: {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                                    "litellm_provider": "openai", "mode": "chat"}})  # fmt: skip
    assert providers._bundled_price(model) is None
    price = providers.pricing_for(model)
    assert (price.input, price.output, price.known) == (1e-6, 2e-6, True)


def test_a_known_model_is_priced_without_importing_litellm():
    code = (
        "import sys\n"
        "from qmd_finetune.generate.providers import _bundled_prices, pricing_for\n"
        "name = next(k for k, e in _bundled_prices().items() if isinstance(e, dict) "
        "and e.get('litellm_provider') == 'anthropic' and e.get('input_cost_per_token'))\n"
        "price = pricing_for(name if name.startswith('anthropic/') else 'anthropic/' + name)\n"
        "print(price.known, price.input > 0, 'litellm' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "False"]
