"""Tests for rubric v2 (the default) of qmd_finetune.reward against ../shared/docs/reward-spec-v2.md.

One test per v2 rule, with the arithmetic in comments (F format, D diversity, H hyde,
Q quality, E entity, T think bonus; no test uses thinking, so T = 20), the spec's eight
worked examples and its entity table exactly, and the batch path against the per-row
path on every reference row. Section numbers (s1..s5) refer to the v2 spec.
"""

from __future__ import annotations

import glob
from pathlib import Path

import polars as pl
import pytest

from qmd_finetune.io import read_records
from qmd_finetune.records import render
from qmd_finetune.reward import (
    DEFAULT_RUBRIC,
    FILLER_WORDS,
    KEY_TERM_STOPWORDS,
    KEY_TERM_STOPWORDS_V2,
    QUERY_VERB_STOPWORDS,
    RUBRICS,
    check_rubric,
    extract_entities,
    grpo_reward,
    grpo_reward_for,
    key_terms,
    reward,
    score,
    score_frame,
    score_pairs,
)

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qmd-reference"

# "auth config": 2 tokens (d = 2), no entities in either rubric, key terms {auth, config}.
Q = "auth config"
VEC1 = "how do I configure authentication for my app"  # 44 chars, natural
VEC2 = "which settings control login security"  # 37 chars, natural, diverse from VEC1


def lines(*pairs: tuple[str, str]) -> str:
    return "\n".join(f"{kind}: {text}" for kind, text in pairs)


def v1(query: str, text: str) -> float:
    return score(query, text, rubric="v1").percentage


def v2(query: str, text: str) -> float:
    return score(query, text, rubric="v2").percentage


# ---------------------------------------------------------------- the rubric parameter


def test_default_rubric_is_v2() -> None:
    assert DEFAULT_RUBRIC == "v2" and RUBRICS == ("v1", "v2")
    text = lines(
        ("lex", "deploy question"), ("lex", "deployment process steps"), ("vec", "someone asking how")
    )
    assert (
        score("Bob asked about deploy", text).to_dict()
        == score("Bob asked about deploy", text, "v2").to_dict()
    )
    assert score("Bob asked about deploy", text).rubric == "v2"


def test_version_keyword_is_a_fallback_name_for_rubric() -> None:
    text = EXAMPLES[1][1]
    assert score(EXAMPLES[1][0], text, version="v1").percentage == 89.2
    assert score(EXAMPLES[1][0], text, version="v2").percentage == 39.2
    assert reward(EXAMPLES[1][0], text, version="v1") == 0.892


def test_rubric_and_version_that_disagree_are_an_error() -> None:
    with pytest.raises(ValueError, match="disagree"):
        score(Q, "lex: auth", rubric="v1", version="v2")


@pytest.mark.parametrize("call", [
    lambda: score(Q, "lex: auth", rubric="v3"),
    lambda: reward(Q, "lex: auth", rubric="V2"),
    lambda: grpo_reward_for("latest"),
    lambda: score_pairs([(Q, "lex: auth")], rubric="v0"),
    lambda: score_frame(pl.DataFrame({"query": [Q]}), rubric=""),
    lambda: extract_entities(Q, rubric="2"),
])  # fmt: skip
def test_unknown_rubric_is_a_value_error_listing_the_valid_names(call) -> None:
    with pytest.raises(ValueError, match=r"unknown rubric .*: valid rubrics are v1, v2"):
        call()


def test_check_rubric_resolves_rubric_then_version_then_default() -> None:
    assert check_rubric() == "v2"
    assert check_rubric("v1") == "v1"
    assert check_rubric(None, "v1") == "v1"


def test_score_names_its_rubric_in_to_dict() -> None:
    assert score(Q, "lex: auth", rubric="v1").to_dict()["rubric"] == "v1"
    assert score(Q, "not an expansion").to_dict()["rubric"] == "v2"  # hard failures too


def test_grpo_reward_scores_with_v2_and_grpo_reward_for_picks_the_rubric() -> None:
    query, text = EXAMPLES[1][0], EXAMPLES[1][1]
    prompts = [f"Expand this search query: {query}"]
    assert grpo_reward(prompts, [text]) == pytest.approx([0.392], abs=1e-12)
    assert grpo_reward_for("v1")(prompts, [text]) == pytest.approx([0.892], abs=1e-12)
    assert grpo_reward.__name__ == grpo_reward_for("v1").__name__ == "qmd_reward"


