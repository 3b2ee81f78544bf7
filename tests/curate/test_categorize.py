"""categorize: categories by meaning (MiniLM + seeds) or keywords, a reason per row, aliases, facets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    row = run([rec("kubernetes ingress")], method="keywords").row(0, named=True)
    assert row["category"] == "technology"
    assert row["category_reason"] == "keyword 'kubernetes' -> technology"


def test_keywords_match_whole_words_only():
    # "start" holds "art", "cheat" holds "tea": neither counts
    row = run([rec("how to start a small business")], method="keywords").row(0, named=True)
    assert row["category"] == "finance_business"
    assert "'art'" not in row["category_reason"]


def test_most_hits_win_and_patterns_are_named():
    kept = run(
        [rec("causes of the cold war"), rec("kubernetes helm chart with terraform")], method="keywords"
    )
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
    kept = run([rec("beta alpha"), rec("beta")], taxonomy=path, method="keywords")
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
    reasons = kept["category_reason"].to_list()
    assert reasons[:2] == ["kept existing category", "kept existing 'medicine' (alias of health_wellness)"]
    assert reasons[2].startswith("nearest technology examples ") and reasons[2].endswith(" -> technology")
    assert reasons[3] == "kept existing category (not in the taxonomy)"
    again = run(records, recategorize=True)
    assert again["category"].to_list()[:1] == ["technology"]


def test_keywords_method_falls_back_to_output_lines_then_the_default():
    kept = run([rec("deconstruction", lex="derrida philosophy texts"), rec("zxq plover")], method="keywords")
    assert kept["category"].to_list() == ["philosophy", "general"]
    assert kept["category_reason"].to_list() == [
        "from lex/vec lines: keyword 'philosophy' -> philosophy",
        "no keyword or pattern matched -> general",
    ]
    assert (
        run([rec("deconstruction", lex="derrida philosophy texts")], use_output=False, method="keywords")[
            "category"
        ][0]
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


def test_explain_one_query_names_the_nearest_seed_queries():
    explained = categorize.explain("python virtualenv setup")
    assert explained["category"] == "technology"
    assert explained["reason"].startswith("nearest technology examples '")
    neighbors = explained["neighbors"]
    assert len(neighbors) == 5 and neighbors[0]["category"] == "technology"
    similarities = [n["similarity"] for n in neighbors]
    assert similarities == sorted(similarities, reverse=True) and 0 < similarities[0] <= 1
    assert f"'{neighbors[0]['example']}' {neighbors[0]['similarity']:.2f}" in explained["reason"]


def test_explain_with_keywords_has_no_neighbors():
    explained = categorize.explain("python decorators tutorial", method="keywords")
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


@pytest.mark.slow
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


@pytest.mark.parametrize(
    ("query", "category"),
    [
        ("UFC fighter rankings", "sports_fitness"),
        ("wedding photography package", "lifestyle_relationships"),
        ("tmux split pane shortcut", "technology"),
        ("mac address vs ip address", "technology"),
    ],
)
def test_issue_hard_cases_are_categorized_by_meaning(query, category):
    # keywords put these in education_learning ("class"), technology ("package") and general
    row = run([rec(query)], recategorize=True).row(0, named=True)
    assert row["category"] == category, row["category_reason"]


def write_seeds(tmp_path: Path, **settings) -> Path:
    raw = yaml.safe_load((Path(categorize.__file__).parents[2] / "data" / "category_seeds.yaml").read_text())
    raw["settings"] = {**raw["settings"], **settings}
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_keywords_only_break_near_ties(tmp_path):
    query = "python snake habitat"  # nearest seeds are science; keyword 'python' says technology
    strict = run([rec(query)], seeds=write_seeds(tmp_path, tie_margin=0.0)).row(0, named=True)
    assert strict["category"] != "technology" and "near tie" not in strict["category_reason"]
    loose = run([rec(query)], seeds=write_seeds(tmp_path, tie_margin=1.0)).row(0, named=True)
    assert loose["category"] == "technology"
    assert loose["category_reason"].startswith("keyword 'python' breaks a near tie (technology ")


def test_weak_query_takes_its_lex_vec_lines_when_they_are_not_weak():
    lines = {"lex": "sourdough starter feeding", "vec": "how often should I feed my sourdough starter"}
    records = [
        {"query": "I am here", "output": [[kind, text] for kind, text in lines.items()]},
        rec("I am here", lex="zzz"),
    ]
    kept = run(records, min_similarity=0.25)
    first, second = kept.row(0, named=True), kept.row(1, named=True)
    assert first["category"] == "food_cooking"
    assert first["category_reason"].startswith("from lex/vec lines: nearest food_cooking examples ")
    # lines as weak as the query: the query's own (weak) best category stays, never the default
    assert "under min_similarity 0.25" in second["category_reason"]
    alone = run(records[1:], min_similarity=0.25, use_output=False).row(0, named=True)
    assert second["category"] == alone["category"] != "general"


def test_identical_queries_get_one_assignment():
    kept = run([rec("sourdough starter feeding"), rec("sourdough starter feeding /only:lex")])
    assert kept["category"].to_list() == ["food_cooking", "food_cooking"]
    assert kept["category_reason"][0] == kept["category_reason"][1]


def test_seed_embeddings_are_cached_on_disk_by_seed_content(tmp_path, monkeypatch):
    monkeypatch.setenv("QMD_FINETUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(categorize, "_SEED_VECTORS", {})
    encoder = categorize.load_encoder()
    seeds = categorize.load_seeds()
    first = categorize.seed_vectors(seeds, encoder)
    files = list((tmp_path / "cache" / "categorize").glob("seeds-*.npy"))
    assert [f.name for f in files] == [f"seeds-{seeds.digest(encoder.identity)}.npy"]
    monkeypatch.setattr(categorize, "_SEED_VECTORS", {})
    assert np.array_equal(categorize.seed_vectors(seeds, encoder), first)
    fewer = categorize.Seeds(**{**seeds.__dict__, "texts": seeds.texts[:-1], "labels": seeds.labels[:-1]})
    assert fewer.digest(encoder.identity) != seeds.digest(encoder.identity)


def test_unknown_seed_category_or_method_fails_clearly(tmp_path):
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump({"seeds": {"astrology": ["my horoscope"]}}))
    with pytest.raises(ValueError, match=r"seeds.yaml: seed category 'astrology' is not in the taxonomy"):
        categorize.load_seeds(path)
    with pytest.raises(ValueError, match="unknown categorize method 'magic'"):
        run([rec("x")], method="magic")


def test_fast_method_uses_static_vectors_and_says_so():
    result = categorize.run(records_to_frame([rec("sourdough starter feeding")]), method="fast")
    row = result.kept.row(0, named=True)
    assert row["category"] == "food_cooking"
    assert f"examples ({categorize.FAST_MARKER}) '" in row["category_reason"]
    assert result.counts["by_static_vectors"] == 1


def test_cascade_sends_unsure_rows_to_the_full_model(tmp_path):
    queries = [rec(q) for q in ("sourdough starter feeding", "tmux split pane shortcut", "mozart childhood")]
    frame = records_to_frame(queries)
    never = categorize.run(frame, method="cascade", seeds=write_seeds(tmp_path, cascade_margin=0.0))
    assert never.counts["by_static_vectors"] == 3
    always = categorize.run(frame, method="cascade", seeds=write_seeds(tmp_path, cascade_margin=9.0))
    full = categorize.run(frame, method="embedding").kept["category_reason"].to_list()
    keywords = categorize.run(frame, method="keywords").kept["category"].to_list()
    for reason, category, full_reason, keyword in zip(
        always.kept["category_reason"], always.kept["category"], full, keywords
    ):
        if categorize.FAST_MARKER in reason:  # sure without the margin only when the keyword rule agrees
            assert keyword == category
        else:
            assert reason == full_reason
    assert always.counts["by_static_vectors"] < 3


def test_static_vector_of_a_text_does_not_depend_on_its_batch():
    from qmd_finetune.curate.static_encoder import load_static_encoder

    static = load_static_encoder()
    alone = static.encode(["vim delete all lines"])
    batched = static.encode(["a much longer query about kubernetes ingress tls", "vim delete all lines", ""])
    assert np.array_equal(alone[0], batched[1])
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_static_table_is_cached_on_disk_by_model_and_method():
    from qmd_finetune.curate import static_encoder

    static = static_encoder.load_static_encoder()
    path = static_encoder.table_path(categorize.load_encoder())
    assert static_encoder.METHOD in path.name and static.identity in path.name
    assert np.array_equal(np.load(path), static.table)
