"""Query synthesis from the taxonomy and the word lists in ``data/query_templates.yaml``.

Seeded and reproducible: the same seed, templates, plan, exclusions and ``today`` give the
same queries in the same order. Temporal queries are built from ``today`` (never a fixed year).

Slots are typed so that a template only meets words it reads naturally with: the word lists
may be grouped by type (``entities: {service: [...], language: [...]}``) and a slot may ask for
types (``{entity:service|app} pricing and plans`` never gives "TypeScript pricing and plans").
``{topic2}``/``{entity2}`` take the type of ``{topic}``/``{entity}``, and ``{problem}`` takes the
type of the template's subject, so "fix net worth controversy" cannot be built. A template
whose typed slot finds no words in a category is skipped for that category.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qmd_finetune.resources import data_path

FACETS = ("short", "temporal", "entity", "personal", "comparison", "error", "only")
# Facet names as curate/taxonomy spell them -> ours.
FACET_ALIASES = {
    "short_query": "short",
    "short": "short",
    "temporal": "temporal",
    "named_entity": "entity",
    "entity": "entity",
    "personal_notes": "personal",
    "personal": "personal",
    "comparison": "comparison",
    "comparisons": "comparison",
    "error": "error",
    "errors": "error",
    "debugging": "error",
    "only_mode": "only",
    "only": "only",
}
MAX_ATTEMPTS = 60
_SLOT_RE = re.compile(r"\{(\w+)(?::([\w|]+))?\}")
UNTYPED = "general"
# Filled first: the slots whose type the dependent slots (topic2, entity2, problem) follow.
_SUBJECT_SLOTS = ("entity", "topic", "short", "this")
_SPACE_RE = re.compile(r"\s+")


class PlanError(ValueError):
    pass


Typed = dict[str, list[str]]


@dataclass
class Category:
    name: str
    weight: float
    topics: Typed
    entities: Typed
    problems: Typed
    templates: list[str]
    facet_templates: dict[str, list[str]] = field(default_factory=dict)
    comparisons: list[tuple[str, str]] = field(default_factory=list)


def _typed(value: Any, default: list[str] | None = None) -> Typed:
    """A word list as ``{type: words}``: a plain list is one untyped group."""
    if isinstance(value, dict):
        return {str(k): [str(w) for w in (v or [])] for k, v in value.items()}
    words = [str(w) for w in (value or default or [])]
    return {UNTYPED: words} if words else {}


def _flat(typed: Typed) -> list[str]:
    return [w for words in typed.values() for w in words]


def _type_of(typed: Typed, word: str) -> str | None:
    return next((t for t, words in typed.items() if word in words), None)


@dataclass
class Templates:
    categories: dict[str, Category]
    facet_shares: dict[str, float]
    facet_templates: dict[str, list[str]]
    only_kinds: list[str]
    aliases: dict[str, str] = field(default_factory=dict)


@dataclass
class GeneratedQuery:
    query: str
    category: str
    facets: list[str]
    template: str
    slots: dict[str, str] = field(default_factory=dict)

    def to_dict(self, seed: int) -> dict[str, Any]:
        return {
            "query": self.query,
            "category": self.category,
            "facets": self.facets,
            "meta": {"source": "generate queries", "seed": seed, "template": self.template},
        }


@dataclass
class QueryReport:
    requested: Counter = field(default_factory=Counter)
    produced: Counter = field(default_factory=Counter)
    facets: Counter = field(default_factory=Counter)
    excluded_hits: int = 0
    skipped_categories: list[str] = field(default_factory=list)

    @property
    def shortfall(self) -> dict[str, int]:
        return {k: v - self.produced[k] for k, v in self.requested.items() if self.produced[k] < v}


def normalize_query(query: str) -> str:
    return _SPACE_RE.sub(" ", query.strip().lower())


def load_templates(
    templates_path: str | Path | None = None, taxonomy_path: str | Path | None = None
) -> Templates:
    """Word lists from the templates file; category names and weights from the taxonomy when present."""
    raw = yaml.safe_load(
        Path(templates_path or data_path("query_templates.yaml")).read_text(encoding="utf-8")
    )
    facets_cfg = raw.get("facets") or {}
    shares = {name: float((facets_cfg.get(name) or {}).get("share", 0.0)) for name in FACETS}
    only_kinds = list((facets_cfg.get("only") or {}).get("kinds") or ["lex", "vec", "hyde"])
    categories: dict[str, Category] = {}
    for name, cfg in (raw.get("categories") or {}).items():
        categories[name] = Category(
            name=name,
            weight=float(cfg.get("weight", 1.0)),
            topics=_typed(cfg.get("topics")),
            entities=_typed(cfg.get("entities")),
            problems=_typed(cfg.get("problems")),
            templates=list(cfg.get("templates") or ["{topic}"]),
            facet_templates={k: list(v) for k, v in (cfg.get("facet_templates") or {}).items()},
            comparisons=[(str(a), str(b)) for a, b in (cfg.get("comparisons") or [])],
        )
    templates = Templates(
        categories=categories,
        facet_shares=shares,
        facet_templates={k: list(v) for k, v in (raw.get("facet_templates") or {}).items()},
        only_kinds=only_kinds,
    )
    taxonomy_file = Path(taxonomy_path) if taxonomy_path else data_path("taxonomy.yaml")
    if taxonomy_file.exists():
        _apply_taxonomy(templates, yaml.safe_load(taxonomy_file.read_text(encoding="utf-8")) or {})
    return templates


def _apply_taxonomy(templates: Templates, taxonomy: dict[str, Any]) -> None:
    """Taxonomy weights win; taxonomy categories without word lists get a minimal entry from their examples."""
    templates.aliases = {str(k): str(v) for k, v in (taxonomy.get("aliases") or {}).items()}
    for name, cfg in (taxonomy.get("categories") or {}).items():
        cfg = cfg or {}
        weight = float(cfg.get("weight", 0.0))
        if name in templates.categories:
            templates.categories[name].weight = weight
        elif weight > 0 and cfg.get("examples"):
            examples = [str(e) for e in cfg["examples"]]
            templates.categories[name] = Category(
                name=name,
                weight=weight,
                topics={UNTYPED: examples},
                entities={},
                problems={},
                templates=["{topic}"],
            )
    for name, category in templates.categories.items():
        if name not in (taxonomy.get("categories") or {}):
            category.weight = 0.0


def temporal_slots(today: dt.date) -> dict[str, list[str]]:
    months_back = today.replace(day=1) - dt.timedelta(days=75)
    quarter = (today.month - 1) // 3 + 1
    return {
        "relative": [
            "last week",
            "this week",
            "yesterday",
            "last month",
            "this month",
            "past 30 days",
            f"since {months_back.strftime('%B')} {months_back.year}",
            f"in {today.year - 1}",
            "this year",
        ],
        "year": [str(today.year)],
        "last_year": [str(today.year - 1)],
        "month": [today.strftime("%B")],
        "quarter": [f"Q{quarter}"],
    }


def read_existing_queries(paths: list[Path]) -> set[str]:
    """Normalized queries of datasets to exclude: JSONL records (query/input) or plain text lines."""
    seen: set[str] = set()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                if text.startswith("{"):
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError:
                        continue
                    value = obj.get("query", obj.get("input")) if isinstance(obj, dict) else None
                    if isinstance(value, str):
                        seen.add(normalize_query(value))
                else:
                    seen.add(normalize_query(text))
    return seen


@dataclass
class Plan:
    categories: dict[str, int]
    facets: dict[str, int]
    unknown: list[str]
    total_needed: int


def load_plan(path: str | Path, templates: Templates) -> Plan:
    """Read a generation plan: ``{"categories": {name: n}, "facets": {name: n}, "total_needed": n}``.

    Lenient: values may be ints or objects with ``needed``/``deficit``/``count``; other keys are
    ignored; category aliases from the taxonomy are resolved; ``total_needed`` (optional) may
    exceed the category sum when a facet needs more queries than the categories do.
    """
    try:
        plan = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"cannot read plan {path}: {exc}") from exc
    if not isinstance(plan, dict):
        raise PlanError("plan must be a JSON object")
    categories: dict[str, int] = {}
    unknown: list[str] = []
    raw_categories = plan.get("categories") or plan.get("deficits") or {}
    if not isinstance(raw_categories, dict):
        raise PlanError("plan 'categories' must be an object of name -> count")
    for name, value in raw_categories.items():
        count = _plan_count(value)
        if count <= 0:
            continue
        resolved = templates.aliases.get(name, name)
        if resolved not in templates.categories:
            unknown.append(name)
            continue
        categories[resolved] = categories.get(resolved, 0) + count
    facets: dict[str, int] = {}
    raw_facets = plan.get("facets") or {}
    if isinstance(raw_facets, dict):
        for name, value in raw_facets.items():
            facet = FACET_ALIASES.get(name)
            count = _plan_count(value)
            if facet and count > 0:
                facets[facet] = facets.get(facet, 0) + count
    total = max(
        sum(categories.values()), _plan_count(plan.get("total_needed", 0)), max(facets.values(), default=0)
    )
    return Plan(categories, facets, unknown, total)


def _plan_count(value: Any) -> int:
    if isinstance(value, dict):
        for key in ("needed", "deficit", "count", "n"):
            if key in value:
                value = value[key]
                break
        else:
            return 0
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


class QueryGenerator:
    def __init__(self, templates: Templates, seed: int = 0, today: dt.date | None = None) -> None:
        self.templates = templates
        self.seed = seed
        self.rng = random.Random(seed)
        self.time_slots = temporal_slots(today or dt.date.today())

    def allocate_categories(self, count: int, categories: list[str] | None = None) -> dict[str, int]:
        """Split ``count`` over categories by weight (largest remainder, deterministic)."""
        pool = {
            name: c.weight
            for name, c in self.templates.categories.items()
            if c.weight > 0 and (not categories or name in categories)
        }
        if not pool:
            raise PlanError("no category with a positive weight to generate for")
        total = sum(pool.values())
        exact = {name: count * w / total for name, w in pool.items()}
        alloc = {name: int(v) for name, v in exact.items()}
        rest = count - sum(alloc.values())
        for name in sorted(exact, key=lambda n: (-(exact[n] - alloc[n]), n))[:rest]:
            alloc[name] += 1
        return {k: v for k, v in alloc.items() if v > 0}

    def facet_sequence(self, count: int, facet_counts: dict[str, int] | None) -> list[str | None]:
        """Facets for ``count`` queries: the plan's facet counts first, else by share; None = plain."""
        facets: list[str | None] = []
        if facet_counts:
            for name in FACETS:
                facets.extend([name] * facet_counts.get(name, 0))
            facets = facets[:count]
        else:
            for name in FACETS:
                facets.extend([name] * round(count * self.templates.facet_shares.get(name, 0.0)))
            facets = facets[:count]
        facets.extend([None] * (count - len(facets)))
        self.rng.shuffle(facets)
        return facets

    def generate(
        self,
        category_counts: dict[str, int],
        facet_counts: dict[str, int] | None = None,
        exclude: set[str] | None = None,
    ) -> tuple[list[GeneratedQuery], QueryReport]:
        exclude = set(exclude or ())
        report = QueryReport(requested=Counter(category_counts))
        slots: list[str] = [name for name in sorted(category_counts) for _ in range(category_counts[name])]
        self.rng.shuffle(slots)
        facets = self.facet_sequence(len(slots), facet_counts)
        produced: list[GeneratedQuery] = []
        for category, facet in zip(slots, facets, strict=True):
            made = self._one(self.templates.categories[category], facet, exclude, report)
            if made is None and facet is not None:
                made = self._one(self.templates.categories[category], None, exclude, report)
            if made is None:
                continue
            exclude.add(normalize_query(made.query))
            produced.append(made)
            report.produced[category] += 1
            for name in made.facets:
                report.facets[name] += 1
        return produced, report

    def _one(
        self, category: Category, facet: str | None, exclude: set[str], report: QueryReport
    ) -> GeneratedQuery | None:
        for _ in range(MAX_ATTEMPTS):
            base_facet = facet
            only_kind = None
            if facet == "only":
                # on a plain query or a short one: "/only:hyde" after "who is behind IRS" reads badly
                only_kind = self.rng.choice(self.templates.only_kinds)
                base_facet = self.rng.choice([None, "short"])
            template = self._template(category, base_facet)
            filled = self._fill(template, category)
            if filled is None:
                continue
            query, values = filled
            if only_kind:
                query = f"{query} /only:{only_kind}"
            if normalize_query(query) in exclude:
                report.excluded_hits += 1
                continue
            facets = [f for f in (base_facet, "only" if only_kind else None) if f]
            if len(query.split()) <= 2 and "short" not in facets and not only_kind:
                facets.append("short")
            return GeneratedQuery(
                query=query, category=category.name, facets=facets, template=template, slots=values
            )
        return None

    def _template(self, category: Category, facet: str | None) -> str:
        if facet is None:
            return self.rng.choice(category.templates)
        options = (
            category.facet_templates.get(facet) or self.templates.facet_templates.get(facet) or ["{topic}"]
        )
        return self.rng.choice(options)

    def _fill(self, template: str, category: Category) -> tuple[str, dict[str, str]] | None:
        values: dict[str, str] = {}
        for slot, types in _ordered_slots(template):
            if slot in values:
                continue
            pool = slot_pool(slot, types, category, values, self.time_slots)
            if not pool:
                return None
            if slot == "this":
                values["this"], values["that"] = self.rng.choice(pool).split("\t")
                continue
            values[slot] = self.rng.choice(pool)
        query = _SLOT_RE.sub(lambda m: values[m.group(1)], template)
        return _SPACE_RE.sub(" ", query).strip(), values