# ---------------------------------------------------------------- s1 word lists


def test_key_term_stopwords_v2_are_v1s_31_plus_the_57_listed() -> None:
    new = (
        "about from into between through during after before like than then that this their its was "
        "were has had been being have not but just also very so if at by up out all some any no each "
        "every both few more most other only same such here there asked said notes meeting email "
        "discussion conversation call"
    ).split()
    assert len(new) == 57 and len(KEY_TERM_STOPWORDS) == 31
    assert KEY_TERM_STOPWORDS | set(new) == KEY_TERM_STOPWORDS_V2
    assert len(KEY_TERM_STOPWORDS_V2) == 88


def test_query_verb_stopwords_are_the_81_listed() -> None:
    listed = (
        "configure setup install build create make run start stop check test debug fix update change add "
        "remove delete use using need want should would could help please best good new old latest recent "
        "setting settings compare comparing implement implementing deploy deploying migrate migrating "
        "optimize optimizing understand understanding explain list describe define convert connecting "
        "performance overview introduction tutorial example difference between about review resolve "
        "resolving troubleshoot troubleshooting monitor monitoring manage managing enable disable set write "
        "read search possible common typical recommended alternative"
    ).split()
    assert len(listed) == 81 == len(set(listed))
    assert set(listed) == QUERY_VERB_STOPWORDS


def test_filler_words_are_overview_and_basics() -> None:
    assert {"overview", "basics"} == FILLER_WORDS


def test_v2_key_terms_drop_the_new_stopwords() -> None:
    # "meeting notes about budget": v1 key terms keep meeting, notes, about; v2 only budget.
    assert key_terms("meeting notes about budget", rubric="v1") == {"meeting", "notes", "about", "budget"}
    assert key_terms("meeting notes about budget") == {"budget"}


def test_v2_key_terms_change_quality() -> None:
    # lex "budget review" keeps `budget` in both; lex "meeting agenda" keeps `meeting` only in v1.
    # Q v1: 5 + 5 (lex mean 14.5 <= vec 44) + 5 (natural) + 5 (all keep) = 20
    # Q v2: 5 + 5 + 5 + 2 (some keep) = 17; no entities, no filler, no quote.
    text = lines(("lex", "budget review"), ("lex", "meeting agenda"), ("vec", VEC1))
    assert score("meeting notes about budget", text, "v1").dimensions["quality"] == 20
    assert score("meeting notes about budget", text).dimensions["quality"] == 17


# ---------------------------------------------------------------- s2 entities


ENTITY_TABLE = [
    ("Bob asked about deploy", set(), {"bob"}),
    ("Configure Kafka consumer groups", {"consumer", "groups", "kafka"}, {"consumer", "kafka"}),
    ("TDS motorsports team history", {"history", "motorsports", "tds", "team"}, {"motorsports", "tds"}),
    ("meeting with Bob about C++", {"about", "bob", "c++"}, {"bob", "c++"}),
    ("email from Dana about the Q3 budget", {"about", "budget", "dana", "q3"}, {"budget", "dana", "q3"}),
    ("React hooks tutorial", set(), {"hooks", "react"}),
    ("SetUp guide", {"guide", "setup"}, set()),
    ("node.js event loop", {"event", "loop", "node.js"}, {"event", "node.js"}),
    ("Kafka - consumer lag", set(), {"-", "kafka"}),
]


@pytest.mark.parametrize(
    ("query", "expected_v1", "expected_v2"), ENTITY_TABLE, ids=[r[0] for r in ENTITY_TABLE]
)
def test_entity_table_of_section_2(query: str, expected_v1: set[str], expected_v2: set[str]) -> None:
    assert extract_entities(query, rubric="v1") == expected_v1
    assert extract_entities(query, rubric="v2") == expected_v2
    assert extract_entities(query) == expected_v2


def test_entity_rule_1_all_caps_is_base_and_beats_rule_2c() -> None:
    # "SETUP" is all caps (rule 1, base) even though `setup` is a query verb; `guide` chains on it.
    assert extract_entities("SETUP guide") == {"setup", "guide"}
    # "API" base; `rate` chains (rule 5); `limits` follows a chained word: not an entity.
    assert extract_entities("API rate limits") == {"api", "rate"}


