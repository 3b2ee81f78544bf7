"""`train sft`'s closing line names a real loss even when no step was logged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qmd_finetune.training.cli import app

pytestmark = pytest.mark.slow


def test_fewer_steps_than_logging_steps_report_the_mean_train_loss(
    prepared: Path, sft_cli_args, tmp_path: Path
) -> None:
    out = tmp_path / "sft"
    args = [*sft_cli_args(prepared, out), "--max_steps", "1", "--logging_steps", "5", "--merge=false"]
    result = CliRunner().invoke(app, ["sft", *args])
    assert result.exit_code == 0, result.output
    summary = " ".join(result.output.split())
    assert "None" not in summary
    match = re.search(r"mean train loss ([0-9.]+) \(no per-step loss: 1 steps < logging_steps 5\)", summary)
    assert match, summary
    info = json.loads((out / "adapter" / "qmd_training.json").read_text())
    assert info["first_loss"] is None and float(match.group(1)) == pytest.approx(info["train_loss"], rel=1e-3)
