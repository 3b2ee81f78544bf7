"""Query synthesis: reproducible, taxonomy-weighted, facets, exclusions, plans."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from conftest import invoke

from qmd_finetune.generate import queries as q
from qmd_finetune.records import only_mode


def _generate(seed: int, count: int = 200, exclude: set[str] | None = None, today: dt.date | None = None):
    tpl = q.load_templates()
    gen = q.QueryGenerator(tpl, seed=seed, today=today or dt.date(2031, 5, 2))
    return gen.generate(gen.allocate_categories(count), None, exclude)


def test_same_seed_gives_same_queries_and_other_seed_differs():
    a, _ = _generate(7)
    b, _ = _generate(7)
    c, _ = _generate(8)
    assert [x.query for x in a] == [x.query for x in b]
    assert [x.query for x in a] != [x.query for x in c]


def test_queries_are_unique_and_categories_follow_taxonomy_weights():
    made, report = _generate(1, count=300)
    norm = [q.normalize_query(x.query) for x in made]
    assert len(norm) == len(set(norm))
    assert report.produced["technology"] > report.produced["philosophy"]
    assert "general" not in report.produced  # weight 0 in the taxonomy


def test_every_facet_appears_and_is_well_formed():
    made, report = _generate(3, count=300)
    assert set(report.facets) >= set(q.FACETS)
    for item in made:
        base, kind = only_mode(item.query)
        if "only" in item.facets:
            assert kind in {"lex", "vec", "hyde"}
        else:
            assert kind is None
        if item.facets == ["short"] or (item.facets and item.facets[0] == "short"):
            assert len(base.split()) <= 2


def test_temporal_queries_follow_today_not_a_fixed_year():
    made, _ = _generate(5, count=400, today=dt.date(2031, 5, 2))
    temporal = [x.query for x in made if "temporal" in x.facets]
    assert temporal
    years = {int(y) for t in temporal for y in re.findall(r"\b(20\d\d)\b", t)}
    assert years <= {2030, 2031}


def test_exclude_file_is_never_emitted(tmp_path: Path):
    first, _ = _generate(11, count=100)
    existing = tmp_path / "existing.jsonl"
    existing.write_text(
        "".join(json.dumps({"query": x.query.upper(), "output": [["lex", "x"]]}) + "\n" for x in first[:50])
    )
    excluded = q.read_existing_queries([existing])
    again, report = _generate(11, count=100, exclude=excluded)
    assert not {q.normalize_query(x.query) for x in again} & excluded
    assert report.excluded_hits > 0


def test_from_plan_resolves_aliases_facets_and_ignores_extra_keys(tmp_path: Path):
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "categories": {"tech": 6, "history": {"needed": 4}, "no_such_category": 3, "science": 0},
                "facets": {"short_query": 2, "named_entity": 2, "only_mode": 1},
                "generated_by": "curate balance",
                "total": 10,
            }
        )
    )
    out = tmp_path / "q.jsonl"
    result = invoke(
        ["queries", "--from-plan", str(plan), "--output", str(out), "--seed", "2", "--today", "2031-05-02"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    cats = [r["category"] for r in rows]
    assert cats.count("technology") == 6 and cats.count("history") == 4 and len(rows) == 10
    facets = [f for r in rows for f in r["facets"]]
    assert facets.count("only") == 1 and facets.count("entity") >= 2


def test_cli_writes_plain_text_when_asked(tmp_path: Path):
    out = tmp_path / "q.txt"
    result = invoke(["queries", "--count", "12", "--output", str(out), "--category", "technology"])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 12 and not any(line.startswith("{") for line in lines)


def test_plan_total_needed_above_the_category_sum_is_spread_by_weight(tmp_path: Path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"categories": {"history": 2}, "facets": {"temporal": 9}, "total_needed": 9}))
    out = tmp_path / "q.jsonl"
    result = invoke(["queries", "--from-plan", str(plan), "--output", str(out), "--today", "2031-05-02"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 9 and sum(r["category"] == "history" for r in rows) >= 2
    assert sum("temporal" in r["facets"] for r in rows) >= 8


def _all_possible_queries() -> set[str]:
    tpl = q.load_templates()
    slots = q.temporal_slots(dt.date(2026, 12, 2))
    out: set[str] = set()
    for category in tpl.categories.values():
        if category.weight <= 0:
            continue
        templates = list(category.templates)
        for facet in q.FACETS:
            templates += category.facet_templates.get(facet) or tpl.facet_templates.get(facet) or []
        for template in templates:
            out |= {x.lower() for x in q.possible_queries(category, template, slots)}
    return out


def test_typed_slots_cannot_build_the_issue_nonsense():
    possible = _all_possible_queries()
    assert "typescript alternatives" in possible and "stripe pricing and plans" in possible
    nonsense = [
        "fix net worth controversy",
        "fix math homework help too slow",
        "plate tectonics calculation wrong",
        "typescript pricing and plans",
        "tomato plants q4 2026",
        "who is behind irs",
        "history of jazz history",
        "configure terraform state in grafana",
        "yosemite passport expired",
        "tour de france vs wimbledon",
        "early life",
    ]
    assert [n for n in nonsense if n in possible] == []


def test_pricing_and_problem_slots_follow_their_types():
    tpl = q.load_templates()
    made, _ = _generate(4, count=600)
    for item in made:
        category = tpl.categories[item.category]
        if "pricing and plans" in item.template:
            types = {t for t, words in category.entities.items() if item.slots["entity"] in words}
            assert types <= {"app", "service", "vendor"}, item.query
        if "problem" in item.slots and item.template == "{topic} {problem}":
            topic_type = next(t for t, w in category.topics.items() if item.slots["topic"] in w)
            assert item.slots["problem"] in category.problems[topic_type], item.query


def test_only_mode_goes_on_plain_or_short_queries():
    made, _ = _generate(9, count=400)
    only = [x for x in made if "only" in x.facets]
    assert only
    assert not [x.query for x in only if "who is behind" in x.query or "pricing" in x.query]