def test_entity_rule_2a_capitalised_word_after_the_first() -> None:
    # install: lower-case; Kafka: 2a base; on: key-term stopword; Ubuntu: 2a base.
    assert extract_entities("install Kafka on Ubuntu") == {"kafka", "ubuntu"}


def test_entity_rule_2b_capitalised_first_word_that_is_no_query_verb() -> None:
    # Kafka: first word, `kafka` not a query verb: base; consumer: chained; lag: not.
    assert extract_entities("Kafka consumer lag") == {"kafka", "consumer"}
    assert extract_entities("Kafka consumer lag", rubric="v1") == set()


def test_entity_rule_2c_capitalised_query_verb_first_is_never_an_entity() -> None:
    # Configure: query verb at position 0 (2c): not an entity, nothing chains on it.
    assert extract_entities("Configure kafka") == set()
    # 2c wins over rule 4 (CamelCase): `SetUp` would be CamelCase, but 2c decides first.
    assert extract_entities("SetUp") == set()
    # Install: 2c; Node.js: 2a base (capitalised, not first).
    assert extract_entities("Install Node.js") == {"node.js"}


def test_entity_capitalised_stopword_first_falls_through_to_rules_3_to_5() -> None:
    # What: a key-term stopword, so rule 2 fails; rules 3-5 do not hold; C++: rule 3.
    assert extract_entities("What is C++") == {"c++"}
    # About: a v2 key-term stopword (v1 took it by rule 5 after nothing: no); React: 2a.
    assert extract_entities("About React") == {"react"}


def test_entity_rule_3_special_characters_at_any_position() -> None:
    # node.js: lower-case first word, never rule 2, but rule 3 (`.`) makes it base; streams chains.
    assert extract_entities("node.js streams") == {"node.js", "streams"}
    # c#: rule 3 base; vs: chained (rule 5); f#: rule 3 base again.
    assert extract_entities("c# vs f#") == {"c#", "vs", "f#"}


def test_entity_rule_4_camel_case_decides_only_for_a_capitalised_stopword() -> None:
    # Any other capitalised word is decided by rule 2 first. `ABout`: `about` is a v2 key-term
    # stopword, so rule 2 fails; rule 3 no; rule 4 (capital after the first letter): base.
    # `page` chains on it.
    assert extract_entities("ABout page") == {"about", "page"}
    assert extract_entities("About page") == set()


def test_entity_rule_5_chains_one_level_only() -> None:
    # TDS base; motorsports chained (not base); team: previous was chained, so not an entity.
    assert extract_entities("TDS motorsports team history") == {"tds", "motorsports"}
    # v1 chained without limit.
    assert extract_entities("TDS motorsports team history", rubric="v1") == {
        "tds",
        "motorsports",
        "team",
        "history",
    }


def test_entity_empty_word_resets_chaining() -> None:
    # The quote strips to an empty word: resets "previous was base"; motorsports does not chain.
    assert extract_entities('TDS " motorsports') == {"tds"}


# ---------------------------------------------------------------- s3.1 diversity


def test_lex_diversity_threshold_is_3_for_queries_of_5_or_more_tokens() -> None:
    # "auth - config - tokens": 5 tokens (punctuation tokens count), d = 3.
    # lex "auth settings" vs "auth tokens": symmetric difference {settings, tokens} = 2 < 3.
    # D: 10 + 5 + lex (5 - 2) 3 + vec 5 + echo 5 = 28. With "auth config tokens" (3 tokens,
    # d = 2) the pair is diverse: 30.
    text = lines(("lex", "auth settings"), ("lex", "auth tokens"), ("vec", VEC1))
    assert score("auth - config - tokens", text).dimensions["diversity"] == 28
    assert score("auth config tokens", text).dimensions["diversity"] == 30
    assert score("auth - config - tokens", text, "v1").dimensions["diversity"] == 30  # v1: lex d = 2


def test_vec_diversity_threshold_is_2_for_short_queries_and_3_for_long_ones() -> None:
    # vec pair "how does token rotation work here" / "... there": difference {here, there} = 2.
    # "auth config" (2 tokens): d = 2, diverse: D = 10 + 5 + 5 + 5 + 5 = 30 (v1's d = 3: 28).
    # "how to rotate auth config tokens" (6 tokens): d = 3, not diverse: D = 28.
    text = lines(
        ("lex", "auth tokens"),
        ("vec", "how does token rotation work here"),
        ("vec", "how does token rotation work there"),
    )
    assert score(Q, text).dimensions["diversity"] == 30
    assert score(Q, text, "v1").dimensions["diversity"] == 28
    assert score("how to rotate auth config tokens", text).dimensions["diversity"] == 28


