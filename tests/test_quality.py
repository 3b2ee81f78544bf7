"""The quality gate on the issue's real cases and on the reference data."""

from __future__ import annotations

import pytest

from qmd_finetune import quality
from qmd_finetune.generate.prompts import load_prompt

SOURDOUGH_EXAMPLE_HYDE = "A sourdough starter is flour and water fermented by wild yeast; feed it daily until it doubles in 6 hours."
GOOD = [
    [
        "hyde",
        "Docker Compose puts every service on one bridge network where containers reach each other by name.",
    ],
    ["lex", "docker compose network bridge"],
    ["lex", "compose service dns name"],
    ["vec", "how do containers in a docker compose file talk to each other"],
]


def rules(failures: list[quality.Failure]) -> list[str]:
    return [f.rule for f in failures]


def test_a_good_answer_passes():
    assert quality.check("docker compose networking", GOOD) == []


def test_forty_nine_identical_vec_lines_fail_as_repeated_and_too_many():
    text = "hyde: Docker compose networking connects services.\nlex: docker compose network\n"
    text += "vec: docker-comdll\n" * 49
    failures = quality.check_text("docker compose networking", text)
    assert rules(failures) == ["repeated_lines", "too_many_items"]
    assert failures[0].reason == "repeated_lines: vec: docker-comdll x49"
    assert failures[1].reason == "too_many_items: 49 vec (max 3)"


def test_repeated_lines_ignore_case_and_spacing():
    items = [
        ["lex", "sourdough feeding"],
        ["lex", "Sourdough  feeding"],
        ["vec", "how often to feed a starter"],
    ]
    assert rules(quality.check("sourdough starter feeding", items)) == ["repeated_lines"]


def test_the_prompt_examples_hyde_copied_verbatim_fails():
    items = [
        ["hyde", SOURDOUGH_EXAMPLE_HYDE],
        ["lex", "starter feeding ratio"],
        ["vec", "how often should I feed my starter"],
    ]
    failures = quality.check("sourdough starter feeding", items)
    assert rules(failures) == ["prompt_copy"]
    assert failures[0].reason.startswith("prompt_copy: hyde: A sourdough starter is flour")


def test_another_examples_query_as_a_lex_line_fails_as_copy_and_off_topic():
    items = [["hyde", SOURDOUGH_EXAMPLE_HYDE], ["lex", "kubernetes ingress tls /only:lex"]]
    assert rules(quality.check("sourdough starter feeding", items)) == [
        "missing_vec",
        "lex_off_topic",
        "prompt_copy",
    ]


def test_the_example_answer_is_fair_for_the_example_query_itself():
    prompt = load_prompt()
    query, answer = prompt.examples[0]
    assert quality.check_text(query, answer) == []


def test_copies_are_read_from_the_prompt_given():
    lines = quality.prompt_lines(["Query: tea\nlex: green tea oolong\nvec: which teas are green"])
    items = [["lex", "green tea oolong"], ["lex", "matcha flavor"], ["vec", "what does matcha taste like"]]
    assert rules(quality.check("matcha taste", items, prompt=lines)) == ["prompt_copy"]
    assert quality.check("matcha taste", items) == []


def test_only_mode_allows_its_own_kind_within_its_limits():
    assert (
        quality.check(
            "sourdough starter /only:lex", [["lex", "sourdough levain"], ["lex", "starter feeding"]]
        )
        == []
    )
    failures = quality.check(
        "sourdough starter /only:hyde", [["hyde", "A starter is fed daily."], ["hyde", "Feed it flour."]]
    )
    assert [f.reason for f in failures] == ["too_many_items: 2 hyde (max 1)"]
    failures = quality.check(
        "sourdough starter /only:lex", [["lex", "sourdough levain"], ["vec", "how to feed a starter"]]
    )
    assert [f.reason for f in failures] == ["other_kinds: vec in /only:lex"]


def test_only_mode_has_no_vec_requirement_but_normal_mode_does():
    assert rules(quality.check("sourdough starter", [["lex", "sourdough levain"]])) == ["missing_vec"]


def test_every_line_an_echo_fails():
    items = [
        ["lex", "balance sheet basics"],
        ["lex", "Balance sheet basics"],
        ["lex", "balance sheet basics pdf"],
    ]
    assert "all_echo" in rules(quality.check("balance sheet basics /only:lex", items))


def test_lex_off_topic_needs_every_lex_line_off_topic():
    items = [
        ["lex", "401k enrollment contribution match"],
        ["lex", "start 401(k) employer"],
        ["vec", "how do I open a 401k"],
    ]
    assert quality.check("how to start a 401(k)", items) == []
    items = [
        ["lex", "docker swarm overlay"],
        ["lex", "helm chart values"],
        ["vec", "how do I feed a sourdough starter"],
    ]
    assert rules(quality.check("sourdough starter feeding", items)) == ["lex_off_topic"]


@pytest.mark.parametrize(
    ("query", "line"),
    [
        ("web socket", "WebSocket protocol real-time connection"),
        ("ai ops", "AIOps monitoring anomaly detection"),
        ("how to live sustainably?", "sustainable living tips"),
        ("docker compose networking", "docker-compose network bridge"),
    ],
)
def test_key_terms_match_by_stem_and_joined_words(query, line):
    assert quality.shares_key_term(line, {w for w in query.lower().split()} - {"how", "to"}, query)


def test_checks_can_be_chosen_and_typos_fail():
    text = "lex: a b\n" * 5
    assert rules(quality.check_text("a b c", text, checks=["too_many_items"])) == ["too_many_items"]
    with pytest.raises(ValueError, match="unknown quality gate rule"):
        quality.check("q", [], checks=["repeated"])


def test_rule_of_reads_a_reason():
    assert quality.rule_of("repeated_lines: vec: docker-comdll x49") == "repeated_lines"