def _ordered_slots(template: str) -> list[tuple[str, tuple[str, ...]]]:
    """The template's slots with their types, subjects first (dependent slots follow their type)."""
    slots = [
        (m.group(1), tuple(m.group(2).split("|")) if m.group(2) else ()) for m in _SLOT_RE.finditer(template)
    ]
    return sorted(slots, key=lambda s: s[0] not in _SUBJECT_SLOTS)


def _pick(typed: Typed, types: tuple[str, ...]) -> list[str]:
    return _flat({t: w for t, w in typed.items() if not types or t in types})


def slot_pool(
    slot: str,
    types: tuple[str, ...],
    category: Category,
    taken: dict[str, str],
    time_slots: dict[str, list[str]],
) -> list[str]:
    """Every word a slot may take here; empty when the category has none of the asked types.

    ``this`` yields ``"a\tb"`` pairs from the category's ``comparisons`` (and fills ``{that}``)."""
    if slot in time_slots:
        return time_slots[slot]
    if slot == "short":
        return [
            t for t in _pick(category.topics, types) + _pick(category.entities, types) if len(t.split()) <= 2
        ]
    if slot == "this":
        return [f"{a}\t{b}" for a, b in category.comparisons]
    if slot in ("topic", "entity"):
        return _pick(category.topics if slot == "topic" else category.entities, types)
    if slot in ("topic2", "entity2"):
        typed = category.topics if slot == "topic2" else category.entities
        first = taken.get(slot[:-1])
        same = (_type_of(typed, first),) if first is not None else types
        return [w for w in _pick(typed, types or same) if w != first]
    if slot == "problem":
        if not types:
            subject = next((s for s in ("entity", "topic", "short") if s in taken), None)
            source = category.entities if subject == "entity" else category.topics
            kind = _type_of(source, taken[subject]) if subject else None
            types = (kind,) if kind else ()
        return _pick(category.problems, types) if types else []
    raise PlanError(f"unknown template slot {{{slot}}} in category {category.name}")


def possible_queries(category: Category, template: str, time_slots: dict[str, list[str]]) -> set[str]:
    """Every query ``template`` can give in ``category`` (for tests and audits of the word lists)."""
    out: set[str] = set()

    def walk(slots: list[tuple[str, tuple[str, ...]]], values: dict[str, str]) -> None:
        if not slots:
            out.add(_SPACE_RE.sub(" ", _SLOT_RE.sub(lambda m: values[m.group(1)], template)).strip())
            return
        (slot, types), rest = slots[0], slots[1:]
        if slot in values:
            walk(rest, values)
            return
        for word in slot_pool(slot, types, category, values, time_slots):
            if slot == "this":
                a, b = word.split("\t")
                walk(rest, {**values, "this": a, "that": b})
            else:
                walk(rest, {**values, slot: word})

    walk(_ordered_slots(template), {})
    return out