# ---------------------------------------------------------------- s3.2 quality: filler


def test_filler_penalty_costs_3_per_lex_line() -> None:
    # lex "auth overview file" (18) and "config basics overview tokens" (29): each has filler.
    # F 30; D 10 + 5 + 5 + 5 + 5 = 30; H 0;
    # Q 5 + 5 (lex mean 23.5 <= vec mean 40.5) + 5 + 5 - 3 - 3 = 14 (once per line, though the
    # second line holds two filler words); E 10; T 20: 104 / 120 = 86.7 (v1: Q 20, 91.7).
    text = lines(
        ("lex", "auth overview file"), ("lex", "config basics overview tokens"), ("vec", VEC1), ("vec", VEC2)
    )
    s = score(Q, text)
    assert s.dimensions["quality"] == 14
    assert s.percentage == 86.7
    assert "2 lex line(s) with filler words" in s.deductions
    assert v1(Q, text) == 91.7


@pytest.mark.parametrize(
    ("query", "lex", "quality"),
    [
        ("auth config overview", "auth overview", 20),  # the query has `overview`: no filler
        ("auth config", "auth overview, settings", 20),  # `overview,` is not exactly `overview`
        ("auth config overview?", "auth overview", 17),  # query token `overview?` excuses nothing
        ("auth config", "auth Overview", 17),  # tokens are lower-cased: `overview` is filler
        ("auth config", "auth basic setup", 20),  # `basic` is no filler word
    ],
)
def test_filler_is_exact_lower_case_token_matching(query: str, lex: str, quality: int) -> None:
    # Q = 5 + 5 (lex shorter than VEC1) + 5 (natural) + 5 (keeps `auth`) = 20, minus 3 with filler.
    assert score(query, lines(("lex", lex), ("vec", VEC1))).dimensions["quality"] == quality


def test_quality_can_go_negative_and_is_shown_raw() -> None:
    # Three lex lines, all filler, none keeping a key term, no vec:
    # Q = 5 (base; no vec so no length or natural points) + 0 (no key terms) - 9 = -4.
    # D: 0 (no vec) + 5 (3 lines) + lex: "overview" is inside "overview notes" (1 pair) 5 - 2 = 3
    #    + vec 5 + echo 5 = 18. F 20; H 0; E 10; T 20: 20 + 18 - 4 + 10 + 20 = 64 / 120 = 53.3.
    # v1: Q = 5, 73 / 120 = 60.8.
    text = lines(("lex", "overview"), ("lex", "basics"), ("lex", "overview notes"))
    s = score(Q, text)
    assert s.dimensions["quality"] == -4
    assert s.percentage == 53.3
    assert v1(Q, text) == 60.8


# ---------------------------------------------------------------- s3.2 quality: quoted phrase


QUOTED = lines(("lex", 'auth "settings file"'), ("lex", "config auth tokens"), ("vec", VEC1), ("vec", VEC2))


def test_quoted_phrase_bonus_adds_3_once() -> None:
    # Q 5 + 5 (lex mean 19.5 <= 40.5) + 5 + 5 (both keep `auth`) + 3 = 23; F 30, D 30, H 0,
    # E 10, T 20: 113 / 120 = 94.2 (v1: 110 / 120 = 91.7).
    s = score(Q, QUOTED)
    assert s.dimensions["quality"] == 23
    assert s.percentage == 94.2
    assert v1(Q, QUOTED) == 91.7
    # two quoted lex lines: still +3 once
    both = lines(("lex", 'auth "settings file"'), ("lex", '"config" auth tokens'), ("vec", VEC1))
    assert score(Q, both).dimensions["quality"] == 23


