"""`generate expand --model local/...` does not import LiteLLM: the embedded provider calls the engine itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CODE = """
import sys
from qmd_finetune.generate.providers import ProviderConfig, make_provider, pricing_for
provider = make_provider(ProviderConfig(model="local/smollm2"), 64)
pricing_for("local/smollm2")
print(type(provider).__name__, "litellm" in sys.modules)
"""


def test_the_embedded_provider_is_made_without_importing_litellm():
    done = subprocess.run(
        [sys.executable, "-c", CODE], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["LocalProvider", "False"]
