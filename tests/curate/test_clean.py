"""clean: rules as data, flags with reasons, optional fixes; rows in == kept + rejected."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from qmd_finetune import quality
from qmd_finetune.curate import clean, normalize
from qmd_finetune.io import read_records, records_to_frame
from qmd_finetune.resources import data_path

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qmd-reference"
HYDE = "A practical passage of about one sentence that answers the question with detail."


def record(query: str, *items: tuple[str, str]) -> dict:
    return {"query": query, "output": [list(item) for item in items]}


def full(query: str, hyde: str = HYDE, lex: tuple[str, ...] = (), vec: tuple[str, ...] = ()) -> dict:
    lex = lex or (f"{query} configuration settings", f"{query} common mistakes")
    vec = vec or (f"how do people usually approach {query} in practice",)
    return record(query, ("hyde", hyde), *[("lex", x) for x in lex], *[("vec", x) for x in vec])


def run(records: list[dict], **options) -> clean.StageResult:
    """The stage with junk flagged, not rejected (the rule tests read flags); defaults are tested below."""
    options.setdefault("keep_flagged", True)
    frame = records_to_frame(records)
    result = clean.run(frame, **options)
    assert result.kept.height + result.rejected.height == frame.height
    return result


def flags_of(records: list[dict], **options) -> list[list[str]]:
    return run(records, **options).kept["flags"].to_list()


# ---------------------------------------------------------------- rules file


def test_rules_file_has_at_least_24_everyday_sense_terms_and_valid_actions():
    rules = clean.load_rules()
    assert len(rules.terms) >= 24
    assert {"gem", "yarn", "liquid", "container", "branch", "decorator", "hang"} <= {
        t.term for t in rules.terms
    }
    assert set(rules.rules) == set(clean.RULE_NAMES)


def test_a_fix_action_on_a_rule_without_a_fix_fails_before_any_data(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": {"missing_kinds": {"action": "fix"}}}))
    with pytest.raises(ValueError, match="has no fix"):
        clean.load_rules(path)
    with pytest.raises(ValueError, match="unknown clean rule"):
        clean.run(records_to_frame([full("q")]), actions={"nope": "flag"})
    with pytest.raises(ValueError, match="action must be"):
        clean.run(records_to_frame([full("q")]), actions={"echo": "delete"})


def test_word_pattern_matches_whole_words_and_symbol_terms():
    pattern = clean.word_pattern(["decor", "hang", "c++", "next.js", "working tree"])
    texts = pl.Series(
        ["python decorators", "change it", "home decor", "c++ templates", "next.js app", "working  tree"]
    )
    assert texts.str.contains(pattern).to_list() == [False, False, True, True, True, True]


# ---------------------------------------------------------------- everyday sense


def test_yarn_read_as_wool_in_a_javascript_query_is_flagged():
    bad = full(
        "yarn workspaces setup", hyde="Yarn is spun wool used for knitting sweaters and scarves at home."
    )
    good = full(
        "yarn workspaces setup", hyde="Yarn workspaces link several packages of one monorepo together."
    )
    assert flags_of([bad])[0] == ["everyday_sense:yarn"]
    assert flags_of([good])[0] == []


def test_python_decorators_does_not_match_decor():
    query = "python decorators"
    record_ = full(
        query,
        hyde="Python decorators wrap a function to add behaviour without editing the function body.",
        lex=("python decorator syntax", "functools wraps decorators"),
        vec=("how do decorators work in python functions",),
    )
    assert flags_of([record_])[0] == []
    misread = full(query, hyde="Interior decor with bold wallpaper and vintage furniture brightens any room.")
    assert flags_of([misread])[0] == ["everyday_sense:decorator"]


def test_change_does_not_match_hang():
    # "change" holds "hang", and the outputs talk about hanging pictures: still no flag.
    record_ = full(
        "change app icon",
        hyde="Hang the picture frame on a wall hook, then change the icon in the app settings.",
    )
    assert flags_of([record_])[0] == []
    hangs = full(
        "app hangs on startup",
        hyde="Hang a picture frame on the wall with a nail and a small hook for support.",
    )
    assert flags_of([hangs])[0] == ["everyday_sense:hang"]


def test_everyday_words_need_a_technical_query_and_exceptions_are_ignored():
    knitting = full(
        "yarn for knitting a sweater",
        hyde="Choose soft merino wool yarn for a warm knitted sweater this winter.",
    )
    working_tree = full(
        "git branch cleanup", hyde="Delete merged branches; your working tree stays clean and the repo tidy."
    )
    bark = full(
        "git branch cleanup", hyde="Trim each tree branch above a bud so new leaves grow and the bark heals."
    )
    assert flags_of([knitting, working_tree, bark]) == [[], [], ["everyday_sense:branch"]]


@pytest.mark.parametrize(
    ("query", "negated", "everyday"),
    [
        ("rust borrow checker", "rust ownership -corrosion -oxidation", "rust corrosion oxidation remover"),
        ("java spring boot jvm", "java jvm tuning -coffee -island", "java coffee island beans"),
        ("pandas dataframe groupby", "pandas groupby -animal -bear", "pandas bear bamboo"),
    ],
)
def test_a_negated_lex_term_excludes_the_everyday_sense(query, negated, everyday):
    vec = (f"how do I use {query} well in a real project",)
    excluded = full(
        query,
        hyde="A technical passage about the topic.",
        lex=(negated, f"{query.split()[1]} internals"),
        vec=vec,
    )
    misread = full(
        query,
        hyde="A technical passage about the topic.",
        lex=(everyday, f"{query.split()[1]} internals"),
        vec=vec,
    )
    flags = flags_of(
        [excluded, misread], actions={"boilerplate": "off", "hyde_length": "off", "lex_longer": "off"}
    )
    assert flags[0] == []
    assert flags[1] == [f"everyday_sense:{query.split()[0]}"]


def test_quoted_phrases_match_as_phrases_and_negated_phrases_are_removed_whole():
    def row(line: str) -> dict:
        return full("ruby gem bundler", hyde="Bundler resolves gem versions.", lex=(line, "gemfile lock"))

    flags = flags_of(
        [row('ruby "precious stones" gem'), row('ruby gem -"precious stones"'), row('ruby gem "stones"')],
        actions={"hyde_length": "off", "boilerplate": "off", "lex_longer": "off"},
    )
    assert flags == [["everyday_sense:gem"], [], []]


def test_everyday_sense_report_names_the_word_found():
    bad = full(
        "ruby gem install", hyde="A gem is a precious stone such as a sapphire cut and polished for jewelry."
    )
    result = run([bad])
    assert result.report["everyday_sense_examples"] == [
        {"query": "ruby gem install", "match": "gem:precious stone"}
    ]


# ---------------------------------------------------------------- boilerplate


def template_records(n: int, same_query: bool = False) -> list[dict]:
    topics = ["knitting", "sourdough", "chess", "pottery", "surfing", "guitar", "origami", "birdwatching",
              "calligraphy", "woodworking", "archery", "juggling", "fencing", "rowing"]  # fmt: skip
    out = []
    for i in range(n):
        topic = topics[0] if same_query else topics[i]
        hyde = (
            f"Learning {topic} requires practice and patience. This resource provides detailed instructions."
        )
        out.append(full(topic, hyde=hyde, vec=(f"complete guide to {topic} for everyone",)))
    return out


def test_template_hyde_repeated_across_queries_is_flagged_by_frequency():
    natural = full(
        "sql injection prevention",
        hyde="Use parameterized queries so user input never becomes part of the SQL text.",
    )
    result = run([*template_records(12), natural])
    flags = result.kept["flags"].to_list()
    assert all("boilerplate:hyde" in f and "boilerplate:vec" in f for f in flags[:12])
    assert flags[12] == []
    hyde = [s for s in result.report["boilerplate_signatures"] if s["kind"] == "hyde"][0]
    assert hyde["queries"] == 12 and "practice" in hyde["signature"] and "knitting" not in hyde["signature"]


def test_boilerplate_threshold_counts_distinct_queries():
    assert not any("boilerplate:hyde" in f for f in flags_of(template_records(12, same_query=True)))
    assert not any(
        "boilerplate:hyde" in f for f in flags_of(template_records(12), boilerplate_min_queries=13)
    )


def test_boilerplate_fix_drops_template_items_but_never_the_last_of_a_kind():
    records = template_records(12)
    records[0]["output"].insert(0, ["vec", "why does knitting calm the mind so well"])
    result = run(records, fix=True, actions={"boilerplate": "fix"})
    first = result.kept.row(0, named=True)
    assert ["vec", "why does knitting calm the mind so well"] in first["output"]
    assert ["vec", "complete guide to knitting for everyone"] not in first["output"]
    assert any(kind == "hyde" for kind, _ in first["output"])  # the only hyde stays
    assert first["flags"] == ["boilerplate:hyde"]
    assert result.counts["fixed:boilerplate"] == 1  # elsewhere the template vec is the only vec


# ---------------------------------------------------------------- lex filler


def test_lex_filler_on_every_line_is_flagged_unless_the_query_has_the_word():
    padded = full(
        "orchestra instruments guide",
        lex=("orchestra overview instruments guide tutorial", "orchestra overview instruments tips"),
    )
    honest = full(
        "orchestra instruments guide",
        lex=("orchestra instrument families guide", "symphony orchestra sections"),
    )
    partly = full("sourdough bread", lex=("sourdough bread shaping tutorial", "sourdough starter hydration"))
    assert flags_of([padded, honest, partly]) == [["lex_filler"], [], []]


def test_a_filler_word_sharing_a_stem_with_the_query_is_not_filler():
    api = full("api doc", lex=("API documentation endpoints", "REST API docs developer guide"))
    guided = full("guided meditation", lex=("meditation guide breathing", "body scan guides"))
    padded = full("api doc", lex=("api doc overview", "api doc tutorial"))
    assert flags_of([api, guided, padded], actions={"echo": "off"}) == [[], [], ["lex_filler"]]


def test_a_row_is_boilerplate_by_its_vec_lines_only_when_every_vec_line_is_a_template():
    vec = "visitor information for the place"
    towns = "oslo lima rome kyiv baku doha riga oran tunis quito lagos minsk".split()
    rows = [
        full(
            f"place {i}",
            hyde=f"Hyde {i} about its own place and nothing else at all.",
            vec=(vec, f"how far is it from {town} by train"),
        )
        for i, town in enumerate(towns)
    ]
    only_template = [
        full(f"spot {i}", hyde=f"Hyde {i} about its own spot and nothing else at all.", vec=(vec,))
        for i in range(12)
    ]
    flags = flags_of(rows + only_template, actions={"lex_longer": "off"})
    assert all("boilerplate:vec" not in f for f in flags[:12])
    assert all("boilerplate:vec" in f for f in flags[12:])


def test_lex_filler_fix_removes_the_words_the_query_lacks():
    record_ = full("sourdough bread", lex=("sourdough starter overview", "bread hydration ratio tutorial"))
    result = run([record_], fix="lex_filler")
    lex = [text for kind, text in result.kept["output"][0] if kind == "lex"]
    assert lex == ["sourdough starter", "bread hydration ratio"]
    assert result.kept["flags"][0].to_list() == []
    assert result.counts["fixed:lex_filler"] == 1


def test_lex_filler_fix_keeps_a_line_that_would_become_an_echo():
    record_ = full("sourdough bread", lex=("sourdough overview bread", "sourdough loaf guide"))
    result = run([record_], fix="filler")
    lex = [text for kind, text in result.kept["output"][0] if kind == "lex"]
    assert lex == ["sourdough overview bread", "sourdough loaf"]


# ---------------------------------------------------------------- echo, kinds, hyde length, only mode


def test_echo_is_flagged_and_fixed_without_emptying_a_kind():
    record_ = full("auth config", lex=("auth config", "authentication settings file"), vec=("auth config",))
    assert flags_of([record_])[0] == ["echo:lex", "echo:vec", "lex_longer"]
    result = run([record_], fix=True)
    row = result.kept.row(0, named=True)
    assert ["lex", "auth config"] not in row["output"]
    assert ["vec", "auth config"] in row["output"]  # the only vec is kept, and stays flagged
    assert row["flags"] == ["echo:vec", "lex_longer"]


def test_missing_kinds_and_hyde_length():
    no_vec = record("auth config", ("hyde", HYDE), ("lex", "auth settings"))
    short = full("auth config", hyde="Too short.")
    long = full("auth config", hyde="x" * 201)
    assert flags_of([no_vec, short, long]) == [
        ["degenerate:missing_vec", "missing:vec"],
        ["hyde_length:short"],
        ["hyde_length:long"],
    ]
    assert flags_of([short], hyde_min_chars=5) == [[]]


def test_only_mode_rows_follow_only_mode_rules():
    fine = record("ssh keys /only:lex", ("lex", "ssh key pair"), ("lex", "ssh-keygen ed25519"))
    missing = record("ssh keys /only:vec", ("lex", "ssh key pair"))
    extra = record("ssh keys /only:lex", ("lex", "ssh key pair"), ("vec", "how to make an ssh key"))
    result = run([fine, missing, extra])
    assert result.kept["flags"].to_list() == [[], ["only_mode_other_kinds"]]
    assert result.rejected["_reason"].to_list() == ["only-mode record lacks its requested kind"]
    assert result.rejected["output"].to_list() == [[["lex", "ssh key pair"]]]
    fixed = run([extra], fix=True).kept.row(0, named=True)
    assert fixed["output"] == [["lex", "ssh key pair"]] and fixed["flags"] == []


def test_reject_and_off_actions():
    records = [*template_records(12), full("sql injection prevention")]
    result = run(records, actions={"boilerplate": "reject"})
    assert result.kept["query"].to_list() == ["sql injection prevention"]
    assert set(result.rejected["_reason"].to_list()) == {"template boilerplate hyde/vec"}
    assert all(f == [] for f in flags_of(records, actions={"boilerplate": "off", "hyde_length": "off"}))


def test_rules_can_come_from_another_file(tmp_path):
    rules = yaml.safe_load(data_path("clean_rules.yaml").read_text())
    rules["rules"]["hyde_length"]["action"] = "reject"
    rules["settings"]["hyde_max_chars"] = 100
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = run([full("auth config"), full("auth config", hyde=HYDE + " " + HYDE)], rules=path)
    assert result.rejected["_reason"].to_list() == ["hyde outside the length range"]


def test_flags_column_replaces_an_older_one():
    frame = records_to_frame([full("auth config", lex=("auth config", "auth file"))])
    once = clean.run(frame).kept
    twice = clean.run(once).kept
    assert twice["flags"].to_list() == once["flags"].to_list() == [["echo:lex"]]
    assert twice.columns == once.columns


@pytest.mark.skipif(not REFERENCE.exists(), reason="needs ../shared/data/qmd-reference")
def test_reference_data_template_files_are_flagged_and_rows_conserved():
    frame = normalize.run(read_records(sorted(REFERENCE.glob("*.jsonl"))).frame).kept
    result = clean.run(frame, keep_flagged=True)
    assert result.kept.height + result.rejected.height == frame.height
    kept = result.kept.with_columns(pl.col("_source").str.extract(r"qmd_(\w+)\.jsonl").alias("file"))
    boiler = kept.group_by("file").agg(
        pl.col("flags").list.eval(pl.element().str.starts_with("boilerplate")).list.any().mean()
    )
    share = dict(boiler.iter_rows())
    assert share["expansion_balanced_deduped"] > 0.9 and share["expansion_short_nontech"] > 0.9
    assert share["expansion_handcrafted"] == 0.0
    assert result.counts["flagged:lex_filler"] > 0


def test_fixing_a_few_rows_among_many_leaves_the_others_untouched():
    records = [full(f"topic {i} setup") for i in range(40)]
    records[17] = full("auth config", lex=("auth config", "authentication settings file"))
    frame = records_to_frame(records)
    result = clean.run(frame, fix=True, keep_flagged=True)
    assert result.kept["output"][17].to_list() == [
        [k, t] for k, t in records[17]["output"] if t != "auth config"
    ]
    others = [i for i in range(40) if i != 17]
    assert result.kept["output"].gather(others).equals(frame["output"].gather(others))


@pytest.mark.skipif(not REFERENCE.exists(), reason="needs ../shared/data/qmd-reference")
def test_reference_template_files_are_rejected_by_default_and_handcrafted_rows_kept():
    frame = normalize.run(read_records(sorted(REFERENCE.glob("*.jsonl"))).frame).kept
    result = clean.run(frame)
    assert result.kept.height + result.rejected.height == frame.height
    sources = result.kept["_source"].str.extract(r"qmd_(\w+)\.jsonl").value_counts()
    by_file = dict(sources.iter_rows())
    assert "expansion_balanced_deduped" not in by_file and "expansion_diverse_addon" not in by_file
    assert by_file["expansion_handcrafted"] == 65
    junk = ("boilerplate", "lex_filler", "degenerate")
    assert not result.kept["flags"].list.eval(pl.element().str.contains("|".join(junk))).list.any().any()


# ---------------------------------------------------------------- junk out by default


def degenerate_vec_answer() -> dict:
    return record(
        "docker compose networking",
        ("hyde", "Docker Compose puts services on one network where they reach each other by name."),
        ("lex", "docker compose network"),
        *[("vec", "docker-comdll")] * 49,
    )


def test_degenerate_answers_are_rejected_with_the_gate_rule_as_reason():
    result = clean.run(records_to_frame([degenerate_vec_answer(), full("ssh keys setup")]))
    assert result.rejected["_reason"].to_list() == ["degenerate answer: repeated_lines"]
    assert result.kept["query"].to_list() == ["ssh keys setup"]


def test_keep_flagged_and_per_rule_actions_restore_flagging():
    frame = records_to_frame([degenerate_vec_answer()])
    kept = clean.run(frame, keep_flagged=True).kept
    assert kept["flags"].to_list()[0][0] == "degenerate:repeated_lines"
    assert clean.run(frame, actions={"degenerate": "flag"}).kept.height == 1
    assert clean.run(frame, keep_flagged=True, actions={"degenerate": "reject"}).kept.height == 0


def test_boilerplate_and_filler_are_rejected_by_default():
    template = [full(f"topic {i} setup") for i in range(12)]  # one hyde shared by 12 queries
    padded = full(
        "orchestra sections",
        hyde="The four sections of an orchestra are strings, woodwinds, brass and percussion.",
        lex=("orchestra overview sections guide", "orchestra sections tutorial"),
        vec=("which instrument families sit in each part of a symphony orchestra",),
    )
    result = clean.run(records_to_frame([*template, padded]))
    assert result.rejected_by_reason() == {
        "template boilerplate hyde/vec": 12,
        "filler words added to every lex line": 1,
    }


def test_the_category_floor_keeps_a_junk_only_category_when_every_row_names_one():
    template = [{**full(f"topic {i} setup"), "category": "technology"} for i in range(12)]
    honest = {
        **full(
            "ssh keys",
            hyde="Generate an ed25519 key with ssh-keygen and copy it to the server.",
            lex=("ssh-keygen ed25519", "authorized_keys"),
            vec=("how do I log in to a server with an ssh key",),
        ),
        "category": "hobbies",
    }
    frame = records_to_frame([*template, honest])
    result = clean.run(frame, category_floor=2)
    assert result.kept["query"].to_list() == ["topic 0 setup", "topic 1 setup", "ssh keys"]
    assert result.kept["flags"][0].to_list() == ["boilerplate:hyde", "boilerplate:vec", "category_floor"]
    assert result.counts["kept_by_category_floor"] == 2
    uncategorized = records_to_frame([*template, {**honest, "category": None}])
    skipped = clean.run(uncategorized, category_floor=2)
    assert skipped.kept.height == 1 and skipped.report["category_floor"].startswith("skipped: 1 rows")


def test_non_topical_input_labels_are_not_protected_by_the_floor():
    template = [{**full(f"topic {i} setup"), "category": "diverse_addon"} for i in range(12)]
    assert clean.run(records_to_frame(template), category_floor=3).kept.height == 0


# ---------------------------------------------------------------- selectable fixes (issue 10)

LONG_HYDE = (
    "Sourdough starters need regular feeding with equal weights of flour and water. "
    "Keep the jar at room temperature and discard half before each feeding. "
    "A healthy starter doubles within four to eight hours and smells pleasantly sour."
)


def test_trim_hyde_cuts_at_a_sentence_boundary_within_the_limits():
    trimmed = clean.trim_hyde(LONG_HYDE, 50, 200)
    assert trimmed == LONG_HYDE.rsplit(" A healthy", 1)[0]
    assert 50 <= len(trimmed) <= 200 and trimmed.endswith(".")
    assert clean.trim_hyde("word " * 60, 50, 200) is None  # one long sentence: nothing sensible to cut


def test_hyde_trim_fix_shortens_long_hydes_and_flags_the_untrimmable():
    good = full("sourdough starter feeding", hyde=LONG_HYDE)
    bad = full("sourdough starter care", hyde="word " * 60)
    result = run([good, bad], fix="hyde_trim")
    hydes = [row[0][1] for row in result.kept["output"].to_list()]
    assert hydes[0] == clean.trim_hyde(LONG_HYDE, 50, 200)
    assert result.kept["flags"].to_list() == [[], ["hyde_length:long"]]
    assert result.counts["fixed:hyde_length"] == 1
    assert run([good], fix=False).kept["flags"].to_list() == [["hyde_length:long"]]


def test_lex_longer_flag_and_fix_drop_lex_lines_longer_than_the_vec_lines():
    row = record(
        "ssh keys",
        ("hyde", HYDE),
        ("lex", "ssh keys"),
        ("lex", "ssh key generation ed25519 rsa passphrase agent forwarding config"),
        ("vec", "how do I create ssh keys"),
    )
    assert flags_of([row]) == [["echo:lex", "lex_longer"]]
    fixed = run([row], fix="lex_longer").kept.row(0, named=True)
    assert ["lex", "ssh keys"] in fixed["output"] and len(fixed["output"]) == 3
    assert "lex_longer" not in fixed["flags"]


def test_the_train_preset_names_its_fixes_and_unknown_fixes_fail():
    config = clean.load_rules()
    assert clean.fix_names(config, "train") == {"hyde_length", "echo", "lex_longer", "only_mode_other_kinds"}
    assert clean.fix_names(config, "hyde_trim,lex_echo") == {"hyde_length", "echo"}
    assert clean.fix_names(config, True) is None and clean.fix_names(config, False) == set()
    with pytest.raises(ValueError, match="unknown clean fix 'trim'"):
        clean.fix_names(config, "trim")


@pytest.mark.skipif(not REFERENCE.exists(), reason="needs ../shared/data/qmd-reference")
def test_the_gate_prefilter_gives_the_gate_s_answer_on_every_reference_row():
    frame = normalize.run(read_records(sorted(REFERENCE.glob("*.jsonl"))).frame).kept
    raw = read_records(sorted(REFERENCE.glob("*.jsonl"))).frame  # unnormalized: legacy spellings, any order
    checks = list(quality.GATE_RULES)
    for data in (frame, raw):
        flags = clean.run(data, keep_flagged=True, rules=_rules_with_checks(checks)).kept["flags"].to_list()
        got = [next((f.split(":", 1)[1] for f in row if f.startswith("degenerate:")), None) for row in flags]
        expected = [
            (fails[0].rule if fails else None)
            for fails in (
                quality.check(q, o, checks=checks)
                for q, o in zip(data["query"].to_list(), data["output"].to_list())
            )
        ]
        assert got == expected


def test_the_gate_prefilter_keeps_every_failing_row():
    rows = [
        degenerate_vec_answer(),
        record("q one", ("lex", "Alpha beta."), ("lex", "alpha  BETA"), ("vec", "what is alpha beta")),
        record("sourdough starter feeding", ("lex", "docker swarm"), ("vec", "how to feed a starter")),
        record(
            "sourdough starter",
            ("hyde", "A starter."),
            ("lex", "sourdough"),
            ("lex", "kubernetes ingress tls /only:lex"),
            ("vec", "how to feed it"),
        ),
        record("balance sheet /only:lex", ("lex", "Balance sheet"), ("lex", "balance sheet pdf")),
        record("a b c d e", *[("lex", f"a {i}") for i in range(4)], ("vec", "what are a b c")),
        record("web socket", ("lex", "WebSocket protocol"), ("vec", "how do websockets work")),
    ]
    frame = records_to_frame(rows)
    checks = list(quality.GATE_RULES)
    flags = clean.run(frame, keep_flagged=True, rules=_rules_with_checks(checks)).kept["flags"].to_list()
    got = [next((f.split(":", 1)[1] for f in row if f.startswith("degenerate:")), None) for row in flags]
    assert got == [
        "repeated_lines",
        "repeated_lines",
        "lex_off_topic",
        "prompt_copy",
        "all_echo",
        "too_many_items",
        None,
    ]


def _rules_with_checks(checks: list[str]) -> clean.CleanRules:
    rules = clean.load_rules()
    rules.settings["degenerate_checks"] = checks
    return rules