@pytest.mark.parametrize(
    ("query", "text", "quality"),
    [
        (Q, lines(("lex", 'auth settings" file'), ("vec", VEC1)), 23),  # one unpaired quote is enough
        (Q, lines(("lex", "auth \u201csettings\u201d file"), ("vec", VEC1)), 20),  # curly quotes: no
        (Q, lines(("lex", "auth 'settings' file"), ("vec", VEC1)), 20),  # apostrophes: no
        ("auth", lines(("lex", 'auth "settings"'), ("vec", VEC1)), 20),  # 1-token query: no
        (Q, lines(("lex", "auth settings"), ("vec", 'how do I "configure" auth')), 20),  # vec quote: no
        (Q, lines(("hyde", '"auth" lives in config/auth.yml'), ("lex", "auth settings"), ("vec", VEC1)), 20),
    ],
    ids=["unpaired", "curly", "apostrophe", "one-token-query", "quote-in-vec", "quote-in-hyde"],
)
def test_quoted_phrase_bonus_conditions(query: str, text: str, quality: int) -> None:
    # Base Q = 5 + 5 (lex shorter) + 5 (natural) + 5 (keeps `auth`) = 20; +3 only for a lex quote.
    assert score(query, text).dimensions["quality"] == quality


def test_quote_glued_to_a_word_changes_its_token() -> None:
    # '"auth' is not the token `auth`: the only lex line keeps no key term (Q + 0), and the
    # quote adds 3: Q = 5 + 5 + 5 + 0 + 3 = 18.
    assert score(Q, lines(("lex", '"auth settings"'), ("vec", VEC1))).dimensions["quality"] == 18


def test_total_above_max_clamps_to_100() -> None:
    # "Kafka consumer lag": v2 entities {kafka, consumer}, key terms {kafka, consumer, lag}, d = 2.
    # F 30; D 10 + 5 + 5 + 5 + 5 = 30; H 5 + 5 (89 chars) + 5 + 5 = 20;
    # Q 5 + 5 + 5 + 5 (both lex keep `lag`/`kafka`) + 3 (quote) = 23;
    # E 15 (every lex line holds `kafka`) - 0 (both entities covered) + 5 (vec) = 20; T 20.
    # 143 / 140 clamps to 100.0.
    text = lines(
        ("hyde", "Kafka reports consumer lag as the gap between the newest offset and the committed offset."),
        ("lex", '"kafka consumer" lag metrics'),
        ("lex", "kafka lag monitoring"),
        ("vec", "how to measure consumer lag in a kafka cluster"),
        ("vec", "which tools alert when kafka consumers fall behind"),
    )
    s = score("Kafka consumer lag", text)
    assert (s.total, s.max_score, s.percentage, s.rating) == (143.0, 140, 100.0, "Excellent")


# ---------------------------------------------------------------- s3.3 entity coverage


def test_entity_coverage_costs_20_per_dropped_entity_and_hyde_does_not_count() -> None:
    # "Kafka consumer lag": entities {kafka, consumer}. Only the hyde mentions `consumer`.
    # E: every lex line holds `kafka` +15; `consumer` missing from lex+vec -20; vec holds kafka +5 = 0.
    # F 30; D 30 (lex differ by {metrics, alerts} = 2 >= 2); H 5 + 5 (81 chars) + 5 + 5 = 20;
    # Q 5 + 5 + 5 + 5 = 20; T 20: 120 / 140 = 85.7. v1 has no entities here (E 10): 130 / 140 = 92.9.
    text = lines(
        ("hyde", "Consumer lag grows when a Kafka consumer group reads slower than producers write."),
        ("lex", "kafka lag metrics"),
        ("lex", "kafka lag alerts"),
        ("vec", "how to measure lag in a kafka cluster"),
    )
    s = score("Kafka consumer lag", text)
    assert s.dimensions["entity"] == 0
    assert s.percentage == 85.7
    assert "entities dropped: consumer" in s.deductions
    assert v1("Kafka consumer lag", text) == 92.9


def test_entity_coverage_stacks_with_the_no_lex_entity_penalty() -> None:
    # No line holds kafka or consumer: -30 (no lex line) - 40 (two dropped) + 0 (vec) = -70.
    # F 30; D 10 + 5 + 5 + 5 + 5 = 30; H 0; Q 5 + 5 (lex mean 20.5 <= 31) + 5 + 2 (only the
    # first lex line keeps `lag`) = 17; T 20: 30 + 30 + 17 - 70 + 20 = 27 / 120 = 22.5.
    text = lines(
        ("lex", "lag metrics dashboard"),
        ("lex", "broker offset alerts"),
        ("vec", "how to measure lag in a cluster"),
    )
    s = score("Kafka consumer lag", text)
    assert s.percentage == 22.5
    assert (s.total, s.dimensions["entity"]) == (27.0, 0.0)  # the breakdown floors entity at 0


