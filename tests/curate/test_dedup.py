"""dedup: exact (score decides conflicts), near (MinHash/LSH), semantic (slow), duplicate items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from qmd_finetune.curate import dedup, normalize
from qmd_finetune.io import read_records, records_to_frame

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qmd-reference"


def good(query: str) -> dict:
    return {
        "query": query,
        "output": [
            ["hyde", f"A short practical passage that explains {query} with one concrete worked example."],
            ["lex", f"{query} reference manual"],
            ["lex", f"{query} common examples list"],
            ["vec", f"how does {query} work in practice for most people"],
        ],
    }


def weak(query: str) -> dict:
    return {"query": query, "output": [["lex", query], ["vec", query]]}


def run(records: list[dict], **options) -> dedup.StageResult:
    frame = records_to_frame(records, source="mem.jsonl")
    result = dedup.run(frame, **options)
    assert result.kept.height + result.rejected.height == frame.height
    return result


def test_case_and_whitespace_duplicates_keep_the_first_and_name_it():
    result = run([good("Docker Compose networking"), good("docker  compose networking?"), good("git rebase")])
    assert result.kept["query"].to_list() == ["Docker Compose networking", "git rebase"]
    assert result.rejected["_reason"].to_list() == ["duplicate of mem.jsonl:1"]
    assert result.counts["exact_duplicates"] == 0  # outputs differ (the query is inside them) ...
    assert result.counts["conflicts_resolved"] == 1  # ... so the score decided, and tied: first wins


def test_identical_records_are_exact_duplicates():
    result = run([good("git rebase"), good("git rebase"), good("git rebase")])
    assert result.kept["_line"].to_list() == [1]
    assert result.counts["exact_duplicates"] == 2
    assert result.rejected["_reason"].to_list() == ["duplicate of mem.jsonl:1"] * 2


def test_conflicting_outputs_keep_the_best_scoring_record():
    result = run([weak("auth config"), good("auth config"), weak("AUTH config")])
    assert result.kept["_line"].to_list() == [2]
    assert result.rejected["_reason"].to_list() == ["duplicate of mem.jsonl:2"] * 2
    assert result.counts["conflicts_resolved"] == 2


def test_an_existing_score_column_is_used_and_keep_first_ignores_scores():
    frame = records_to_frame([good("auth config"), weak("auth config")], source="mem.jsonl")
    frame = frame.with_columns(pl.Series("score", [10.0, 90.0]))
    assert dedup.run(frame).kept["_line"].to_list() == [2]
    assert dedup.run(frame, keep="first").kept["_line"].to_list() == [1]


def test_only_mode_suffix_is_part_of_the_key():
    records = [
        good("ssh keys /only:lex"),
        good("ssh keys /only:vec"),
        good("ssh keys"),
        good("SSH keys /only:lex"),
    ]
    result = run(records)
    assert sorted(result.kept["query"].str.to_lowercase().to_list()) == [
        "ssh keys",
        "ssh keys /only:lex",
        "ssh keys /only:vec",
    ]


def test_duplicate_items_inside_a_record_are_removed_and_counted():
    record = {"query": "auth", "output": [["lex", "auth file"], ["lex", "Auth File"], ["vec", "auth file"]]}
    result = run([record])
    assert result.kept["output"].to_list() == [[["lex", "auth file"], ["vec", "auth file"]]]
    assert result.counts["duplicate_items_removed"] == 1
    assert result.counts["rows_with_duplicate_items"] == 1


def test_near_duplicate_queries_keep_the_highest_score():
    records = [
        weak("how to potty train a toddler"),
        good("how to potty-train a toddler"),
        good("python async await"),
    ]
    result = run(records, near_keep="score")
    assert result.kept["query"].to_list() == ["how to potty-train a toddler", "python async await"]
    assert result.rejected["_reason"].to_list() == ["near duplicate of mem.jsonl:2"]
    assert result.counts["near_clusters"] == 1
    cluster = [c for c in result.report["clusters"] if c["kind"] == "near"][0]
    assert cluster["size"] == 2 and cluster["kept"] == "how to potty-train a toddler"


def test_near_duplicates_keep_the_most_common_spelling_by_default():
    records = [
        good("how to potty train a todler"),
        good("how to potty train a toddler"),
        good("How to potty train a toddler"),
    ]
    result = run(records)
    assert result.kept["_line"].to_list() == [2]
    assert sorted(result.rejected["_reason"].to_list()) == [
        "duplicate of mem.jsonl:2",
        "near duplicate of mem.jsonl:2",
    ]


def test_distinct_short_queries_are_not_near_duplicates():
    queries = [
        "python async await",
        "rust async await",
        "auth config",
        "auth configs ui",
        "git rebase",
        "git merge",
        "what is the role of clergy in christianity",
        "what is the role of prophets in christianity",
    ]
    result = run([good(q) for q in queries])
    assert result.kept.height == len(queries)


def test_near_threshold_and_near_off():
    records = [good("how to potty train a toddler"), good("how to potty train a todler")]
    assert run(records, near_threshold=0.99).kept.height == 2
    assert run(records, near=False).kept.height == 2
    assert run(records, near_threshold=0.5).kept.height == 1


def test_near_action_group_keeps_both_in_one_dup_group():
    records = [good("how to potty train a toddler"), good("how to potty-train a toddler"), good("git rebase")]
    result = run(records, near_action="group")
    assert result.kept.height == 3
    groups = result.kept["dup_group"].to_list()
    assert groups[0] == groups[1] != groups[2]


def test_minhash_estimates_character_ngram_jaccard():
    pairs = [
        ("docker compose networking", "docker-compose networking"),
        ("how to potty train a toddler", "how to potty train toddlers"),
        ("python async await", "rust async await"),
        ("auth config", "sourdough starter"),
    ]

    def jaccard(a: str, b: str, n: int = 3) -> float:
        grams = lambda s: {f" {s} "[i : i + n] for i in range(len(s) + 3 - n)}  # noqa: E731
        return len(grams(a) & grams(b)) / len(grams(a) | grams(b))

    texts = [f" {t} " for pair in pairs for t in pair]
    signatures = dedup.minhash_signatures(texts, ngram=3, num_perm=256, seed=3)
    for i, (a, b) in enumerate(pairs):
        estimate = (signatures[2 * i] == signatures[2 * i + 1]).mean()
        assert abs(estimate - jaccard(a, b)) < 0.12, (a, b, estimate, jaccard(a, b))
    assert (
        dedup.minhash_signatures(["same text", "same text"])[0] == dedup.minhash_signatures(["same text"])[0]
    ).all()


def test_near_duplicate_labels_cluster_only_within_a_group():
    texts = ["ssh key authentication", "ssh key authentication", "ssh key authentications"]
    labels, _ = dedup.near_duplicate_labels(texts, groups=np.array([1, 2, 2]))
    assert labels[0] != labels[1] and labels[1] == labels[2]


def test_rejected_rows_point_at_the_final_survivor():
    # line 2 loses to line 1 exactly; line 1 then loses to line 3 as a near duplicate
    records = [
        weak("how to potty train a toddler"),
        weak("How to potty train a toddler"),
        good("how to potty-train a toddler"),
    ]
    result = run(records, near_keep="score")
    assert result.kept["_line"].to_list() == [3]
    assert set(result.rejected["_reason"].str.extract(r"(mem\.jsonl:\d+)").to_list()) == {"mem.jsonl:3"}


def test_bad_options_fail_fast():
    frame = records_to_frame([good("a")])
    with pytest.raises(ValueError):
        dedup.run(frame, keep="best")
    with pytest.raises(ValueError):
        dedup.run(frame, near_action="drop")
    with pytest.raises(ValueError):
        dedup.run(frame, near_keep="longest")
    with pytest.raises(ValueError):
        dedup.run(frame, near_threshold=1.5)


def test_empty_frame():
    result = dedup.run(records_to_frame([]))
    assert result.kept.height == 0 and result.rejected.height == 0 and "dup_group" in result.kept.columns


@pytest.mark.skipif(not REFERENCE.exists(), reason="needs ../shared/data/qmd-reference")
def test_reference_data_has_no_duplicate_queries_left():
    frame = normalize.run(read_records(sorted(REFERENCE.glob("*.jsonl"))).frame).kept
    result = dedup.run(frame, workers=1)
    assert result.kept.height + result.rejected.height == frame.height
    keys = result.kept.select(dedup.query_key(pl.col("query")))
    assert keys.n_unique() == result.kept.height
    assert result.counts["exact_duplicates"] > 400  # diverse_addon/handcrafted rows repeated inside v2
    assert result.counts["conflicts_resolved"] > 0  # v2's case-only duplicates with different outputs


@pytest.mark.slow
def test_semantic_dedup_with_the_embedded_minilm_model():
    queries = [
        "cheap flights to paris",
        "inexpensive airfare to paris",
        "car insurance quotes",
        "sourdough starter",
    ]
    result = run([good(q) for q in queries], near=False, semantic=True, semantic_threshold=0.88)
    assert result.kept["query"].to_list() == [
        "cheap flights to paris",
        "car insurance quotes",
        "sourdough starter",
    ]
    assert result.rejected["_reason"].to_list() == ["semantic duplicate of mem.jsonl:1"]
    assert result.counts["semantic_clusters"] == 1


def test_outputs_differing_only_in_case_are_not_a_conflict():
    upper = {
        "query": "Git Rebase",
        "output": [["lex", "GIT REBASE onto main"], ["vec", "how to rebase a branch"]],
    }
    lower = {
        "query": "git rebase",
        "output": [["lex", "git rebase onto main"], ["vec", "how to rebase a branch"]],
    }
    result = run([upper, lower])
    assert result.kept["_line"].to_list() == [1]
    assert result.counts["exact_duplicates"] == 1 and result.counts["conflicts_resolved"] == 0


# ---------------------------------------------------------------- ordered near dedup

PAIRS = Path(__file__).resolve().parents[1] / "data" / "near_dup_pairs.tsv"


def merged(a: str, b: str, **options) -> bool:
    return run([good(a), good(b)], **options).kept.height == 1


def test_word_order_that_changes_meaning_keeps_queries_apart():
    for a, b in [
        ("test mock", "mock test"),
        ("python list to dict", "python dict to list"),
        ("flights paris to london", "flights london to paris"),
    ]:
        assert not merged(a, b), (a, b)
    assert merged("test mock", "mock test", near_method="jaccard")  # the old, order-blind match


def test_case_spacing_punctuation_typo_and_plural_variants_still_merge():
    for a, b in [
        ("Docker-Compose Netwroking", "docker compose networking"),
        ("dockercompose networking", "docker compose networking"),
        ("sourdough starter feedign", "sourdough starter feeding"),
        ("auth configs", "auth config"),
        ("how to fix leaky faucet", "how to fix a leaky faucet"),
        ("mother's day gift ideas", "mothers day gift ideas"),
    ]:
        assert merged(a, b), (a, b)


def test_a_reordering_that_keeps_a_phrase_whole_or_swaps_the_sides_of_vs_merges():
    assert merged("docker compose networking", "networking docker compose")
    assert merged("coffee grinder burr vs blade", "coffee grinder blade vs burr")
    assert not merged("translate english to spanish", "translate spanish to english")


def test_numbers_known_words_and_other_words_are_not_typos():
    for a, b in [
        ("docker changelog 2025", "docker changelog 2026"),
        ("how to install python on windows", "how to uninstall python on windows"),
        ("bread recipe with yeast", "bread recipe without yeast"),
        ("cat toys for kids", "car toys for kids"),
    ]:
        assert not merged(a, b), (a, b)
    assert not dedup.is_typo("form", "from")  # two known words
    assert dedup.is_typo("pyhton", "python")


def test_one_edit_is_optimal_string_alignment_distance_one():
    assert dedup.one_edit("todler", "toddler") and dedup.one_edit("feedign", "feeding")
    assert dedup.one_edit("cat", "car") and dedup.one_edit("mat", "matt")
    assert not dedup.one_edit("with", "without") and not dedup.one_edit("same", "same")
    assert not dedup.one_edit("abcd", "badc")


def test_near_tokens_drop_articles_and_stem_plurals_on_both_sides():
    tokens = dedup.near_tokens(pl.Series(["The berries' boxes", "a berry box", "class status"]))
    assert tokens.to_list() == [["berry", "box"], ["berry", "box"], ["class", "status"]]


def labelled_pairs() -> list[tuple[bool, str, str, str]]:
    rows = [line.split("\t") for line in PAIRS.read_text(encoding="utf-8").splitlines()[1:] if line]
    return [(label == "dup", kind, a, b) for label, kind, a, b in rows]


def precision_recall(method: str) -> tuple[float, float]:
    tp = fp = fn = 0
    for duplicate, _, a, b in labelled_pairs():
        found = merged(a, b, near_method=method)
        tp += found and duplicate
        fp += found and not duplicate
        fn += duplicate and not found
    return tp / (tp + fp), tp / (tp + fn)


def test_labelled_pairs_precision_and_recall_at_the_default_threshold():
    """Measured on tests/data/near_dup_pairs.tsv (161 pairs, 88 duplicates): ordered 1.000 /
    0.932 (82 of 88), jaccard 0.775 / 0.784. See docs/curate-stages.md."""
    assert len(labelled_pairs()) >= 100
    precision, recall = precision_recall("ordered")
    assert precision >= 1.0 and recall >= 82 / 88
    old_precision, old_recall = precision_recall("jaccard")
    assert precision > old_precision and recall > old_recall


def test_near_method_is_checked():
    with pytest.raises(ValueError, match="near_method"):
        dedup.run(records_to_frame([good("a")]), near_method="words")
