"""``train rft``: config validation, the keep rule, and one real round on the embedded model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from statistics import mean

import pytest
from typer.testing import CliRunner

from qmd_finetune.reward import score
from qmd_finetune.training.cli import app
from qmd_finetune.training.config import ConfigError, RFTRunConfig, load_config
from qmd_finetune.training.rft import Query, judge, judge_round, round_sft_config

QUERY = "docker compose networking"
GOLD = (
    "hyde: Docker Compose creates a default network where each service is reachable by its name.\n"
    "lex: docker compose network bridge\nlex: compose service dns names\n"
    "vec: how do containers in a docker compose project talk to each other"
)
# Scores well under the rubric but its lex lines hold no key term: the gate fails it.
OFF_TOPIC = (
    "lex: overlay bridge dns\nlex: container ports\n"
    "vec: how do containers in a compose project talk to each other\n"
    "vec: what network does docker compose create for its services"
)
# Passes the gate but scores low (its lex line echoes the query).
PLAIN = "lex: docker compose networking tutorial\nvec: docker compose networking explained"


def _query(query: str = QUERY) -> Query:
    gold_row = {"query": query, "completion": [{"role": "assistant", "content": GOLD}]}
    return Query(query, "technology", gold_row)


def _config(**values: object) -> RFTRunConfig:
    return load_config(RFTRunConfig, None, {"sft_config": None, **values})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"threshold": "120"}, "threshold"),
        ({"threshold": "-1"}, "threshold"),
        ({"rounds": "0"}, "rounds: must be positive"),
        ({"samples_per_query": "0"}, "samples_per_query"),
        ({"gold_fraction": "1.5"}, "gold_fraction"),
        ({"decoding": "greedy"}, "decoding"),
        ({"thresold": "80"}, "did you mean 'threshold'"),
    ],
)
def test_rft_config_rejects_bad_values(override: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**override)


def test_rft_cli_reports_bad_config_before_loading_weights(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["rft", "--dry-run", "--rounds", "0", "--model", str(tmp_path)])
    assert result.exit_code == 2
    assert "rounds: must be positive" in result.output


def test_rft_cli_dry_run_checks_model_and_dataset(prepared: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["rft", "--dry-run", "--model", "local/smollm2", "--dataset", str(tmp_path)])
    assert missing.exit_code == 2 and "train.jsonl not found" in missing.output
    ok = runner.invoke(app, ["rft", "--dry-run", "--model", "local/smollm2", "--dataset", str(prepared)])
    assert ok.exit_code == 0, ok.output
    assert "samples_per_query: 4" in ok.output and "sft_config: configs/sft.yaml" in ok.output


def test_rft_round_trains_from_the_merged_model_of_a_train_sft_output_dir(tmp_path: Path) -> None:
    merged = tmp_path / "sft" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    (merged / "model.safetensors").write_bytes(b"")
    config = _config(learning_rate="1e-4")
    sft = round_sft_config(config, str(tmp_path / "sft"), tmp_path / "data", tmp_path / "out")
    assert sft.model == str(merged) and sft.learning_rate == 1e-4 and sft.merge
    assert round_sft_config(config, "local/smollm2", tmp_path, tmp_path).model == "local/smollm2"


def test_rft_never_keeps_a_gate_failure_even_when_it_scores_higher() -> None:
    assert score(QUERY, OFF_TOPIC).percentage > score(QUERY, PLAIN).percentage
    outcome, kept, samples, _ = judge(_query(), [OFF_TOPIC, PLAIN], _config(threshold=0))
    assert outcome == "kept" and kept is not None and kept.text == PLAIN
    assert samples[0].gate and not samples[1].gate


def test_rft_keeps_nothing_below_threshold_or_when_all_fail_the_gate() -> None:
    plain = score(QUERY, PLAIN).percentage
    assert judge(_query(), [PLAIN], _config(threshold=plain + 0.1))[0] == "below_threshold"
    assert judge(_query(), [PLAIN], _config(threshold=plain))[0] == "kept"
    assert judge(_query(), [OFF_TOPIC, OFF_TOPIC], _config(threshold=0))[0] == "all_gate_failed"
    only = _query("auth /only:lex")  # the gate has no rule against an empty /only answer
    assert judge(only, ["no prefixed lines here"], _config(threshold=0))[0] == "no_valid_lines"


def test_rft_require_beat_gold_keeps_only_answers_above_the_gold_target() -> None:
    config = _config(threshold=0, require_beat_gold=True)
    assert judge(_query(), [PLAIN], config)[0] == "not_above_gold"
    assert judge(_query(), [PLAIN], _config(threshold=0))[0] == "kept"


def test_rft_round_counts_add_up() -> None:
    queries = [_query(), _query("docker compose volumes"), _query("auth /only:lex")]
    texts = [
        [GOLD, OFF_TOPIC],
        [OFF_TOPIC, OFF_TOPIC],
        ["lex: auth token session\nlex: login authentication", "no lines"],
    ]
    stats, kept, ledger = judge_round(queries, texts, _config(threshold=0))
    assert stats["sampled"] == 6 and stats["queries"] == 3 == len(ledger)
    assert sum(stats["outcomes"].values()) == 3 and stats["kept"] == len(kept) == stats["outcomes"]["kept"]
    assert [row["outcome"] for row in ledger] == ["kept", "all_gate_failed", "kept"]
    assert stats["gate_failures"]["lex_off_topic"] == 3
    assert stats["mean_best_reward"] == round(
        (score(QUERY, GOLD).percentage + ledger[2]["samples"][0]["percentage"]) / 2, 2
    )


@pytest.mark.slow
def test_rft_one_round_on_the_embedded_model(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "rft"
    args = [
        "rft", "--model", "local/smollm2", "--dataset", str(prepared), "--output_dir", str(out),
        "--rounds", "1", "--max_queries", "3", "--samples_per_query", "2", "--max_new_tokens", "24",
        "--batch_size", "6", "--threshold", "0", "--gold_fraction", "0.5", "--max_steps", "2",
        "--per_device_train_batch_size", "1", "--max_length", "96", "--torch_num_threads", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "rounds.json").read_text())
    (record,) = summary["rounds"]
    assert record["queries"] == 3 and record["sampled"] == 6
    assert sum(record["outcomes"].values()) == 3
    assert record["kept"] == record["outcomes"]["kept"]
    ledger = [json.loads(line) for line in (out / "round-1" / "samples.jsonl").read_text().splitlines()]
    assert len(ledger) == 3 and all(len(row["samples"]) == 2 for row in ledger)
    assert Counter(row["outcome"] for row in ledger) == Counter(
        {k: v for k, v in record["outcomes"].items() if v}
    )
    samples = [s for row in ledger for s in row["samples"]]
    assert record["mean_sample_reward"] == round(mean(s["percentage"] for s in samples), 2)
    rules = Counter(rule for s in samples for rule in {g.split(":", 1)[0] for g in s["gate"]})
    assert record["gate_failures"] == dict(rules)
    assert all(
        not s["gate"] for row in ledger if row["kept"] for s in row["samples"] if s["text"] == row["kept"]
    )
    rows = [json.loads(line) for line in (out / "round-1" / "data" / "train.jsonl").read_text().splitlines()]
    assert record["train_rows"] == len(rows) == record["kept"] + record["gold_rows"]
    assert Counter(r["origin"] for r in rows)["rft"] == record["kept"]
    assert record["gold_rows"] == round(len((prepared / "train.jsonl").read_text().splitlines()) * 0.5)
    assert record["global_step"] == 2

    from qmd_finetune.training.evaluate import generate, prompt_format
    from qmd_finetune.training.models import load

    model, tokenizer, source = load(str(out))
    assert source.kind == "merged" and Path(source.path) == out / "merged"
    (text,) = generate(model, tokenizer, ["auth"], prompt_format(source), max_new_tokens=8)
    assert isinstance(text, str)


@pytest.mark.slow
def test_sft_from_a_train_sft_output_dir_names_its_merged_model_as_base(
    trained: Path, prepared: Path, tmp_path: Path, sft_cli_args
) -> None:
    """RFT rounds and `train sft --model out/sft` start from an output dir; the merge must load."""
    out = tmp_path / "again"
    args = ["sft", *sft_cli_args(prepared, out), "--model", str(trained), "--max_steps", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((trained / "merged").resolve())
    assert (out / "merged" / "model.safetensors").is_file()
