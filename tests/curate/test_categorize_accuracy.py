"""Categories by meaning beat keywords on hand-labelled queries (tests/data/category_eval.tsv)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qmd_finetune.curate import categorize, category_eval

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "tests" / "data" / "category_eval.tsv"
SEEDS = ROOT / "data" / "category_seeds.yaml"


def test_eval_set_is_large_covers_every_category_and_is_disjoint_from_the_seeds():
    pairs = category_eval.read_labelled(EVAL)
    tax = categorize.load_taxonomy()
    assert len(pairs) >= 200
    assert {label for _, label in pairs} == set(tax.names)
    seeds = categorize.load_seeds()
    known = {t.lower() for t in seeds.texts}
    assert not [q for q, _ in pairs if q.lower() in known]
    raw = yaml.safe_load(SEEDS.read_text())["seeds"]
    assert set(raw) == set(tax.names) - {tax.default}
    assert min(len(queries) for queries in raw.values()) >= 15


def test_embedding_reaches_85_percent_and_beats_keywords():
    results = category_eval.evaluate(EVAL, methods=("embedding", "keywords"))
    embedding, keywords = results["embedding"]["accuracy"], results["keywords"]["accuracy"]
    assert embedding >= 0.85, results["embedding"]["errors"]
    assert embedding > keywords


def test_summary_counts_recall_precision_and_confusions():
    pairs = [("a", "technology"), ("b", "technology"), ("c", "science")]
    summary = category_eval.summarize(pairs, ["technology", "science", "science"])
    assert summary["accuracy"] == round(2 / 3, 4)
    assert summary["per_category"]["technology"] == {
        "n": 2,
        "correct": 1,
        "recall": 0.5,
        "precision": 1.0,
        "confused_with": {"science": 1},
    }
    assert summary["per_category"]["science"]["precision"] == 0.5
    assert summary["errors"] == [{"query": "b", "label": "technology", "predicted": "science"}]


def test_bad_labelled_line_names_file_and_line(tmp_path):
    path = tmp_path / "eval.tsv"
    path.write_text("# comment\nquery\tcategory\nfine query\ttechnology\nno tab here\n")
    with pytest.raises(ValueError, match=r"eval.tsv:4: expected 'query<TAB>category'"):
        category_eval.read_labelled(path)
    path.write_text("query\tcategory\nx\tastrology\n")
    with pytest.raises(ValueError, match=r"eval.tsv:2: unknown category 'astrology'"):
        category_eval.read_labelled(path)


def test_leave_one_out_reports_every_setting():
    result = category_eval.leave_one_out(neighbors=(1, 7), tie_margins=(0.0,))
    assert set(result["accuracy"]) == {"neighbors=1 tie_margin=0.0", "neighbors=7 tie_margin=0.0"}
    assert result["accuracy"]["neighbors=7 tie_margin=0.0"] > result["accuracy"]["neighbors=1 tie_margin=0.0"]


def test_cascade_keeps_85_percent_and_static_vectors_alone_do_not():
    results = category_eval.evaluate(EVAL, methods=("cascade", "fast"))
    assert results["cascade"]["accuracy"] >= 0.85, results["cascade"]["errors"]
    assert results["fast"]["accuracy"] < results["cascade"]["accuracy"]


def test_cascade_margin_is_chosen_on_the_seeds():
    shipped = categorize.load_seeds().cascade_margin
    result = category_eval.cascade_leave_one_out(margins=(0.0, shipped))
    assert result["cascade_margin=0.0"]["full_model_share"] == 0.0
    chosen = result[f"cascade_margin={shipped}"]
    assert 0 < chosen["full_model_share"] < 1
    assert chosen["accuracy"] > result["cascade_margin=0.0"]["accuracy"]
    assert chosen["accuracy"] >= result["full_model"] - 0.01
