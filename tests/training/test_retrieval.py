"""Retrieval eval: qmd's fusion, the metrics, the BEIR reader, the known-item builder, and an
end-to-end run on a small collection with fixed answers checked against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmd_finetune.records import Record
from qmd_finetune.training import retrieval as rt

# ---------------------------------------------------------------- fusion and metrics


def test_rrf_weights_and_top_rank_bonus_follow_qmd() -> None:
    # Docs a..e = 0..4. Lists L1 = L2 = [a, b, c, d] with weight 2, L3 = [e] with weight 1.
    #   a: 2/61 + 2/61 + 0.05 (best rank 0)  = 0.1156
    #   b: 2/62 + 2/62 + 0.02 (best rank 1)  = 0.0845
    #   c: 2/63 + 2/63 + 0.02 (best rank 2)  = 0.0835
    #   e: 1/61        + 0.05 (best rank 0)  = 0.0664
    #   d: 2/64 + 2/64 (best rank 3, no bonus) = 0.0625
    # Without the bonus e (0.0164) would come last; with it, e passes d.
    assert rt.rrf([[0, 1, 2, 3], [0, 1, 2, 3], [4]], [2.0, 2.0, 1.0]) == [0, 1, 2, 4, 3]


def test_rrf_ties_keep_first_appearance_order() -> None:
    # x and y each sit at rank 0 of one list with the same weight: equal scores.
    assert rt.rrf([[7], [8]], [1.0, 1.0]) == [7, 8]
    assert rt.rrf([[8], [7]], [1.0, 1.0]) == [8, 7]


def test_rrf_of_no_lists_is_empty() -> None:
    assert rt.rrf([], []) == []


def test_metrics_count_relevant_documents_in_the_cutoffs() -> None:
    # Ranked [3, 1, 2, ...], relevant {1, 4}: none at rank 1, doc 1 at rank 2, doc 4 never.
    scores = rt.metrics([3, 1, 2], {1, 4})
    assert scores == {"recall@1": 0.0, "recall@5": 0.5, "recall@10": 0.5, "mrr@10": 0.5}
    # A relevant document first found at rank 11 is outside MRR@10.
    assert rt.metrics(list(range(20, 30)) + [5], {5})["mrr@10"] == 0.0


# ---------------------------------------------------------------- BEIR reader


def write_beir(root: Path, corpus: list, queries: list, qrels: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (root / name).write_text(
            "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
        )
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


GOOD_CORPUS = [{"_id": "d1", "title": "Bread", "text": "Knead the dough."}, {"_id": "d2", "text": "Planets."}]
GOOD_QUERIES = [{"_id": "q1", "text": "bread"}, {"_id": "q2", "text": "planets"}]


def test_beir_reader_reads_title_text_and_positive_qrels(tmp_path: Path) -> None:
    root = write_beir(
        tmp_path / "c", GOOD_CORPUS, GOOD_QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t0\n"
    )
    collection = rt.read_beir(root)
    assert collection.doc_texts == ["Bread\nKnead the dough.", "Planets."]
    # q2's only judgement has score 0: not relevant, so q2 is left out and counted.
    assert collection.query_ids == ["q1"] and collection.qrels == {"q1": {"d1"}}
    assert collection.counts["queries_without_relevant"] == 1


@pytest.mark.parametrize(
    ("corpus", "queries", "qrels", "message"),
    [
        (
            ['{"_id": "d1", "text": "a"}', "{not json"],
            GOOD_QUERIES,
            "q1\td1\t1\n",
            "corpus.jsonl:2: not JSON",
        ),
        ([{"text": "no id"}], GOOD_QUERIES, "q1\td1\t1\n", "corpus.jsonl:1: missing or empty '_id'"),
        (
            GOOD_CORPUS + [{"_id": "d1", "text": "again"}],
            GOOD_QUERIES,
            "q1\td1\t1\n",
            "corpus.jsonl:3: duplicate _id 'd1'",
        ),
        ([{"_id": "d1", "text": ""}], GOOD_QUERIES, "q1\td1\t1\n", "corpus.jsonl:1: missing or empty 'text'"),
        (GOOD_CORPUS, [{"_id": "q1", "text": 5}], "q1\td1\t1\n", "queries.jsonl:1: 'text' must be a string"),
        (GOOD_CORPUS, GOOD_QUERIES, "q1\td1\n", "test.tsv:1: expected 3 tab-separated columns"),
        (GOOD_CORPUS, GOOD_QUERIES, "q1\td1\thigh\n", "test.tsv:1: score 'high' is not an integer"),
        (GOOD_CORPUS, GOOD_QUERIES, "q1\td1\t1\nq9\td1\t1\n", "test.tsv:2: unknown query id 'q9'"),
        (GOOD_CORPUS, GOOD_QUERIES, "q1\td7\t1\n", "test.tsv:1: unknown corpus id 'd7'"),
        (GOOD_CORPUS, GOOD_QUERIES, "q1\td1\t0\n", "no query has a relevant document"),
    ],
)
def test_beir_reader_errors_name_file_and_line(
    tmp_path: Path, corpus: list, queries: list, qrels: str, message: str
) -> None:
    root = write_beir(tmp_path / "c", corpus, queries, qrels)
    with pytest.raises(rt.CollectionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rt.read_beir(root)


def test_beir_reader_names_a_missing_file(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "c", GOOD_CORPUS, GOOD_QUERIES, "q1\td1\t1\n")
    (root / "qrels" / "test.tsv").unlink()
    with pytest.raises(rt.CollectionError, match=r"qrels/test.tsv: no such file"):
        rt.read_beir(root)


# ---------------------------------------------------------------- known-item collection


def rec(query: str, hyde: str | None, vec: str = "a vec line", split: str | None = None) -> Record:
    output = [("lex", "some words"), ("vec", vec)] + ([("hyde", hyde)] if hyde else [])
    return Record(query=query, output=output, extra={"split": split} if split else {})


def test_known_item_collection_holds_out_records_and_drops_ambiguous_distractors() -> None:
    records = [
        rec("How to bake bread", "Knead, rise, bake."),  # 0 held out -> query r0, doc r0
        rec("no passage here", None),  # 1 held out, no hyde -> skipped
        rec("bake bread /only:hyde", "Only-mode passage."),  # 2 held out, only-mode -> skipped
        rec("how to  BAKE bread", "Another bread answer."),  # 3 distractor, same query as r0 -> dropped
        rec("jupiter size", "Jupiter is the largest planet."),  # 4 distractor -> doc r4
        rec(
            "jupiter facts", "Jupiter is the largest planet.", vec="other"
        ),  # 5 distractor, r4's hyde -> dropped
    ]
    held = [True, True, True, False, False, False]
    collection = rt.known_item_collection(records, held)
    assert collection.query_ids == ["r0"] and collection.queries == ["How to bake bread"]
    assert collection.doc_ids == ["r0", "r4"]
    assert collection.doc_texts[0] == "Knead, rise, bake.\na vec line"
    assert collection.qrels == {"r0": {"r0"}}
    assert collection.gold["r0"].startswith("hyde: Knead, rise, bake.")
    counts = collection.counts
    assert (counts["no_hyde"], counts["held_out_only_mode"], counts["distractor_same_query"]) == (1, 1, 1)
    assert counts["duplicate_passage"] == 1 and counts["documents"] == 2 and counts["queries"] == 1


def test_records_file_holds_out_its_test_split(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    rows = [rec("q one", "Passage one.", split="train"), rec("q two", "Passage two.", split="test")]
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows), encoding="utf-8")
    collection = rt.load_collection(path)
    assert collection.queries == ["q two"] and len(collection.doc_ids) == 2


def test_records_file_with_a_bad_row_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(rec("q", "P.").to_dict()) + "\n{broken\n", encoding="utf-8")
    with pytest.raises(rt.CollectionError, match=r"records.jsonl:2: "):
        rt.load_collection(path)


# ---------------------------------------------------------------- end to end, hand-computed

DOCS = {
    "d1": "Sourdough bread needs a starter of flour and water, fed daily, and a long cold proof "
    "before baking in a hot dutch oven.",
    "d2": "Baking yeast bread: knead the dough, let it rise for an hour, shape the loaf and bake it.",
    "d3": "Jupiter is the largest planet in the solar system, a gas giant with the Great Red Spot "
    "storm and dozens of moons.",
    "d4": "Saturn's rings are made of ice and rock particles orbiting the gas giant planet.",
    "d5": "To file a tax return, gather your W-2 forms, report income and deductions, and submit "
    "before the April deadline.",
    "d6": "Capital gains tax applies when you sell stocks for a profit; long-term holdings are taxed "
    "at a lower rate.",
}
QUERIES = {"q1": "sourdough starter", "q2": "largest planet", "q3": "tax filing deadline"}
QRELS = "q1\td1\t1\nq2\td3\t1\nq3\td5\t1\nq3\td6\t1\n"
ANSWERS = [
    # q1: every line points at d1 (its hyde is d1's own text).
    f"lex: sourdough starter flour\nvec: how to make a sourdough starter for bread\nhyde: {DOCS['d1']}",
    # q2: the lex line and the hyde (d4's own text) point at the wrong planet doc, d4.
    f"lex: saturn rings ice\nhyde: {DOCS['d4']}",
    # q3: no usable lines at all.
    "I cannot help with that.",
]


@pytest.fixture(scope="module")
def small_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("beir")
    corpus = [{"_id": k, "text": v} for k, v in DOCS.items()]
    queries = [{"_id": k, "text": v} for k, v in QUERIES.items()]
    collection = rt.read_beir(write_beir(root / "c", corpus, queries, QRELS))
    return rt.evaluate_answers(collection, ANSWERS, cache_dir=root / "cache")


def test_eval_metrics_match_the_hand_computation(small_report: dict) -> None:
    # Rankings (BM25 keeps only documents sharing a stemmed, non-stop word with the text):
    #   q1 "sourdough starter"   BM25 [d1]; dense d1 first; lex [d1]; vec d1 first; hyde = d1 -> d1 first.
    #      d1 is at rank 0 of every list, so every family puts it first: all metrics 1 for q1.
    #   q2 "largest planet" (rel d3)  BM25 [d3, d4]; dense d3 first.
    #      lex  = rrf([d3, d4] w2, [d4] w1): d3 = 2/61 + .05 = .0828; d4 = 2/62 + 1/61 + .05 = .0987
    #             -> d4, d3: R@1 0, R@5 1, MRR 1/2.
    #      vec  = no vec lines -> the query's dense list: d3 first.
    #      hyde = d4's own text -> d4 (cosine 1), then d3 (the other gas giant): R@1 0, MRR 1/2.
    #      hybrid: d3 = 2/61 + 2/61 + 1/62 + .05 = .1317; d4 = 2/62 + 1/61 + 2/(61+r) + 1/61 + .05
    #             >= .1150 + 2/81 > .1317 for any dense rank r < 20 -> d4, d3: R@1 0, MRR 1/2.
    #   q3 "tax filing deadline" (rel d5, d6)  BM25 [d5, d6]; dense d5, d6 first; no lines.
    #      Each family is the query alone: one of two relevant at rank 1 -> R@1 1/2, R@5 1, MRR 1;
    #      hyde has no list -> all 0.
    # Means over the three queries:
    expected = {
        "query_bm25": (5 / 6, 1, 1, 1),
        "query_dense": (5 / 6, 1, 1, 1),
        "query": (5 / 6, 1, 1, 1),
        "lex": ((1 + 0 + 0.5) / 3, 1, 1, (1 + 0.5 + 1) / 3),
        "vec": (5 / 6, 1, 1, 1),
        "hyde": (1 / 3, 2 / 3, 2 / 3, (1 + 0.5 + 0) / 3),
        "hybrid": ((1 + 0 + 0.5) / 3, 1, 1, (1 + 0.5 + 1) / 3),
    }
    for name, values in expected.items():
        got = small_report["metrics"][name]
        assert (got["recall@1"], got["recall@5"], got["recall@10"], got["mrr@10"]) == pytest.approx(
            values, abs=1e-4
        ), name


def test_eval_reports_lines_and_top_documents_per_query(small_report: dict) -> None:
    first, second, third = small_report["results"]
    assert first["lines"] == {"lex": 1, "vec": 1, "hyde": 1}
    assert second["hybrid_top"][:2] == ["d4", "d3"]
    assert third["lines"] == {"lex": 0, "vec": 0, "hyde": 0}


def test_corpus_embeddings_are_cached_by_corpus_and_model(tmp_path: Path) -> None:
    texts = list(DOCS.values())
    first = rt.Searcher(texts, tmp_path)
    again = rt.Searcher(texts, tmp_path)
    other = rt.Searcher(texts[:3], tmp_path)
    assert (first.cache_hit, again.cache_hit, other.cache_hit) == (False, True, False)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    assert (again.doc_vectors == first.doc_vectors).all()


# ---------------------------------------------------------------- train eval --retrieval


def test_eval_retrieval_bad_collection_fails_with_file_and_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from qmd_finetune.training.cli import app

    root = write_beir(tmp_path / "c", ['{"_id": "d1", "text": "a"}', "{oops"], GOOD_QUERIES, "q1\td1\t1\n")
    result = CliRunner().invoke(app, ["eval", "--model", "local/smollm2", "--retrieval", str(root)])
    assert result.exit_code == 2
    assert f"--retrieval: {root / 'corpus.jsonl'}:2: not JSON" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_eval_needs_exactly_one_of_queries_and_retrieval(tmp_path: Path, queries_file: Path) -> None:
    from typer.testing import CliRunner

    from qmd_finetune.training.cli import app

    root = write_beir(tmp_path / "c", GOOD_CORPUS, GOOD_QUERIES, "q1\td1\t1\n")
    for args in ([], ["--queries", str(queries_file), "--retrieval", str(root)]):
        result = CliRunner().invoke(app, ["eval", "--model", "local/smollm2", *args])
        assert result.exit_code == 2
        assert "give --queries or --retrieval (exactly one)" in result.output


@pytest.mark.slow
def test_eval_retrieval_generates_answers_and_reports_rubric_and_retrieval(
    tmp_path: Path, records_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from qmd_finetune.training.cli import app

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "report.json"
    args = [
        "eval",
        "--model",
        "local/smollm2",
        "--retrieval",
        str(records_file),
        "--limit",
        "2",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "48", "--dtype", "fp32", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == 2 and len(report["results"]) == 2
    retrieval = report["retrieval"]
    assert retrieval["queries"] == 2 and set(retrieval["metrics"]) == set(rt.LISTS)
    assert all(0 <= m["mrr@10"] <= 1 for m in retrieval["metrics"].values())
    assert "hybrid" in result.output and "R@10" in result.output
    assert list((tmp_path / "cache" / "qmd-finetune" / "embeddings").glob("*.npy"))


def test_held_out_split_keeps_every_copy_of_a_query_on_one_side() -> None:
    queries = [f"query number {i}" for i in range(400)]
    records = [rec(q, "P.") for q in queries] + [rec(q.upper() + " /only:lex", "P.") for q in queries]
    held = rt.held_out_by_query(records, fraction=0.1, seed=3)
    assert held[:400] == held[400:]
    assert 20 <= sum(held[:400]) <= 60  # about 10% of 400
    assert rt.held_out_by_query(records, fraction=0.1, seed=3) == held
    assert rt.held_out_by_query(records, fraction=0.1, seed=4) != held