def test_entity_coverage_is_a_substring_test() -> None:
    # `consumer` is inside "consumers": covered. E 15 + 5 = 20; F 30, D 30 (lex "kafka lag" vs
    # "kafka offsets": 2 words), Q 20, T 20: 120 / 120 = 100.0.
    text = lines(
        ("lex", "kafka lag"), ("lex", "kafka offsets"), ("vec", "consumers falling behind on kafka topics")
    )
    assert score("Kafka consumer lag", text).percentage == 100.0


def test_entities_without_lex_score_0_and_no_coverage_penalty() -> None:
    # E 0. F 20; D 0 + 0 (one line) + 5 + 5 + 5 = 15; H 0; Q 5 + 5 (natural) = 10; T 20:
    # 65 / 120 = 54.2 (v1: no entities, E 10: 75 / 120 = 62.5).
    text = lines(("vec", "how to measure lag in a cluster"))
    assert v2("Kafka consumer lag", text) == 54.2
    assert v1("Kafka consumer lag", text) == 62.5


# ---------------------------------------------------------------- s4 only mode


def test_only_mode_threshold_follows_the_base_query_length() -> None:
    # Example 8's lines under a 4-token base query: d = 2, the pair differing by {setup, config}
    # is diverse. D 15 + 15 = 30; Q 10 + 5 + 5 - 3 (`overview`) = 17; F 30, E 10, T 20:
    # 107 / 120 = 89.2.
    text = EXAMPLES[7][1]
    assert v2("nginx reverse proxy ssl /only:lex", text) == 89.2


def test_only_mode_filler_is_judged_against_the_base_query() -> None:
    # `overview` is in the base query: no filler. Q 10 + 5 + 5 = 20.
    s = score("nginx proxy overview /only:lex", "lex: nginx overview config")
    assert s.dimensions["quality"] == 20
    # without it in the query: 20 - 3 = 17
    assert score("nginx proxy setup /only:lex", "lex: nginx overview config").dimensions["quality"] == 17


def test_only_mode_has_no_quote_bonus_and_no_coverage_penalty() -> None:
    # Q 10 + 5 (keeps `nginx`) + 5 (not generic) = 20, no +3 for the quote.
    assert score("nginx reverse proxy /only:lex", 'lex: "reverse proxy" nginx').dimensions["quality"] == 20
    # base entities {kafka, consumer}: every line holds one -> 20; `consumer` missing costs nothing.
    assert score("Kafka consumer lag /only:lex", "lex: kafka lag metrics").dimensions["entity"] == 20


def test_only_mode_uses_v2_key_terms() -> None:
    # base "meeting notes about budget": v2 key terms {budget}; "meeting agenda" misses it:
    # Q 10 + 0 + 5 = 15 (v1: `meeting` is a key term, 20).
    assert score("meeting notes about budget /only:lex", "lex: meeting agenda").dimensions["quality"] == 15
    assert (
        score("meeting notes about budget /only:lex", "lex: meeting agenda", "v1").dimensions["quality"] == 20
    )


# ---------------------------------------------------------------- s5 worked examples

