"""CLI validation: bad combinations fail with exit code 2 and a clear message before any model call."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from qmd_finetune.gepa.cli import app
from qmd_finetune.gepa.program import prompt_sha

runner = CliRunner()


@pytest.fixture
def base(chat_server, query_file, tmp_path):
    def make(*extra: str, model: str = "openai/fake-expander") -> list[str]:
        return [
            "optimize", "--model", model, "--api-base", chat_server.api_base, "--reflection-model", "rubric",
            "--train", str(query_file), "--save-prompt", str(tmp_path / "p.txt"), "--run-dir", str(tmp_path / "run"),
            *extra,
        ]  # fmt: skip

    return make


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--auto", "light", "--max-metric-calls", "5"), "given: --auto, --max-metric-calls"),
        (("--max-full-evals", "2", "--max-metric-calls", "5"), "give one budget"),
        (("--auto", "extreme"), "--auto must be one of light, medium, heavy"),
        (("--max-metric-calls", "0"), "--max-metric-calls must be at least 1"),
        (("--auto", "light", "--val", "missing.txt"), "--val: missing.txt: no such file"),
        (("--auto", "light", "--seed-prompt", "nope.txt"), "--seed-prompt: nope.txt: no such file"),
        (("--auto", "light", "--save-program", "prog.pkl.txt"), "--save-program must end in .json"),
        (("--auto", "light", "--temperature", "3"), "--temperature must be between 0 and 2"),
    ],
)
def test_bad_options_fail_before_any_model_call(base, chat_server, extra, message):
    result = runner.invoke(app, base(*extra))
    assert result.exit_code == 2
    assert message in result.output
    assert chat_server.requests == []


@pytest.mark.parametrize(
    ("api_base", "message"),
    [
        ("ftp://user:hunter2@example.com/v1", "--api-base: the API base must be an http:// or https:// URL"),
        (
            "http://user:hunter2@example.com:port/v1",
            "--api-base: the API base URL has a port that is not a number",
        ),
    ],
)
def test_a_bad_api_base_is_rejected_without_echoing_it(query_file, tmp_path, api_base, message):
    args = ["optimize", "--model", "openai/m", "--api-base", api_base, "--train", str(query_file)]
    result = runner.invoke(app, [*args, "--save-prompt", str(tmp_path / "p.txt"), "--auto", "light"])
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert "hunter2" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("model", "reflection", "message"),
    [
        ("bogus/model", "rubric", "--model: unknown provider 'bogus'"),
        ("local/gpt2", "rubric", "unknown local model 'local/gpt2'"),
        ("rubric", "rubric", "--model: 'rubric' is only a reflection model"),
        ("openai/fake", "nope/x", "--reflection-model: unknown provider 'nope'"),
        ("gpt-nonexistent-9", "rubric", "--model: unknown model 'gpt-nonexistent-9'"),
    ],
)
def test_unknown_providers_and_models_are_rejected(query_file, tmp_path, model, reflection, message):
    args = ["optimize", "--model", model, "--reflection-model", reflection, "--train", str(query_file)]
    args += ["--save-prompt", str(tmp_path / "p.txt"), "--auto", "light"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output


def test_missing_train_file_and_every_problem_is_listed_at_once(tmp_path):
    args = [
        "optimize",
        "--model",
        "bogus/x",
        "--reflection-model",
        "rubric",
        "--train",
        str(tmp_path / "none.txt"),
    ]
    result = runner.invoke(app, [*args, "--save-prompt", str(tmp_path / "p.txt"), "--auto", "x"])
    assert result.exit_code == 2
    assert (
        "no such file" in result.output
        and "unknown provider" in result.output
        and "--auto must be one of" in result.output
    )


def test_empty_or_tiny_train_files_are_reported(base, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n")
    args = base("--auto", "light")
    args[args.index("--train") + 1] = str(empty)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "no queries" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "ok"}\n{"nope": 1}\n')
    args[args.index("--train") + 1] = str(bad)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "bad.jsonl:2: no query string" in result.output


def test_run_dir_of_another_run_is_refused(base, chat_server, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    identity = {"model": "openai/other-model", "train": ["x"], "val": ["y"]}
    (run_dir / "run.json").write_text(json.dumps({"identity": identity}))
    result = runner.invoke(app, base("--auto", "light"))
    assert result.exit_code == 2
    assert "belongs to a run with different model" in result.output
    assert chat_server.requests == []


def test_gepa_generate_reuses_generate_expand(chat_server, query_file, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Expand the search query into hyde, lex and vec lines.\n")
    output = tmp_path / "out.jsonl"
    args = [
        "generate",
        "--prompt",
        str(prompt),
        "--model",
        "openai/fake-expander",
        "--queries",
        str(query_file),
    ]
    args += [
        "--output",
        str(output),
        "--api-base",
        chat_server.api_base,
        "--no-progress",
        "--temperature",
        "0",
        "--no-quality-gate",  # the fake model echoes the query; this test is about the pass-through
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 8
    assert {r["meta"]["prompt_sha"] for r in records} == {prompt_sha(prompt.read_text())}
    assert chat_server.requests[0]["messages"][0]["content"] == prompt.read_text().strip()
    missing = runner.invoke(app, ["generate", "--prompt", "nope.txt", "--model", "local/smollm2"] + args[5:9])
    assert missing.exit_code == 2 and "--prompt: nope.txt: no such file" in missing.output
