from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from _curate_fixtures import REFERENCE, frame, good

from qmd_finetune.curate import leakage
from qmd_finetune.curate.stage import REASON

EVAL = ["docker compose networking", "who is TDS motorsports", "auth"]


def test_eval_file_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "eval.txt"
    path.write_text("# comment\n\ndocker compose networking\n  # indented comment\nauth\n")
    assert leakage.read_eval_queries(path) == ["docker compose networking", "auth"]


def test_exact_leak_ignores_case_punctuation_spacing_and_only_mode() -> None:
    data = frame(
        [good("Docker  Compose networking?"), good("who is TDS motorsports /only:lex"), good("tide tables")]
    )
    result = leakage.run(data, eval_queries=EVAL)
    leaks = result.kept.get_column("leak").to_list()
    assert leaks == ["exact: docker compose networking", "exact: who is TDS motorsports", None]
    assert result.report["exact"] == 2 and result.report["near"] == 0


def test_near_leak_by_character_ngrams() -> None:
    data = frame([good("docker compose network"), good("docker swarm secrets")])
    result = leakage.run(data, eval_queries=EVAL, threshold=0.7)
    leaks = result.kept.get_column("leak").to_list()
    assert leaks[0].startswith("near") and leaks[0].endswith("docker compose networking")
    assert leaks[1] is None


def test_short_queries_that_only_share_a_prefix_are_not_leaks() -> None:
    data = frame([good("author"), good("authentication"), good("oauth")])
    result = leakage.run(data, eval_queries=EVAL)
    assert result.kept.get_column("leak").null_count() == 3


def test_drop_leaks_rejects_only_train_rows() -> None:
    data = frame([good("docker compose networking"), good("auth"), good("tide tables")]).with_columns(
        pl.Series("split", ["train", "test", "train"])
    )
    result = leakage.run(data, eval_queries=EVAL, drop_leaks=True)
    assert result.rejected.get_column("query").to_list() == ["docker compose networking"]
    assert result.rejected.get_column(REASON).to_list() == ["eval leak (exact)"]
    assert result.report["by_split"] == {"train": 1, "test": 1}
    assert data.height == result.kept.height + result.rejected.height


def test_without_drop_leaks_nothing_is_rejected() -> None:
    result = leakage.run(frame([good("auth")]), eval_queries=EVAL)
    assert result.rejected.height == 0 and result.counts["leak_exact"] == 1


def test_missing_eval_queries_is_an_error() -> None:
    with pytest.raises(ValueError):
        leakage.run(frame([good("auth")]))


@pytest.mark.skipif(not (REFERENCE / "eval_queries.txt").exists(), reason="reference data not present")
def test_reference_eval_file_finds_its_queries_in_the_reference_data() -> None:
    from qmd_finetune.io import read_records

    data = read_records([REFERENCE / "qmd_expansion_handcrafted.jsonl"]).frame
    result = leakage.run(data, eval_queries=REFERENCE / "eval_queries.txt")
    assert result.report["eval_queries"] > 20
    assert result.report["exact"] >= 1
