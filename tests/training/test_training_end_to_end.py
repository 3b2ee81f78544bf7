"""End to end on CPU with the embedded model: prepare -> sft -> eval -> export, resume, grpo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qmd_finetune.training.cli import app

pytestmark = pytest.mark.slow
EVAL_ARGS = ["--max-new-tokens", "48", "--dtype", "fp32", "--threads", "1", "--batch-size", "3"]


def test_sft_writes_adapter_merged_and_loss(trained: Path) -> None:
    adapter = json.loads((trained / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "local/smollm2"
    assert (trained / "adapter" / "adapter_model.safetensors").is_file()
    assert (trained / "merged" / "model.safetensors").is_file()
    info = json.loads((trained / "merged" / "qmd_training.json").read_text())
    assert info["global_step"] == 2 and info["last_loss"] > 0
    assert info["prompt_format"]["template"].startswith("/no_think")


def test_eval_of_adapter_and_merged_dirs_give_the_same_scores(
    trained: Path, queries_file: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    reports = {}
    for kind in ("adapter", "merged"):
        out = tmp_path / f"{kind}.json"
        args = ["eval", "--model", str(trained / kind), "--queries", str(queries_file), "--output", str(out)]
        result = runner.invoke(app, [*args, *EVAL_ARGS, "--html", str(tmp_path / f"{kind}.html")])
        assert result.exit_code == 0, result.output
        reports[kind] = json.loads(out.read_text())
    adapter, merged = reports["adapter"], reports["merged"]
    assert adapter["loaded"].startswith("adapter") and merged["loaded"].startswith("merged")
    assert [r["output"] for r in adapter["results"]] == [r["output"] for r in merged["results"]]
    assert [r["percentage"] for r in adapter["results"]] == [r["percentage"] for r in merged["results"]]
    assert set(adapter["categories"]) == {"Technical", "Named entities"}
    assert "<table>" in (tmp_path / "merged.html").read_text()

    compared = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(trained / "merged"),
            "--queries",
            str(queries_file),
            "--compare",
            str(tmp_path / "adapter.json"),
            *EVAL_ARGS,
        ],
    )
    assert compared.exit_code == 0, compared.output
    assert "delta +0.0" in compared.output


def test_export_merges_and_writes_modelfile(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = CliRunner().invoke(
        app, ["export", "--model", str(trained / "adapter"), "--output", str(out), "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ." in modelfile and "<|im_start|>assistant" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile
    assert not (out / "adapter_config.json").exists()


def test_resume_continues_from_the_last_checkpoint(
    trained: Path, prepared: Path, sft_cli_args, tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(trained / "checkpoints", out / "checkpoints")
    args = ["sft", *sft_cli_args(prepared, out), "--max_steps", "3", "--merge", "false", "--resume"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "adapter" / "qmd_training.json").read_text())
    assert info["global_step"] == 3
    assert not (out / "merged").exists()


def test_resume_without_checkpoint_fails(prepared: Path, sft_cli_args, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sft", *sft_cli_args(prepared, tmp_path), "--resume"])
    assert result.exit_code == 1
    assert "no checkpoint" in result.output


def test_grpo_runs_a_couple_of_steps_from_the_sft_model(
    trained: Path, prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "grpo"
    args = [
        "grpo", "--model", str(trained / "merged"), "--dataset", str(prepared), "--output_dir", str(out),
        "--max_steps", "2", "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--max_completion_length", "32", "--torch_num_threads", "1", "--merge", "false",
        "--health_check_steps", "0",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "reward" in result.output
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((trained / "merged").resolve())
    history = json.loads((out / "train_log.json").read_text())
    assert any("reward" in h for h in history)


def test_grpo_stops_with_a_message_when_most_completions_are_clipped(
    trained: Path, prepared: Path, tmp_path: Path
) -> None:
    out = tmp_path / "grpo"
    args = [
        "grpo", "--model", str(trained / "merged"), "--dataset", str(prepared), "--output_dir", str(out),
        "--max_steps", "5", "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--max_completion_length", "4", "--torch_num_threads", "1", "--health_check_steps", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "GRPO stopped after 1 steps" in result.output
    assert "cut at max_completion_length=4" in result.output
    assert "below the p99 target length" in result.output
    assert not (out / "adapter").exists()


def test_grpo_refuses_an_adapter_as_its_start(trained: Path, prepared: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "grpo",
            "--model",
            str(trained / "adapter"),
            "--dataset",
            str(prepared),
            "--output_dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1
    assert "LoRA adapter" in result.output and "merged" in result.output


def test_full_fine_tuning_with_packing_writes_only_a_merged_model_that_eval_loads(
    prepared: Path, tmp_path: Path, sft_cli_args
) -> None:
    out = tmp_path / "full"
    args = [
        "sft",
        *sft_cli_args(prepared, out),
        "--max_steps",
        "1",
        "--finetune",
        "full",
        "--packing",
        "true",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fully fine-tuned model written" in result.output
    assert (out / "merged" / "model.safetensors").is_file() and not (out / "adapter").exists()
    info = json.loads((out / "merged" / "qmd_training.json").read_text())
    assert info["config"]["finetune"] == "full" and info["config"]["packing"] is True
    queries = tmp_path / "q.txt"
    queries.write_text("docker compose networking\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", "--model", str(out), "--queries", str(queries), *EVAL_ARGS])
    assert result.exit_code == 0, result.output
    assert "merged" in result.output
