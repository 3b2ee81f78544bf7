"""categorize: taxonomy keywords/patterns with a reason per row, aliases, facets."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from qmd_finetune.curate import categorize, normalize
from qmd_finetune.io import read_records, records_to_frame
from qmd_finetune.reward import extract_entities

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qmd-reference"


def rec(query: str, category: str | None = None, lex: str = "placeholder words") -> dict:
    record = {"query": query, "output": [["lex", lex], ["vec", "a plain rephrasing of the question"]]}
    if category is not None:
        record["category"] = category
    return record


def run(records: list[dict], **options) -> pl.DataFrame:
    frame = records_to_frame(records)
    result = categorize.run(frame, **options)
    assert result.kept.height == frame.height and result.rejected.height == 0
    return result.kept


def test_taxonomy_weights_sum_to_one_and_categories_have_keywords():
    tax = categorize.load_taxonomy()
    assert abs(sum(tax.weights().values()) - 1.0) < 1e-9
    assert all(c.keywords for c in tax.categories if c.name != tax.default)
    assert set(tax.facets) == set(categorize.FACET_NAMES)


def test_keyword_assignment_is_explained():
    row = run([rec("kubernetes ingress")]).row(0, named=True)
    assert row["category"] == "technology"
    assert row["category_reason"] == "keyword 'kubernetes' -> technology"


def test_keywords_match_whole_words_only():
    # "start" holds "art", "cheat" holds "tea": neither counts
    row = run([rec("how to start a small business")]).row(0, named=True)
    assert row["category"] == "finance_business"
    assert "'art'" not in row["category_reason"]


def test_most_hits_win_and_patterns_are_named():
    kept = run([rec("causes of the cold war"), rec("kubernetes helm chart with terraform")])
    assert kept["category"].to_list() == ["history", "technology"]
    assert "pattern '(?i)\\bcauses of\\b'" in kept["category_reason"][0]
    assert kept["category_reason"][1].startswith("keywords 'kubernetes', 'helm', 'terraform'")


def test_ties_go_to_the_category_listed_first(tmp_path):
    path = tmp_path / "taxonomy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "default": "other",
                "categories": {
                    "first": {"weight": 0.5, "keywords": ["alpha"]},
                    "second": {"weight": 0.5, "keywords": ["beta"]},
                    "other": {"weight": 0.0},
                },
            }
        )
    )
    kept = run([rec("beta alpha"), rec("beta")], taxonomy=path)
    assert kept["category"].to_list() == ["first", "second"]


def test_existing_category_kept_mapped_by_alias_or_replaced():
    records = [
        rec("docker compose", "food_cooking"),
        rec("immunology", "medicine"),
        rec("kubernetes ingress", "diverse_addon"),
        rec("docker compose", "my_label"),
    ]
    kept = run(records)
    assert kept["category"].to_list() == ["food_cooking", "health_wellness", "technology", "my_label"]
    assert kept["category_reason"].to_list() == [
        "kept existing category",
        "kept existing 'medicine' (alias of health_wellness)",
        "keyword 'kubernetes' -> technology",
        "kept existing category (not in the taxonomy)",
    ]
    again = run(records, recategorize=True)
    assert again["category"].to_list()[:1] == ["technology"]


def test_output_lines_are_the_fallback_then_the_default():
    kept = run([rec("deconstruction", lex="derrida philosophy texts"), rec("zxq plover")])
    assert kept["category"].to_list() == ["philosophy", "general"]
    assert kept["category_reason"].to_list() == [
        "from lex/vec lines: keyword 'philosophy' -> philosophy",
        "no keyword or pattern matched -> general",
    ]
    assert (
        run([rec("deconstruction", lex="derrida philosophy texts")], use_output=False)["category"][0]
        == "general"
    )


def test_facets():
    kept = run(
        [
            rec("auth"),
            rec("what changed in Docker 2025"),
            rec("ssh keys /only:lex"),
            rec("my meeting notes about the roadmap"),
            rec("how do plants grow"),
        ]
    )
    assert kept["facets"].to_list() == [
        ["short_query"],
        ["temporal", "named_entity"],
        ["short_query", "only_mode"],
        ["personal_notes"],
        [],
    ]


QUERIES = [
    "who is TDS motorsports",
    "Next.js app router",
    "c++ templates",
    "how to use useEffect",
    "python decorators",
    "the Roman Empire",
    "I am here",
    "what is AWS",
    "A",
    "email me@example.com",
    "(Paris) trip",
    "what is the Ming dynasty?",
]


@pytest.mark.parametrize("query", QUERIES)
def test_named_entity_facet_matches_the_reward(query):
    # The facet vectorizes rubric v1's entity rules.
    row = run([rec(query)]).row(0, named=True)
    assert ("named_entity" in row["facets"]) == bool(extract_entities(query, rubric="v1"))


def test_bad_taxonomy_fails_fast(tmp_path):
    path = tmp_path / "taxonomy.yaml"
    path.write_text(yaml.safe_dump({"categories": {"a": {"weight": 1, "patterns": ["(unclosed"]}}}))
    with pytest.raises(ValueError, match="bad pattern"):
        categorize.load_taxonomy(path)
    path.write_text(yaml.safe_dump({"categories": {"a": {"weight": 1}}, "aliases": {"x": "nope"}}))
    with pytest.raises(ValueError, match="unknown category"):
        categorize.load_taxonomy(path)


def test_explain_one_query():
    explained = categorize.explain("python decorators tutorial")
    assert explained == {
        "query": "python decorators tutorial",
        "category": "technology",
        "reason": "keyword 'python' -> technology",
        "facets": [],
    }


def test_rerun_replaces_reason_and_facets():
    once = run([rec("docker compose")])
    twice = categorize.run(once, recategorize=True).kept
    assert twice.columns == once.columns
    assert twice["category_reason"].to_list() == once["category_reason"].to_list()


@pytest.mark.skipif(not REFERENCE.exists(), reason="needs ../shared/data/qmd-reference")
def test_reference_data_every_row_has_a_category_and_reason():
    frame = normalize.run(read_records(sorted(REFERENCE.glob("*.jsonl"))).frame).kept
    result = categorize.run(frame)
    kept = result.kept
    assert kept["category"].null_count() == 0 and kept["category_reason"].null_count() == 0
    assert set(kept["category"].unique()) <= set(categorize.load_taxonomy().names)
    assert "diverse_addon" not in kept["category"].to_list()
    base = kept["query"].str.replace(r"\s+/only:(lex|vec|hyde)$", "").to_list()
    facet_entity = ["named_entity" in f for f in kept["facets"].to_list()]
    assert facet_entity == [bool(extract_entities(q, rubric="v1")) for q in base]
    assert result.counts["facet:only_mode"] > 300