EXAMPLES = [
    (
        "TDS motorsports team history",
        lines(("lex", "TDS motorsports founders"), ("lex", "team history racing"),
              ("vec", "history of the TDS motorsports racing team")),
        100.0, 91.7, {"format": 30, "diversity": 30, "hyde": 0, "quality": 20, "entity": 10},
    ),
    (
        "Bob asked about deploy",
        lines(("lex", "deploy question"), ("lex", "deployment process steps"),
              ("vec", "someone asking how the deployment works")),
        89.2, 39.2, {"format": 30, "diversity": 30, "hyde": 0, "quality": 17, "entity": 0},
    ),
    (
        "email from Dana about the Q3 budget",
        lines(("lex", "Q3 budget email"), ("lex", "quarterly budget planning"),
              ("vec", "email discussing the third quarter budget numbers")),
        100.0, 83.3, {"format": 30, "diversity": 30, "hyde": 0, "quality": 20, "entity": 0},
    ),
    (
        "docker compose networking",
        lines(("lex", '"docker compose" network bridge'), ("lex", "compose service dns"),
              ("vec", "how containers talk to each other in docker compose")),
        89.2, 91.7, {"format": 30, "diversity": 30, "hyde": 0, "quality": 20, "entity": 10},
    ),
    (
        "ancient rome timeline",
        lines(("lex", "ancient overview rome timeline"), ("lex", "rome basics history"),
              ("vec", "timeline of major events in ancient rome")),
        91.7, 86.7, {"format": 30, "diversity": 30, "hyde": 0, "quality": 14, "entity": 10},
    ),
    (
        "how to configure nginx reverse proxy",
        lines(("lex", "nginx reverse proxy config"), ("lex", "nginx reverse proxy setup"),
              ("lex", "proxy_pass upstream nginx"), ("vec", "how to set up nginx as a reverse proxy server")),
        91.7, 90.0, {"format": 30, "diversity": 28, "hyde": 0, "quality": 20, "entity": 10},
    ),
    (
        "redis cache eviction",
        lines(("hyde", "Redis evicts keys according to its maxmemory-policy setting, such as allkeys-lru or "
                       "volatile-ttl, once memory is full."),
              ("lex", "redis maxmemory policy"), ("lex", "lru eviction cache"),
              ("vec", "how does redis choose which keys to evict"),
              ("vec", "how does redis choose which entries to evict")),
        91.4, 92.9, {"format": 30, "diversity": 30, "hyde": 20, "quality": 20, "entity": 10},
    ),
    (
        "nginx reverse proxy ssl termination /only:lex",
        lines(("lex", "nginx ssl termination setup"), ("lex", "nginx ssl termination config"),
              ("lex", "reverse proxy overview")),
        91.7, 85.0, {"format": 30, "diversity": 25, "hyde": 0, "quality": 17, "entity": 10},
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "text", "expected_v1", "expected_v2", "dimensions"),
    EXAMPLES,
    ids=[f"example{i}" for i in range(1, 9)],
)
def test_worked_examples_of_section_5(
    query: str, text: str, expected_v1: float, expected_v2: float, dimensions: dict[str, int]
) -> None:
    # The arithmetic of each example is in the spec; the breakdown (entity floored at 0) is
    # checked too, and every example is without thinking (T 20).
    assert v1(query, text) == expected_v1
    s = score(query, text, rubric="v2")
    assert s.percentage == expected_v2
    assert s.dimensions == {**{k: float(v) for k, v in dimensions.items()}, "think": 20.0}
    assert score(query, text, version="v2").percentage == expected_v2


def test_worked_example_2_raw_entity_is_minus_50() -> None:
    # 30 + 30 + 0 + 17 - 50 + 20 = 47 = total; 47 / 120 = 39.2.
    assert score(EXAMPLES[1][0], EXAMPLES[1][1]).total == 47.0


# ---------------------------------------------------------------- batch path


@pytest.fixture(scope="module")
def reference_rows() -> tuple[pl.DataFrame, list[tuple[str, str]]]:
    files = sorted(glob.glob(str(REFERENCE_DIR / "*.jsonl")))
    if not files:
        pytest.skip(f"reference data not found in {REFERENCE_DIR}")
    frame = read_records(files).frame
    pairs = [
        (q, render(o))
        for q, o in zip(frame.get_column("query").to_list(), frame.get_column("output").to_list())
    ]
    return frame, pairs


def _per_row(pairs: list[tuple[str, str]], rubric: str) -> list[tuple[float, str, list[str]]]:
    return [(s.percentage, s.rating, s.deductions) for s in (score(q, t, rubric) for q, t in pairs)]


@pytest.mark.parametrize("rubric", RUBRICS)
def test_batch_path_matches_per_row_on_all_reference_rows(reference_rows, rubric: str) -> None:
    frame, pairs = reference_rows
    expected = _per_row(pairs, rubric)
    assert score_pairs(pairs, workers=1, rubric=rubric) == expected
    assert score_pairs(pairs, workers=2, rubric=rubric) == expected
    for workers in (1, 2):
        scored = score_frame(frame, workers=workers, rubric=rubric)
        assert scored.get_column("score").to_list() == [e[0] for e in expected]
        assert scored.get_column("rating").to_list() == [e[1] for e in expected]
        assert scored.get_column("deductions").to_list() == [e[2] for e in expected]


def test_batch_default_is_v2_and_differs_from_v1_on_reference_rows(reference_rows) -> None:
    frame, _ = reference_rows
    default = score_frame(frame, workers=1).get_column("score")
    assert default.to_list() == score_frame(frame, workers=1, rubric="v2").get_column("score").to_list()
    assert (default != score_frame(frame, workers=1, rubric="v1").get_column("score")).sum() > 100
