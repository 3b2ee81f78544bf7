"""Tests for rubric v1 of qmd_finetune.reward against ../shared/docs/reward-spec.md.

Every scorer below is asked for rubric "v1" explicitly (the wrappers after the imports);
rubric v2, the default, is tested in tests/test_reward_v2.py.

Every expected number is worked out by hand from the spec; the arithmetic is in the comments.
Section numbers (s1..s6) refer to the spec's sections.

Shared fixtures used throughout (query Q = "auth config"):
  key terms of Q = {"auth", "config"}; entities of Q = {} ("auth" is the first word and
  lower-case, "config" is lower-case), so the normal-mode entity dimension is 10.
  LEX1 "auth settings file" (18 chars), LEX2 "config auth tokens" (18 chars):
    both keep a key term, neither echoes Q (Q is not a substring of either), neither is
    generic, and they are diverse (symmetric difference {settings, file, config, tokens}: 4 >= 2).
  VEC1 "how do I configure authentication for my app" (44 chars), VEC2 "which settings
    control login security" (37 chars): both natural, diverse, no echo.
  HYDE (114 chars): no word repeated, one line.
"""

from __future__ import annotations

import glob
from pathlib import Path

import polars as pl
import pytest

from qmd_finetune import reward as rw
from qmd_finetune.io import read_records
from qmd_finetune.records import render
from qmd_finetune.reward import (
    GENERIC_PHRASES,
    KEY_TERM_STOPWORDS,
    STOPWORDS,
    Score,
    echoes,
    has_entity,
    is_diverse,
    is_generic,
    is_natural,
    keeps_key_terms,
    non_diverse_pairs,
    query_from_prompt,
    rating_for,
    repetition_penalty,
)

V1 = "v1"


def score(query: str, text: str) -> Score:
    return rw.score(query, text, rubric=V1)


def reward(query: str, text: str) -> float:
    return rw.reward(query, text, rubric=V1)


def extract_entities(query: str) -> set[str]:
    return rw.extract_entities(query, rubric=V1)


def key_terms(query: str) -> set[str]:
    return rw.key_terms(query, rubric=V1)


def score_pairs(
    pairs: list[tuple[str, str]], workers: int | None = None
) -> list[tuple[float, str, list[str]]]:
    return rw.score_pairs(pairs, workers, rubric=V1)


def score_frame(frame: pl.DataFrame, workers: int | None = None) -> pl.DataFrame:
    return rw.score_frame(frame, workers, rubric=V1)


grpo_reward = rw.grpo_reward_for(V1)

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qmd-reference"

Q = "auth config"
LEX1 = "auth settings file"
LEX2 = "config auth tokens"
VEC1 = "how do I configure authentication for my app"
VEC2 = "which settings control login security"
HYDE = (
    "Authentication settings live in config/auth.yml, where each provider lists its client id, "
    "secret and callback URL."
)
DIMENSION_NAMES = ("format", "diversity", "hyde", "quality", "entity", "think")

# 80 distinct 7-character tokens ("term000 term001 ..."): text of any length without repetition.
_FILLER = " ".join(f"term{i:03d}" for i in range(80))


def text_of_length(n: int) -> str:
    """A single line of exactly ``n`` characters with no repeated word (no repetition penalty)."""
    text = _FILLER[:n]
    if text.endswith(" "):
        text = text[:-1] + "z"
    assert len(text) == n and text == text.strip()
    return text


def lines(*pairs: tuple[str, str]) -> str:
    return "\n".join(f"{kind}: {text}" for kind, text in pairs)


PERFECT = lines(("hyde", HYDE), ("lex", LEX1), ("lex", LEX2), ("vec", VEC1), ("vec", VEC2))
PERFECT_NO_HYDE = lines(("lex", LEX1), ("lex", LEX2), ("vec", VEC1), ("vec", VEC2))


def dims(query: str, text: str) -> dict[str, float]:
    return score(query, text).dimensions


def test_fixture_lengths_are_what_the_comments_say() -> None:
    assert (len(LEX1), len(LEX2), len(VEC1), len(VEC2), len(HYDE)) == (18, 18, 44, 37, 114)
    assert extract_entities(Q) == set()
    assert key_terms(Q) == {"auth", "config"}


# ---------------------------------------------------------------- s2 word lists


def test_stopwords_are_exactly_the_listed_words() -> None:
    # The spec heads the list "STOPWORDS (20)" but lists 19 words; the list is what counts
    # (the original rubric has the same 19).
    listed = "the a an is are to for of in and or it this that be with as on by".split()
    assert len(listed) == 19
    assert set(listed) == STOPWORDS


def test_key_term_stopwords_are_exactly_the_31_listed_words() -> None:
    listed = (
        "what is how to the a an in on for of and or with my your do does can i me we who where "
        "when why which find get show tell"
    ).split()
    assert len(listed) == 31
    assert set(listed) == KEY_TERM_STOPWORDS


def test_generic_phrases_are_exactly_the_12_listed_phrases() -> None:
    listed = {
        "find information about",
        "search for",
        "look up",
        "get information",
        "learn about",
        "information on",
        "details about",
        "find out about",
        "what is",
        "how to",
        "guide to",
        "help with",
    }
    assert len(GENERIC_PHRASES) == 12
    assert set(GENERIC_PHRASES) == listed


# ---------------------------------------------------------------- s1 pre-processing


def test_surrounding_whitespace_is_stripped_before_parsing() -> None:
    s = score(Q, "\n\n   " + PERFECT_NO_HYDE + "  \n\t\n")
    assert s.hard_failure is None
    assert s.lex == [LEX1, LEX2] and s.vec == [VEC1, VEC2]
    # same as the clean text: 110/120 (see test_perfect_output_without_hyde_scores_110_of_120)
    assert s.percentage == 91.7


def test_im_end_tokens_are_removed_not_treated_as_leakage() -> None:
    # <|im_end|> is in the leakage list, but pre-processing removes every one first.
    text = "lex: " + LEX1 + "<|im_end|>\nlex: " + LEX2 + "\nvec: " + VEC1 + "\nvec: " + VEC2 + "<|im_end|>"
    s = score(Q, text)
    assert s.hard_failure is None
    assert s.lex == [LEX1, LEX2]
    assert s.vec == [VEC1, VEC2]
    assert s.percentage == score(Q, PERFECT_NO_HYDE).percentage == 91.7


def test_think_block_sets_used_thinking_removes_it_and_costs_the_20_point_bonus() -> None:
    text = "<think>\nThe user wants auth.\nI should answer.\n</think>\n" + PERFECT
    s = score(Q, text)
    assert s.used_thinking is True
    assert s.hard_failure is None
    assert s.lex == [LEX1, LEX2] and s.hyde == [HYDE]
    assert s.dimensions["think"] == 0.0
    # PERFECT scores 130 of 140 (test_perfect_output_with_hyde...); minus the think bonus:
    # 110 / 140 * 100 = 78.571... -> 78.6 (Good)
    assert s.total == 110.0
    assert s.percentage == 78.6
    assert s.rating == "Good"
    assert "used <think> block" in s.deductions


def test_think_bonus_is_20_without_think_block() -> None:
    s = score(Q, PERFECT)
    assert s.used_thinking is False
    assert s.dimensions["think"] == 20.0


def test_think_blocks_are_removed_non_greedily() -> None:
    # Greedy removal would also delete "lex: auth settings file" between the two blocks.
    text = f"<think>one</think>\nlex: {LEX1}\n<think>two</think>\nvec: {VEC1}"
    s = score(Q, text)
    assert s.used_thinking is True
    assert s.lex == [LEX1]
    assert s.vec == [VEC1]


def test_only_an_opening_think_tag_is_not_thinking_and_is_an_invalid_line() -> None:
    s = score(Q, "<think>\n" + PERFECT_NO_HYDE)
    assert s.used_thinking is False
    assert s.percentage == 0.0 and s.rating == "Failed"
    assert s.hard_failure is not None and s.hard_failure.startswith("invalid line")


def test_only_a_closing_think_tag_is_not_thinking() -> None:
    # "</think>" alone: used_thinking needs both tags, so the think bonus stays.
    s = score(Q, PERFECT_NO_HYDE + " </think>")
    assert s.used_thinking is False
    assert s.dimensions["think"] == 20.0
    assert s.vec[-1] == VEC2 + " </think>"


def test_leakage_inside_a_think_block_is_removed_before_the_leakage_check() -> None:
    s = score(Q, "<think>\nuser\nwhat now\nassistant\n</think>\n" + PERFECT_NO_HYDE)
    assert s.hard_failure is None
    assert s.used_thinking is True


@pytest.mark.parametrize(
    ("query", "only_type"),
    [
        ("auth config /only:lex", "lex"),
        ("auth config /only:vec", "vec"),
        ("auth config /only:hyde", "hyde"),
        ("auth config /ONLY:LEX", "lex"),  # case-insensitive, group lower-cased
        ("auth config /Only:Vec", "vec"),
        ("auth config\t/only:hyde", "hyde"),  # any whitespace before the slash
        ("auth config   /only:lex   ", "lex"),  # trailing whitespace allowed
    ],
)
def test_only_mode_suffix_is_detected_case_insensitively(query: str, only_type: str) -> None:
    s = score(query, "lex: auth settings file\nvec: how do I configure authentication\nhyde: " + HYDE)
    assert s.only_type == only_type
    assert s.max_score == 120


@pytest.mark.parametrize(
    "query",
    [
        "auth config/only:lex",  # no whitespace before the slash
        "auth config /only:lexx",  # not one of the three kinds
        "auth /only:lex config",  # not at the end
        "auth config /only: lex",  # space after the colon
        "auth config only:lex",  # no slash
    ],
)
def test_query_without_a_valid_only_suffix_is_normal_mode(query: str) -> None:
    s = score(query, f"lex: {LEX1}")
    assert s.only_type is None
    # normal mode: format 10 + 10 (lex) = 20 (only mode would give 30 for a lex-only answer)
    assert s.dimensions["format"] == 20.0


def test_only_mode_uses_base_query_for_echoes() -> None:
    # base_query "auth config": lex "auth config" echoes it (equal) -> diversity 15 - 5 = 10.
    # Against the full query "auth config /only:lex" it would not echo (not equal, and the
    # full query is not a substring of "auth config").
    s = score("auth config /only:lex", "lex: auth config")
    assert s.dimensions["diversity"] == 10.0
    assert any(d.startswith("lex echoes query") for d in s.deductions)


def test_only_mode_uses_base_query_for_entities() -> None:
    # The full query's last word "/ONLY:LEX" is all upper-case (isupper() is True), so it
    # would be an entity by rule 1 and no lex line contains it (entity 0). From base_query
    # "auth config" there are no entities: entity 10.
    s = score("auth config /ONLY:LEX", f"lex: {LEX1}\nlex: {LEX2}")
    assert s.only_type == "lex"
    assert s.dimensions["entity"] == 10.0


def test_only_mode_uses_base_query_for_key_terms() -> None:
    # Full-query key terms would include "/only:lex"; base_query key terms are {"auth", "config"}.
    # The line "/only:lex notes" keeps a key term only if the suffix is (wrongly) included.
    # quality: 10 + 0 (not all keep key terms) + 5 (none generic) = 15
    s = score("auth config /only:lex", "lex: /only:lex notes")
    assert s.dimensions["quality"] == 15.0


# ---------------------------------------------------------------- s1.4 hard failures


@pytest.mark.parametrize(
    "text",
    [
        f"lex: {LEX1}<|im_start|>assistant\nvec: {VEC1}",
        f"lex: {LEX1}<|endoftext|>",
        f"lex: {LEX1}\nassistant\nvec: {VEC1}",
        f"lex: {LEX1}\nuser\nvec: {VEC1}",
        f"<|endoftext|>lex: {LEX1}",
    ],
    ids=["im_start", "endoftext", "newline-assistant-newline", "newline-user-newline", "leading-endoftext"],
)
def test_chat_template_leakage_is_a_hard_failure(text: str) -> None:
    s = score(Q, text)
    assert s.percentage == 0.0
    assert s.rating == "Failed"
    assert s.hard_failure == "chat template leakage"
    assert s.dimensions == dict.fromkeys(DIMENSION_NAMES, 0.0)
    assert s.max_score == 100
    assert s.total == 0.0
    assert s.reward == 0.0
    assert "chat template leakage" in s.deductions


def test_leakage_is_checked_after_im_end_and_think_removal() -> None:
    # Removing "<|im_end|>" (step 1) or a think block (step 2) can join "\nuser" and "\n" into the
    # "\nuser\n" marker, which the leakage check (step 4) then finds.
    assert score(Q, f"lex: {LEX1}\nuser<|im_end|>\nvec: {VEC1}").hard_failure == "chat template leakage"
    assert score(Q, f"lex: {LEX1}\nuser<think>x</think>\nvec: {VEC1}").hard_failure == "chat template leakage"


def test_leakage_is_checked_on_the_stripped_text() -> None:
    # After stripping, the trailing "\nuser\n" is "\nuser" (no final newline): not the leakage
    # marker, but "user" is then a line without a prefix -> invalid line.
    s = score(Q, f"lex: {LEX1}\nuser\n")
    assert s.percentage == 0.0
    assert s.hard_failure is not None and s.hard_failure.startswith("invalid line")


def test_leakage_is_a_hard_failure_in_only_mode_too() -> None:
    s = score("auth config /only:lex", f"lex: {LEX1}<|im_start|>")
    assert s.percentage == 0.0 and s.rating == "Failed"
    assert s.hard_failure == "chat template leakage"
    assert s.max_score == 100


@pytest.mark.parametrize(
    "bad_line",
    [
        "auth is important for security",
        "Lex: auth settings",  # prefixes are case-sensitive
        "LEX: auth settings",
        "Vec: how do I configure authentication",
        "HYDE: " + HYDE,
        "lex : auth settings",  # space before the colon
        "lexical: auth",  # "lexical:" does not start with "lex:"
        "- lex: auth settings",
        "query: auth config",
    ],
)
def test_line_without_exact_prefix_is_an_invalid_line_hard_failure(bad_line: str) -> None:
    s = score(Q, PERFECT_NO_HYDE + "\n" + bad_line)
    assert s.percentage == 0.0
    assert s.rating == "Failed"
    assert s.hard_failure is not None and s.hard_failure.startswith("invalid line")
    assert s.dimensions == dict.fromkeys(DIMENSION_NAMES, 0.0)
    assert s.max_score == 100
    assert s.reward == 0.0
    assert any(d.startswith("invalid line") for d in s.deductions)


def test_indented_prefixed_lines_are_valid_because_lines_are_stripped() -> None:
    s = score(Q, f"   lex: {LEX1}\n\tvec: {VEC1}")
    assert s.hard_failure is None
    assert s.lex == [LEX1] and s.vec == [VEC1]


# ---------------------------------------------------------------- s1.5 parsing


def test_empty_lines_are_ignored() -> None:
    text = f"lex: {LEX1}\n\n   \n\t\nlex: {LEX2}\n\nvec: {VEC1}\n\nvec: {VEC2}"
    s = score(Q, text)
    assert s.hard_failure is None
    assert s.percentage == score(Q, PERFECT_NO_HYDE).percentage


def test_item_text_after_prefix_is_stripped_and_order_within_kind_kept() -> None:
    s = score(Q, f"vec:    {VEC2}   \nlex:{LEX1}\nvec: {VEC1}\nhyde:   {HYDE}")
    assert s.vec == [VEC2, VEC1]
    assert s.lex == [LEX1]
    assert s.hyde == [HYDE]


# ---------------------------------------------------------------- s2 helpers: key terms


def test_key_terms_are_lowercased_query_words_minus_key_term_stopwords() -> None:
    assert key_terms("How to configure the Auth Config") == {"configure", "auth", "config"}
    assert key_terms("what is it") == {"it"}  # "it" is a STOPWORD but not a key-term stopword
    assert key_terms("how do I") == set()


def test_line_keeps_key_terms_when_a_whitespace_word_matches_case_insensitively() -> None:
    assert keeps_key_terms("AUTH setup", {"auth"})
    assert not keeps_key_terms("oauth setup", {"auth"})  # word match, not substring
    assert not keeps_key_terms("auth, setup", {"auth"})  # "auth," is the word: no punctuation stripping


def test_line_keeps_key_terms_when_the_query_has_none() -> None:
    assert keeps_key_terms("zebra stripes", set())
    assert keeps_key_terms("zebra stripes", key_terms("how do I"))


# ---------------------------------------------------------------- s2 helpers: entities


def test_entity_rule_1_all_caps_word_of_length_2_or_more() -> None:
    assert extract_entities("what is TDS") == {"tds"}
    assert extract_entities("API keys") == {"api", "keys"}  # first word allowed; "keys" by rule 5
    assert extract_entities("C++ templates") == {"c++", "templates"}  # "C++".isupper() is True


def test_entity_rule_1_needs_length_2() -> None:
    # "I": isupper but length 1; not rule 2 either ("i" is a key-term stopword).
    assert extract_entities("what I want") == set()


def test_entity_rule_2_capitalised_word_not_first() -> None:
    assert extract_entities("install Docker") == {"docker"}


def test_entity_rule_2_counts_positions_among_whitespace_split_words() -> None:
    # '"' is the first word (it strips to nothing), so "Docker" is the second word: rule 2 holds.
    assert extract_entities('" Docker') == {"docker"}


def test_entity_rule_2_does_not_apply_to_the_first_word() -> None:
    # "Docker" first: rule 1 no (not all caps), rule 2 no (first word), rules 3-4 no.
    # "install" then has no entity before it.
    assert extract_entities("Docker install") == set()


def test_entity_rule_2_excludes_capitalised_key_term_stopwords() -> None:
    # "For", "Where" lower-cased are key-term stopwords; "Guide" is the first word.
    assert extract_entities("Guide For Where") == set()


def test_entity_rule_3_special_characters_with_length_2() -> None:
    assert extract_entities("install node.js") == {"node.js"}
    assert extract_entities("learn c# fast") == {"c#", "fast"}  # "fast" by rule 5
    assert extract_entities("e-mail setup") == {"e-mail", "setup"}
    assert extract_entities("ping @devops") == {"@devops"}


def test_entity_rule_3_needs_length_2() -> None:
    assert extract_entities("a + b") == set()


def test_entity_rule_4_camel_case_needs_uppercase_first_and_later_character() -> None:
    assert extract_entities("JavaScript closures") == {"javascript", "closures"}
    assert extract_entities("iphone iPhone") == set()  # first character lower-case


def test_entity_rule_5_word_after_an_entity_unless_key_term_stopword() -> None:
    assert extract_entities("TDS motorsports team history") == {"tds", "motorsports", "team", "history"}
    # "for" breaks the chain, so "racing" has no entity before it.
    assert extract_entities("TDS for racing") == {"tds"}


def test_entity_words_are_stripped_of_punctuation() -> None:
    assert extract_entities('compare "Kubernetes", and (Docker)!') == {"kubernetes", "docker"}
    assert extract_entities("what is [TDS]?") == {"tds"}


def test_entity_chain_is_reset_by_a_word_that_strips_to_nothing() -> None:
    assert extract_entities("TDS racing") == {"tds", "racing"}
    # "..." strips to "" and resets "previous was entity", so "racing" is not an entity.
    assert extract_entities("TDS ... racing") == {"tds"}
    assert extract_entities("TDS ( racing") == {"tds"}


def test_entity_match_in_a_line_is_substring_not_word() -> None:
    assert has_entity("Google cloud sdk", {"go"})
    assert has_entity("TDSMotorsports fan club", {"tds"})
    assert not has_entity("racing team", {"tds"})


# ---------------------------------------------------------------- s2 helpers: diverse, echoes


def test_diverse_is_false_for_equal_lines_after_lower_and_strip() -> None:
    assert not is_diverse("  Auth Config ", "auth config", 2)


def test_diverse_is_false_when_one_is_a_substring_of_the_other() -> None:
    # symmetric difference {config, setup, guide} is 3, but "auth" is a substring.
    assert not is_diverse("auth", "auth config setup guide", 2)
    assert not is_diverse("oauth tokens", "auth", 1)  # character substring counts


def test_diverse_needs_symmetric_difference_of_at_least_d_words() -> None:
    # {auth, settings} ^ {auth, options} = {settings, options}: 2 words
    assert is_diverse("auth settings", "auth options", 2)
    assert not is_diverse("auth settings", "auth options", 3)
    # reordered words: symmetric difference 0
    assert not is_diverse("auth settings", "settings auth", 1)


def test_non_diverse_pairs_counts_every_pair() -> None:
    assert non_diverse_pairs(["a b", "a b", "a b"], 2) == 3
    assert non_diverse_pairs([LEX1, LEX2], 2) == 0


def test_echoes_when_equal_after_lower_and_strip() -> None:
    assert echoes("  Auth Config ", "auth config")


def test_echoes_when_query_is_substring_and_expansion_under_query_length_plus_10() -> None:
    # len("auth config") = 11, so the expansion must be shorter than 21 characters.
    assert len("auth config 12345678") == 20
    assert echoes("auth config 12345678", "auth config")
    assert len("auth config 123456789") == 21
    assert not echoes("auth config 123456789", "auth config")


def test_echoes_is_false_when_query_is_not_a_substring() -> None:
    assert not echoes("config auth", "auth config")
    assert not echoes("auth", "auth config")  # expansion inside the query does not echo


# ---------------------------------------------------------------- s2 helpers: generic


@pytest.mark.parametrize(
    "line",
    [
        "find information about",
        "Find Information About",
        "search for",
        "look up",
        "get information",
        "learn about",
        "information on",
        "details about",
        "find out about",
        "what is",
        "how to",
        "guide to",
        "help with",
        "  search for  ",
        "go search for",  # "search for" removed -> "go" (2 characters)
    ],
)
def test_generic_phrase_with_under_3_characters_left_is_generic(line: str) -> None:
    assert is_generic(line)


@pytest.mark.parametrize(
    "line",
    [
        "search for kubernetes docs",  # "kubernetes docs" left
        "how to configure nginx",
        "tds search for",  # "tds" left: 3 characters, not fewer
        "TDS motorsports history",
    ],
)
def test_generic_phrase_with_3_or_more_characters_left_is_not_generic(line: str) -> None:
    assert not is_generic(line)


def test_generic_starts_with_first_word_rule() -> None:
    # No phrase is a substring of "find out", but it starts with "find" (first word of
    # "find out about"): remove "find", "out", "about" once each -> "" -> generic.
    assert is_generic("find out")
    # "help me": starts with "help" ("help with"); remove "help" -> " me", "with" absent -> "me" (2).
    assert is_generic("help me")
    # "learn": starts with "learn" ("learn about"): remove "learn" -> "" -> generic.
    assert is_generic("learn")
    # "helpful tips": starts with "help"; remove "help" -> "ful tips" (8 characters): not generic.
    assert not is_generic("helpful tips")


# ---------------------------------------------------------------- s2 helpers: repetition, natural


def test_repetition_penalty_is_2_per_occurrence_beyond_the_second() -> None:
    assert repetition_penalty("cache cache") == 0
    assert repetition_penalty("cache cache cache") == 2  # (3 - 2) * 2
    assert repetition_penalty("docker docker docker docker docker") == 6  # (5 - 2) * 2
    # two words: (3 - 2) * 2 + (4 - 2) * 2 = 2 + 4
    assert repetition_penalty("cache cache cache redis redis redis redis") == 6


def test_repetition_penalty_tokens_are_lowercased_regex_words() -> None:
    assert repetition_penalty("Cache, cache; CACHE!") == 2


def test_repetition_penalty_ignores_stopwords_and_short_tokens() -> None:
    assert repetition_penalty("the the the the") == 0  # STOPWORD
    assert repetition_penalty("this with this with this with") == 0
    assert repetition_penalty("go go go go") == 0  # length 2, not > 2
    # "what" is a key-term stopword but not a STOPWORD: penalized, (3 - 2) * 2
    assert repetition_penalty("what what what") == 2


def test_natural_needs_a_space_and_more_than_15_characters() -> None:
    assert is_natural("how do I set up auth")
    assert not is_natural("authentication-configuration")  # no space
    assert len("abcdefg abcdefg") == 15
    assert not is_natural("abcdefg abcdefg")  # 15 is not more than 15
    assert is_natural("abcdefg abcdefgh")  # 16


# ---------------------------------------------------------------- s3 normal mode: totals


def test_perfect_output_with_hyde_scores_130_of_140() -> None:
    # format 10 + 10 + 10 = 30
    # diversity 10 (lex and vec) + 5 (4 lines) + 5 (0 lex pairs) + 5 (0 vec pairs) + 5 (no echo) = 30
    # hyde 5 + 5 (114 chars) + 5 (one line) + 5 (no repetition) = 20
    # quality 5 + 5 (mean lex 18 <= mean vec 40.5) + 5 (all natural) + 5 (all keep key terms) = 20
    # entity 10 (no entities); think 20
    # total 130; 130 / 140 * 100 = 92.857... -> 92.9
    s = score(Q, PERFECT)
    assert s.dimensions == {
        "format": 30.0,
        "diversity": 30.0,
        "hyde": 20.0,
        "quality": 20.0,
        "entity": 10.0,
        "think": 20.0,
    }
    assert s.total == 130.0
    assert s.max_score == 140
    assert s.percentage == 92.9
    assert s.rating == "Excellent"
    assert s.deductions == []


def test_perfect_output_without_hyde_scores_110_of_120() -> None:
    # as above without hyde: 30 + 30 + 0 + 20 + 10 + 20 = 110; 110 / 120 * 100 = 91.666... -> 91.7
    s = score(Q, PERFECT_NO_HYDE)
    assert s.total == 110.0
    assert s.max_score == 120
    assert s.percentage == 91.7
    assert "missing hyde:" in s.deductions


# ---------------------------------------------------------------- s3 format


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PERFECT_NO_HYDE, 30.0),  # 10 + 10 + 10
        (f"lex: {LEX1}", 20.0),  # 10 + 10
        (f"vec: {VEC1}", 20.0),  # 10 + 10
        (f"hyde: {HYDE}", 10.0),
        ("", 10.0),
    ],
    ids=["lex+vec", "lex-only", "vec-only", "hyde-only", "empty"],
)
def test_format_is_10_plus_10_per_present_lex_and_vec(text: str, expected: float) -> None:
    assert dims(Q, text)["format"] == expected


def test_missing_kinds_are_listed_in_deductions() -> None:
    s = score(Q, f"hyde: {HYDE}")
    assert {"missing lex:", "missing vec:"} <= set(s.deductions)
    assert "missing hyde:" in score(Q, f"lex: {LEX1}").deductions


# ---------------------------------------------------------------- s3 diversity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 10 (both) + 5 (2 lines) + 5 + 5 + 5
        (f"lex: {LEX1}\nvec: {VEC1}", 30.0),
        # lex only, 2 diverse lines: 0 + 5 + 5 + 5 (no vec pairs) + 5 = 20
        (f"lex: {LEX1}\nlex: {LEX2}", 20.0),
        # one lex line: 0 + 0 (1 line) + 5 + 5 + 5 = 15
        (f"lex: {LEX1}", 15.0),
        # nothing: 0 + 0 + 5 + 5 + 5 = 15
        (f"hyde: {HYDE}", 15.0),
    ],
    ids=["lex+vec", "two-lex", "one-lex", "no-lex-vec"],
)
def test_diversity_presence_and_count_points(text: str, expected: float) -> None:
    assert dims(Q, text)["diversity"] == expected


def test_diversity_subtracts_2_per_non_diverse_lex_pair() -> None:
    # "auth settings" is a substring of "auth settings file": 1 lex pair.
    # 10 + 5 + (5 - 2) + 5 + 5 = 28
    s = score(Q, f"lex: auth settings\nlex: {LEX1}\nvec: {VEC1}")
    assert s.dimensions["diversity"] == 28.0
    assert "1 lex pair(s) too similar" in s.deductions


def test_diversity_lex_pair_points_are_floored_at_0() -> None:
    # 4 identical lex lines: 6 pairs, max(0, 5 - 12) = 0. 10 + 5 + 0 + 5 + 5 = 25
    text = "\n".join([f"lex: {LEX1}"] * 4) + f"\nvec: {VEC1}"
    assert dims(Q, text)["diversity"] == 25.0


def test_diversity_uses_d2_for_lex_and_d3_for_vec() -> None:
    a, b = "how to set auth settings", "how to set auth options"  # symmetric difference 2
    # As lex: diverse with d=2 -> 5. As vec: not diverse with d=3 -> 5 - 2 = 3.
    # lex {a, b} + vec VEC1: 10 + 5 + 5 + 5 + 5 = 30
    assert dims(Q, f"lex: {a}\nlex: {b}\nvec: {VEC1}")["diversity"] == 30.0
    # lex LEX1 + vec {a, b}: 10 + 5 + 5 + 3 + 5 = 28
    s = score(Q, f"lex: {LEX1}\nvec: {a}\nvec: {b}")
    assert s.dimensions["diversity"] == 28.0
    assert "1 vec pair(s) too similar" in s.deductions


def test_diversity_vec_pair_points_are_floored_at_0() -> None:
    # 3 identical vec lines: 3 pairs, max(0, 5 - 6) = 0. 10 + 5 + 5 + 0 + 5 = 25
    text = f"lex: {LEX1}\n" + "\n".join([f"vec: {VEC1}"] * 3)
    assert dims(Q, text)["diversity"] == 25.0


def test_lex_echo_costs_10_diversity_points() -> None:
    # echo term 5 - 10 x 1 = -5. 10 + 5 + 5 + 5 - 5 = 20
    s = score(Q, f"lex: auth config\nvec: {VEC1}")
    assert s.dimensions["diversity"] == 20.0
    assert "lex echoes query: auth config" in s.deductions


def test_vec_echo_costs_3_diversity_points() -> None:
    # "Auth Config" echoes (equal after lower): 5 - 3 = 2. 10 + 5 + 5 + 5 + 2 = 27
    s = score(Q, f"lex: {LEX1}\nvec: Auth Config")
    assert s.dimensions["diversity"] == 27.0
    assert "vec echoes query: Auth Config" in s.deductions


def test_lex_and_vec_echo_penalties_add_up() -> None:
    # 5 - 10 - 3 = -8. 10 + 5 + 5 + 5 - 8 = 17
    assert dims(Q, "lex: auth config\nvec: auth config")["diversity"] == 17.0


def test_echo_term_is_floored_at_minus_10() -> None:
    # lex "auth config" (equal) and "auth config options" (19 < 11 + 10): both echo.
    # "auth config" is a substring of the other: 1 lex pair -> 5 - 2 = 3.
    # 0 (no vec) + 5 (2 lines) + 3 + 5 (no vec pairs) + max(-10, 5 - 20 = -15) = 3
    # (without the floor it would be -2)
    s = score(Q, "lex: auth config\nlex: auth config options")
    assert s.dimensions["diversity"] == 3.0


def test_echo_term_with_many_echoing_lines() -> None:
    # vec only, 4 identical echoing lines: 0 (no lex) + 5 + 5 (no lex pairs) + max(0, 5 - 2 x 6) = 0
    # + max(-10, 5 - 3 x 4) = -7 -> 5 + 5 + 0 - 7 = 3 (not floored)
    s = score(Q, "\n".join(["vec: auth config"] * 4))
    assert s.dimensions["diversity"] == 3.0
    # lex only, 3 identical echoing lines: 0 + 5 + max(0, 5 - 2 x 3) = 0 + 5 (no vec pairs)
    # + max(-10, 5 - 10 x 3 = -25) = -10 -> 0
    s = score(Q, "\n".join(["lex: auth config"] * 3))
    assert s.dimensions["diversity"] == 0.0


# ---------------------------------------------------------------- s3 hyde


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (50, 20.0),  # 5 + 5 + 5 + 5
        (120, 20.0),
        (200, 20.0),
        (49, 17.0),  # 5 + 2 + 5 + 5
        (10, 17.0),
        (201, 15.0),  # 5 + 0 + 5 + 5
        (400, 15.0),
    ],
)
def test_hyde_length_bands(length: int, expected: float) -> None:
    s = score(Q, f"hyde: {text_of_length(length)}\n{PERFECT_NO_HYDE}")
    assert s.dimensions["hyde"] == expected
    assert s.max_score == 140


def test_hyde_too_short_and_too_long_are_deductions() -> None:
    assert "hyde too short (49)" in score(Q, f"hyde: {text_of_length(49)}").deductions
    assert "hyde too long (214)" in score(Q, f"hyde: {text_of_length(214)}").deductions


def test_hyde_is_scored_on_the_first_hyde_line_only() -> None:
    # first hyde 49 characters -> 17, the 120-character second one is ignored
    text = f"hyde: {text_of_length(49)}\nhyde: {text_of_length(120)}"
    assert dims(Q, text)["hyde"] == 17.0


def test_hyde_repetition_penalty_is_subtracted_from_5() -> None:
    hyde = "Redis keeps a cache in memory; the cache expires keys and a cache miss reloads data"
    assert len(hyde) == 83
    # "cache" x3 -> penalty 2: 5 + 5 + 5 + (5 - 2) = 18
    s = score(Q, f"hyde: {hyde}")
    assert s.dimensions["hyde"] == 18.0
    assert "hyde repeats words (penalty 2)" in s.deductions


def test_hyde_repetition_points_are_floored_at_0() -> None:
    hyde = "cache cache cache cache cache warms the redis memory layer quickly"
    assert len(hyde) == 66
    # "cache" x5 -> penalty 6: 5 + 5 + 5 + max(0, 5 - 6) = 15
    assert dims(Q, f"hyde: {hyde}")["hyde"] == 15.0


def test_no_hyde_line_gives_0_hyde_points_and_max_120() -> None:
    s = score(Q, PERFECT_NO_HYDE)
    assert s.dimensions["hyde"] == 0.0
    assert s.max_score == 120


# ---------------------------------------------------------------- s3 quality


def test_quality_all_branches_at_best() -> None:
    # lex "auth settings file" (18) and vec "how to set up auth" (18): 18 <= 18 -> +5 (boundary)
    # 5 + 5 + 5 (natural) + 5 (keeps "auth") = 20
    assert dims(Q, f"lex: {LEX1}\nvec: how to set up auth")["quality"] == 20.0


def test_quality_lex_longer_than_vec_on_average_gets_no_length_points() -> None:
    # lex 27 chars > vec 18: 5 + 0 + 5 + 5 = 15
    s = score(Q, "lex: auth settings file location\nvec: how to set up auth")
    assert s.dimensions["quality"] == 15.0
    assert "lex lines longer than vec lines on average" in s.deductions


def test_quality_compares_mean_lengths_not_longest_lines() -> None:
    # lex "auth" (4) and "config file location details" (28): mean 16 <= vec 18 -> +5
    # 5 + 5 + 5 + 5 = 20
    assert dims(Q, "lex: auth\nlex: config file location details\nvec: how to set up auth")["quality"] == 20.0


def test_quality_vec_natural_all_5_else_2() -> None:
    # vec "how to set up auth" (18) and "auth" (4, no space): mean 11; lex 18 > 11 -> +0
    # 5 + 0 + 2 (not all natural) + 5 = 12
    s = score(Q, f"lex: {LEX1}\nvec: how to set up auth\nvec: auth")
    assert s.dimensions["quality"] == 12.0
    assert "vec not natural language: auth" in s.deductions


def test_quality_lex_key_terms_all_5_some_2_none_0() -> None:
    # vec only to fix the other branches: lex (mean 13-18) <= vec 44 -> +5, natural +5
    base = f"\nvec: {VEC1}"
    # all keep: 5 + 5 + 5 + 5 = 20
    assert dims(Q, f"lex: {LEX1}\nlex: {LEX2}" + base)["quality"] == 20.0
    # some keep ("login methods" has neither auth nor config): 5 + 5 + 5 + 2 = 17
    s = score(Q, f"lex: {LEX1}\nlex: login methods" + base)
    assert s.dimensions["quality"] == 17.0
    assert "some lex lines miss the query's key terms" in s.deductions
    # none keep: 5 + 5 + 5 + 0 = 15
    s = score(Q, "lex: login methods\nlex: session tokens" + base)
    assert s.dimensions["quality"] == 15.0
    assert "no lex line keeps the query's key terms" in s.deductions


def test_quality_lex_keeps_key_terms_when_query_has_none() -> None:
    # key terms of "how do I" are empty, so every lex keeps them: 5 + 5 + 5 + 5 = 20
    assert dims("how do I", f"lex: zebra stripes\nvec: {VEC1}")["quality"] == 20.0


def test_quality_without_lex_or_vec() -> None:
    assert dims(Q, f"lex: {LEX1}")["quality"] == 10.0  # 5 + 5 (keeps key terms)
    assert dims(Q, f"vec: {VEC1}")["quality"] == 10.0  # 5 + 5 (natural)
    assert dims(Q, "vec: auth")["quality"] == 7.0  # 5 + 2 (not natural)
    assert dims(Q, f"hyde: {HYDE}")["quality"] == 5.0


# ---------------------------------------------------------------- s3 entity

TDS = "who is TDS motorsports"  # entities {"tds", "motorsports"} (rule 1, then rule 5)


def test_tds_query_entities() -> None:
    assert extract_entities(TDS) == {"tds", "motorsports"}


def test_entity_all_lex_contain_one_15_plus_5_for_vec() -> None:
    # 15 (both lex have "tds") + 5 (vec has "tds") = 20
    assert dims(TDS, "lex: TDS history\nlex: TDS founders\nvec: who founded TDS racing")["entity"] == 20.0


def test_entity_no_vec_bonus_without_an_entity_in_a_vec_line() -> None:
    s = score(TDS, "lex: TDS history\nlex: TDS founders\nvec: who founded the racing team")
    assert s.dimensions["entity"] == 15.0
    assert "no vec line keeps an entity" in s.deductions
    # no vec at all: 15
    assert dims(TDS, "lex: TDS history\nlex: TDS founders")["entity"] == 15.0


def test_entity_some_lex_contain_one_5() -> None:
    s = score(TDS, "lex: TDS history\nlex: racing team founders")
    assert s.dimensions["entity"] == 5.0
    assert any(d.startswith("some lex lines miss entities") for d in s.deductions)


def test_entity_no_lex_contains_one_minus_30_shown_as_0_but_counted_raw() -> None:
    # lex "racing history" (14), "team founders" (13); vec VEC2 (37) without an entity.
    # format 30; diversity 10 + 5 + 5 + 5 + 5 = 30; hyde 0;
    # quality 5 + 5 (mean lex 13.5 <= 37) + 5 (natural) + 0 (no lex keeps tds/motorsports) = 15
    # entity -30; think 20. total = 30 + 30 + 15 - 30 + 20 = 65; 65 / 120 * 100 = 54.166... -> 54.2
    s = score(TDS, f"lex: racing history\nlex: team founders\nvec: {VEC2}")
    assert s.dimensions["entity"] == 0.0  # reported floored at 0
    assert s.total == 65.0
    assert s.percentage == 54.2
    assert s.rating == "Acceptable"
    assert any(d.startswith("no lex line keeps entities") for d in s.deductions)


def test_entity_minus_15_per_generic_lex_line() -> None:
    # lex "TDS history" (has entity), "search for", "look up" (generic, no entity): some -> 5
    # 5 - 15 x 2 = -25 ... vec with entity +5 -> -20 (shown 0).
    # format 30; diversity 10 + 5 + 5 (lex pairs all diverse) + 5 + 5 = 30; hyde 0;
    # quality 5 + 5 (mean lex (11 + 10 + 7)/3 = 9.33 <= 27) + 5 + 2 (only "TDS history" keeps) = 17
    # think 20. total = 30 + 30 + 17 - 20 + 20 = 77; 77 / 120 * 100 = 64.166... -> 64.2
    text = "lex: TDS history\nlex: search for\nlex: look up\nvec: who founded TDS motorsports"
    s = score(TDS, text)
    assert len("who founded TDS motorsports") == 27
    assert s.dimensions["entity"] == 0.0
    assert s.total == 77.0
    assert s.percentage == 64.2
    assert "generic lex: search for" in s.deductions
    assert "generic lex: look up" in s.deductions


def test_entity_generic_penalty_applies_even_when_lex_has_the_entity() -> None:
    # query "install Go": entities {"go"} (rule 2). Both lex lines contain "go" -> 15;
    # "go search for" is generic ("search for" removed leaves "go", 2 characters) -> 15 - 15 = 0.
    s = score("install Go", "lex: go search for\nlex: Go modules")
    assert extract_entities("install Go") == {"go"}
    assert s.dimensions["entity"] == 0.0
    # the vec bonus lifts it: 0 + 5 = 5
    assert (
        dims("install Go", "lex: go search for\nlex: Go modules\nvec: how Go modules work")["entity"] == 5.0
    )


def test_entity_substring_match_counts_for_lex_and_vec() -> None:
    # "go" is a substring of "google" and "golang": all lex contain it (15) + vec (5) = 20
    text = "lex: google cloud sdk\nlex: golang install\nvec: installing packages on a google vm"
    assert dims("install Go", text)["entity"] == 20.0


def test_entity_is_10_when_the_query_has_no_entities() -> None:
    assert dims(Q, PERFECT)["entity"] == 10.0
    assert dims(Q, f"vec: {VEC1}")["entity"] == 10.0
    assert dims(Q, "")["entity"] == 10.0


def test_entity_is_0_when_entities_but_no_lex() -> None:
    # a vec with the entity gives nothing without lex lines
    assert dims(TDS, "vec: information about TDS motorsports company")["entity"] == 0.0


def test_total_is_reported_floored_at_0_and_percentage_clamped_at_0() -> None:
    # lex "search for", "look up", "learn about", "help with": all generic, none has an entity.
    # format 20 (lex only); diversity 0 (no vec) + 5 + 5 (all pairs diverse) + 5 + 5 = 20;
    # hyde 0; quality 5 + 0 (no lex keeps tds/motorsports) = 5
    # entity -30 - 15 x 4 = -90; think 20. total = 20 + 20 + 5 - 90 + 20 = -25 -> percentage 0.0
    s = score(TDS, "lex: search for\nlex: look up\nlex: learn about\nlex: help with")
    assert s.dimensions["format"] == 20.0
    assert s.dimensions["diversity"] == 20.0
    assert s.dimensions["quality"] == 5.0
    assert s.dimensions["entity"] == 0.0
    assert s.total == 0.0
    assert s.percentage == 0.0
    assert s.rating == "Failed"
    assert s.hard_failure is None
    assert s.reward == 0.0


# ---------------------------------------------------------------- s3 max, echo cap, rounding


def test_lex_echo_caps_percentage_at_50() -> None:
    # hyde + lex "auth config" (echo) + LEX1 + VEC1 + VEC2:
    # format 30; diversity 10 + 5 + 5 (sym diff {config, settings, file} = 3) + 5 + (5 - 10) = 20
    # hyde 20; quality 5 + 5 (mean lex 14.5 <= 40.5) + 5 + 5 = 20; entity 10; think 20
    # total 120; 120 / 140 * 100 = 85.714... -> capped at 50.0
    text = lines(("hyde", HYDE), ("lex", "auth config"), ("lex", LEX1), ("vec", VEC1), ("vec", VEC2))
    s = score(Q, text)
    assert s.total == 120.0
    assert s.percentage == 50.0
    assert s.rating == "Acceptable"
    assert reward(Q, text) == 0.5  # the cap applies to the reward too (not 120/140 = 0.857)


def test_lex_echo_cap_leaves_lower_percentages_alone() -> None:
    # lex "auth config" alone: format 20; diversity 0 + 0 + 5 + 5 - 5 = 5; quality 5 + 5 = 10;
    # entity 10; think 20. total 65; 65 / 120 * 100 = 54.166... -> cap -> 50.0
    assert score(Q, "lex: auth config").percentage == 50.0
    # with two echoing lex lines (test_echo_term_is_floored_at_minus_10): diversity 3,
    # format 20, quality 5 + 5 = 10, entity 10, think 20: total 63 -> 52.5 -> cap 50.0
    assert score(Q, "lex: auth config\nlex: auth config options").percentage == 50.0
    # under 50 stays: think block and echo: 65 - 20 = 45 -> 45 / 120 = 37.5
    assert score(Q, "<think>x</think>lex: auth config").percentage == 37.5


def test_vec_echo_does_not_cap_the_percentage() -> None:
    # lex LEX1, LEX2; vec VEC1 (44) and "Auth Config" (11: an echo, not natural):
    # format 30; diversity 10 + 5 + 5 + 5 + (5 - 3) = 27; quality 5 + 5 (18 <= 27.5) + 2 + 5 = 17;
    # entity 10; think 20. total 104; 104 / 120 * 100 = 86.666... -> 86.7 (no cap)
    s = score(Q, lines(("lex", LEX1), ("lex", LEX2), ("vec", VEC1), ("vec", "Auth Config")))
    assert s.total == 104.0
    assert s.percentage == 86.7


def test_percentage_is_rounded_to_one_decimal() -> None:
    # hyde only: format 10; diversity 15; hyde 20; quality 5; entity 10; think 20 = 80
    # 80 / 140 * 100 = 57.142857... -> 57.1
    s = score(Q, f"hyde: {HYDE}")
    assert s.total == 80.0
    assert s.percentage == 57.1
    # empty text: 10 + 15 + 0 + 5 + 10 + 20 = 60; 60 / 120 * 100 = 50.0
    assert score(Q, "").percentage == 50.0


def test_percentage_never_exceeds_100() -> None:
    for query, text in [(Q, PERFECT), ("who is TDS motorsports", EXAMPLE_1_TEXT)]:
        assert 0.0 <= score(query, text).percentage <= 100.0


# ---------------------------------------------------------------- s4 only mode

QL, QV, QH = "auth config /only:lex", "auth config /only:vec", "auth config /only:hyde"


@pytest.mark.parametrize(
    ("query", "text"),
    [
        (QL, f"vec: {VEC1}\nhyde: {HYDE}"),
        (QV, f"lex: {LEX1}"),
        (QH, f"lex: {LEX1}\nvec: {VEC1}"),
        (QL, ""),
    ],
)
def test_only_mode_without_the_requested_kind_is_failed_0(query: str, text: str) -> None:
    s = score(query, text)
    assert s.percentage == 0.0
    assert s.rating == "Failed"
    assert s.hard_failure is not None
    assert s.dimensions == dict.fromkeys(DIMENSION_NAMES, 0.0)
    assert s.reward == 0.0


def test_only_lex_perfect_scores_110_of_120() -> None:
    # format 30; diversity 15 + 15 (0 pairs) = 30; quality 10 + 5 (key terms) + 5 (none generic) = 20;
    # entity 10 (no entities); think 20. total 110; 110 / 120 * 100 = 91.666... -> 91.7
    s = score(QL, f"lex: {LEX1}\nlex: {LEX2}")
    assert s.dimensions == {
        "format": 30.0,
        "diversity": 30.0,
        "hyde": 0.0,
        "quality": 20.0,
        "entity": 10.0,
        "think": 20.0,
    }
    assert s.total == 110.0
    assert s.max_score == 120
    assert s.percentage == 91.7
    assert s.only_type == "lex"


@pytest.mark.parametrize(
    ("others", "expected"),
    [(0, 30.0), (1, 20.0), (2, 10.0), (3, 0.0), (5, 0.0)],
)
def test_only_mode_format_loses_10_per_other_kind_line_floored_at_0(others: int, expected: float) -> None:
    other_lines = [f"vec: {VEC1}", f"hyde: {HYDE}", f"vec: {VEC2}", "vec: login help desk", f"hyde: {HYDE}"]
    text = "\n".join([f"lex: {LEX1}", f"lex: {LEX2}", *other_lines[:others]])
    s = score(QL, text)
    assert s.dimensions["format"] == expected
    if others:
        assert f"{others} line(s) of other kinds in /only:lex" in s.deductions


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([LEX1, LEX2], 30.0),  # 15 + max(0, 15 - 0)
        ([LEX1], 15.0),  # exactly one item
        (["auth settings", LEX1], 25.0),  # substring: 1 pair -> 15 + (15 - 5)
        ([LEX1] * 3, 15.0),  # 3 pairs -> 15 + max(0, 15 - 15) = 15
        ([LEX1] * 4, 15.0),  # 6 pairs -> 15 + max(0, 15 - 30) = 15
    ],
)
def test_only_mode_diversity_pairs(items: list[str], expected: float) -> None:
    assert dims(QL, "\n".join(f"lex: {i}" for i in items))["diversity"] == expected


def test_only_mode_diversity_uses_d2_for_every_kind() -> None:
    # symmetric difference 2: diverse for d=2 (normal mode would use d=3 for vec)
    # 15 + 15 = 30
    assert dims(QV, "vec: how to set auth settings\nvec: how to set auth options")["diversity"] == 30.0


def test_only_mode_echo_costs_5_per_item() -> None:
    # one item, echoing: 15 - 5 = 10
    assert dims(QL, "lex: auth config")["diversity"] == 10.0
    # two items, both echo ("auth config" and "auth config options", 1 pair):
    # 15 + (15 - 5) = 25, - 5 x 2 = 15
    assert dims(QL, "lex: auth config\nlex: auth config options")["diversity"] == 15.0


def test_only_mode_diversity_is_floored_at_0() -> None:
    # 4 identical echoing items: 15 + max(0, 15 - 30) = 15; 15 - 5 x 4 = -5 -> 0
    assert dims(QL, "\n".join(["lex: auth config"] * 4))["diversity"] == 0.0


def test_only_mode_has_no_echo_cap() -> None:
    # lex "auth config" (echo) + LEX1: format 30; diversity 15 + 15 - 5 = 25;
    # quality 10 + 5 + 5 = 20; entity 10; think 20. total 105; 105 / 120 * 100 = 87.5 (not capped at 50)
    s = score(QL, f"lex: auth config\nlex: {LEX1}")
    assert s.total == 105.0
    assert s.percentage == 87.5
    assert s.rating == "Excellent"
    assert reward(QL, f"lex: auth config\nlex: {LEX1}") == 0.875


def test_only_lex_quality_key_terms_and_generic() -> None:
    # all keep, none generic: 10 + 5 + 5 = 20
    assert dims(QL, f"lex: {LEX1}\nlex: {LEX2}")["quality"] == 20.0
    # one misses the key terms: only "all" earns the 5 -> 10 + 0 + 5 = 15
    assert dims(QL, f"lex: {LEX1}\nlex: login methods")["quality"] == 15.0
    # one generic ("search for"; it also misses the key terms): 10 + 0 + 0 = 10
    s = score(QL, f"lex: {LEX1}\nlex: search for")
    assert s.dimensions["quality"] == 10.0
    assert "generic lex: search for" in s.deductions
    # generic but keeping the key term: query "go /only:lex", lex "go search for" keeps "go" and is
    # generic ("search for" removed leaves "go"); "go modules" is neither: 10 + 5 + 0 = 15
    assert dims("go /only:lex", "lex: go search for\nlex: go modules")["quality"] == 15.0


def test_only_vec_quality_natural() -> None:
    assert dims(QV, f"vec: {VEC1}\nvec: {VEC2}")["quality"] == 20.0  # 10 + 10
    assert dims(QV, f"vec: {VEC1}\nvec: auth setup")["quality"] == 15.0  # 10 + 5 ("auth setup" 10 chars)


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (50, 20.0),  # 10 + 10
        (200, 20.0),
        (49, 15.0),  # 10 + 5 (30..300)
        (30, 15.0),
        (201, 15.0),
        (300, 15.0),
        (29, 10.0),  # 10
        (301, 10.0),
    ],
)
def test_only_hyde_quality_length_bands(length: int, expected: float) -> None:
    s = score(QH, f"hyde: {text_of_length(length)}\nhyde: {HYDE}")  # first item is scored
    assert s.dimensions["quality"] == expected
    assert s.dimensions["hyde"] == 0.0  # only mode has no hyde dimension
    assert s.max_score == 120


def test_only_mode_entity_10_without_entities() -> None:
    assert dims(QL, f"lex: {LEX1}")["entity"] == 10.0


def test_only_mode_entity_all_20_some_15_none_0() -> None:
    q = "who is TDS motorsports /only:lex"
    assert dims(q, "lex: TDS history\nlex: TDS founders")["entity"] == 20.0
    assert dims(q, "lex: TDS history\nlex: racing founders")["entity"] == 15.0
    s = score(q, "lex: racing history\nlex: team founders")
    assert s.dimensions["entity"] == 0.0
    assert any(d.startswith("no lex line keeps entities") for d in s.deductions)


def test_only_mode_entity_counts_only_the_requested_kind() -> None:
    # the vec line has the entity but only lex items are checked: none -> 0
    q = "who is TDS motorsports /only:lex"
    assert dims(q, "lex: racing history\nvec: who founded TDS motorsports")["entity"] == 0.0


def test_only_mode_think_bonus() -> None:
    # 110 - 20 = 90; 90 / 120 * 100 = 75.0
    s = score(QL, f"<think>plan</think>\nlex: {LEX1}\nlex: {LEX2}")
    assert s.dimensions["think"] == 0.0
    assert s.used_thinking is True
    assert s.percentage == 75.0
    assert s.rating == "Good"


def test_only_mode_percentage_is_over_120_and_rounded() -> None:
    # only:vec with VEC1 only: format 30; diversity 15; quality 10 + 10 = 20; entity 10; think 20
    # total 95; 95 / 120 * 100 = 79.1666... -> 79.2 (Good, just under Excellent)
    s = score(QV, f"vec: {VEC1}")
    assert s.total == 95.0
    assert s.percentage == 79.2
    assert s.rating == "Good"
    # only:hyde, hyde 29 chars, 3 other-kind lines: format 0; diversity 15; quality 10;
    # entity 10; think 20 -> 55 / 120 * 100 = 45.833... -> 45.8
    text = f"hyde: {text_of_length(29)}\nlex: {LEX1}\nvec: {VEC1}\nvec: {VEC2}"
    assert score(QH, text).percentage == 45.8


# ---------------------------------------------------------------- s5 rating and reward


@pytest.mark.parametrize(
    ("percentage", "rating"),
    [
        (100.0, "Excellent"),
        (80.0, "Excellent"),
        (79.9, "Good"),
        (60.0, "Good"),
        (59.9, "Acceptable"),
        (40.0, "Acceptable"),
        (39.9, "Poor"),
        (20.0, "Poor"),
        (19.9, "Failed"),
        (0.0, "Failed"),
    ],
)
def test_rating_thresholds(percentage: float, rating: str) -> None:
    assert rating_for(percentage) == rating


def test_rating_poor_from_a_real_score() -> None:
    # TDS query, lex "racing history", "team founders" (no entity, no key term), no vec:
    # format 20; diversity 0 + 5 + 5 + 5 + 5 = 20; hyde 0; quality 5 + 0 = 5; entity -30; think 20
    # total = 20 + 20 + 5 - 30 + 20 = 35; 35 / 120 * 100 = 29.166... -> 29.2 (Poor)
    s = score(TDS, "lex: racing history\nlex: team founders")
    assert s.percentage == 29.2
    assert s.rating == "Poor"


@pytest.mark.parametrize(
    ("query", "text"),
    [
        (Q, PERFECT),
        (Q, PERFECT_NO_HYDE),
        (Q, "lex: auth config"),
        (QL, f"lex: {LEX1}"),
        (Q, "auth is important"),
    ],
)
def test_reward_is_percentage_over_100(query: str, text: str) -> None:
    s = score(query, text)
    assert reward(query, text) == s.percentage / 100
    assert s.reward == s.percentage / 100


def test_score_to_dict_carries_the_breakdown() -> None:
    d = score(Q, PERFECT).to_dict()
    assert d["percentage"] == 92.9
    assert d["max"] == 140
    assert d["items"] == {"hyde": [HYDE], "lex": [LEX1, LEX2], "vec": [VEC1, VEC2]}
    assert set(d["dimensions"]) == set(DIMENSION_NAMES)


# ---------------------------------------------------------------- s6 examples

EXAMPLE_1_TEXT = lines(
    ("lex", "TDS motorsports history"),
    ("lex", "TDS motorsports founders"),
    ("vec", "information about TDS motorsports company"),
)
EXAMPLE_2_TEXT = lines(
    ("lex", "find information about"),
    ("lex", "company details"),
    ("vec", "who is this company"),
)


def test_spec_example_1_tds_motorsports_is_100_excellent() -> None:
    # format 30
    # diversity 10 + 5 + 5 (lex pair sym diff {history, founders} = 2 >= 2) + 5 + 5 (no echo) = 30
    # hyde 0 (max 120)
    # quality 5 + 5 (mean lex 23.5 <= 41) + 5 (natural) + 5 (all keep tds/motorsports) = 20
    # entity 15 (all lex contain "tds") + 5 (vec contains it) = 20; think 20
    # total 120; 120 / 120 * 100 = 100.0
    s = score(TDS, EXAMPLE_1_TEXT)
    assert s.dimensions == {
        "format": 30.0,
        "diversity": 30.0,
        "hyde": 0.0,
        "quality": 20.0,
        "entity": 20.0,
        "think": 20.0,
    }
    assert s.percentage == 100.0
    assert s.rating == "Excellent"
    assert s.reward == 1.0


def test_spec_example_2_generic_lex_is_41_7_acceptable() -> None:
    # format 30
    # diversity 10 + 5 + 5 (sym diff 5) + 5 + 5 = 30
    # hyde 0 (max 120)
    # quality 5 + 5 (mean lex (22 + 15) / 2 = 18.5 <= 19) + 5 (19 chars, natural) + 0 (no key term) = 15
    # entity -30 (no lex has tds/motorsports) - 15 ("find information about" generic) = -45;
    #   "company details" is not generic; vec has no entity -> no +5
    # think 20
    # total = 30 + 30 + 0 + 15 - 45 + 20 = 50; 50 / 120 * 100 = 41.666... -> 41.7
    s = score(TDS, EXAMPLE_2_TEXT)
    assert s.dimensions["quality"] == 15.0
    assert s.dimensions["entity"] == 0.0  # -45 shown floored at 0
    assert s.total == 50.0
    assert s.percentage == 41.7
    assert s.rating == "Acceptable"
    assert "generic lex: find information about" in s.deductions
    assert any(d.startswith("no lex line keeps entities") for d in s.deductions)
    assert "no lex line keeps the query's key terms" in s.deductions


def test_spec_example_3_unprefixed_output_is_0_failed() -> None:
    s = score("auth", "auth is important for security")
    assert s.percentage == 0.0
    assert s.rating == "Failed"
    assert s.hard_failure == "invalid line: auth is important for security"
    assert s.deductions == ["invalid line: auth is important for security"]


# ---------------------------------------------------------------- TRL GRPO reward function


def test_grpo_reward_with_plain_string_prompts() -> None:
    prompts = [
        "/no_think Expand this search query: auth config",
        "/no_think Expand this search query: who is TDS motorsports",
    ]
    completions = [PERFECT, EXAMPLE_2_TEXT]
    rewards = grpo_reward(prompts, completions)
    # 92.9 / 100 and 41.7 / 100 (spec example 2)
    assert rewards == pytest.approx([0.929, 0.417], abs=1e-12)
    assert all(isinstance(r, float) for r in rewards)


def test_grpo_reward_with_conversational_prompts_and_completions() -> None:
    prompts = [
        [
            {"role": "system", "content": "You expand search queries."},
            {"role": "user", "content": "/no_think Expand this search query: who is TDS motorsports"},
        ]
    ]
    completions = [[{"role": "assistant", "content": EXAMPLE_1_TEXT}]]
    assert grpo_reward(prompts, completions) == pytest.approx([1.0], abs=1e-12)


def test_grpo_reward_query_column_wins_over_prompt_parsing() -> None:
    prompts = ["/no_think Expand this search query: something else entirely"]
    rewards = grpo_reward(prompts, [EXAMPLE_2_TEXT], query=["who is TDS motorsports"])
    assert rewards == pytest.approx([0.417], abs=1e-12)


def test_grpo_reward_accepts_the_keywords_trl_passes() -> None:
    # GRPOTrainer calls reward_func(prompts=..., completions=..., completion_ids=..., **reward_kwargs)
    # with the dataset's extra columns plus trainer_state, log_extra and log_metric.
    prompts = ["/no_think Expand this search query: auth config"] * 2
    completions = [PERFECT, "auth is important"]
    rewards = grpo_reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1, 2, 3], [4, 5]],
        trainer_state=None,
        log_extra=lambda *a, **k: None,
        log_metric=lambda *a, **k: None,
        category=["tech", "tech"],
    )
    assert rewards == pytest.approx([0.929, 0.0], abs=1e-12)
    assert isinstance(grpo_reward.__name__, str) and grpo_reward.__name__


def test_grpo_reward_applies_the_echo_cap() -> None:
    text = lines(("hyde", HYDE), ("lex", "auth config"), ("lex", LEX1), ("vec", VEC1), ("vec", VEC2))
    assert grpo_reward(["Expand this search query: auth config"], [text]) == pytest.approx([0.5], abs=1e-12)


@pytest.mark.parametrize(
    ("prompt", "query"),
    [
        ("/no_think Expand this search query: auth config", "auth config"),
        ("Expand this search query: auth config /only:lex", "auth config /only:lex"),
        (
            "<|im_start|>user\n/no_think Expand this search query: auth config<|im_end|>\n<|im_start|>assistant\n",
            "auth config",
        ),
        (
            "<|im_start|>system\nYou expand search queries.<|im_end|>\n"
            "<|im_start|>user\n/no_think Expand this search query: who is TDS motorsports<|im_end|>\n"
            "<|im_start|>assistant\n",
            "who is TDS motorsports",
        ),
        ([{"role": "user", "content": "Expand this search query: auth config"}], "auth config"),
        (
            [
                {"role": "user", "content": "Expand this search query: first"},
                {"role": "assistant", "content": "lex: first"},
                {"role": "user", "content": "Expand this search query: second one"},
            ],
            "second one",
        ),
    ],
    ids=["plain", "only-suffix", "chat-template", "chat-template-system", "conversational", "last-user"],
)
def test_query_from_prompt(prompt: object, query: str) -> None:
    assert query_from_prompt(prompt) == query


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


def _per_row(pairs: list[tuple[str, str]]) -> list[tuple[float, str, list[str]]]:
    out = []
    for query, text in pairs:
        s = score(query, text)
        out.append((s.percentage, s.rating, s.deductions))
    return out


def test_score_pairs_matches_per_row_score_on_reference_data(reference_rows) -> None:
    _, pairs = reference_rows
    assert len(pairs) > 3000
    assert score_pairs(pairs, workers=1) == _per_row(pairs)


def test_score_pairs_with_two_workers_matches_per_row_score(reference_rows) -> None:
    _, pairs = reference_rows
    # score_pairs uses the process pool from 2000 unique pairs up: make sure that path runs
    assert len(set(pairs)) >= 2000
    assert score_pairs(pairs, workers=2) == _per_row(pairs)


def test_score_frame_matches_per_row_score_on_reference_data(reference_rows) -> None:
    frame, pairs = reference_rows
    expected = _per_row(pairs)
    for workers in (1, 2):
        scored = score_frame(frame, workers=workers)
        assert scored.height == frame.height
        assert scored.get_column("score").to_list() == [e[0] for e in expected]
        assert scored.get_column("rating").to_list() == [e[1] for e in expected]
        assert scored.get_column("deductions").to_list() == [e[2] for e in expected]


def test_score_pairs_duplicates_get_the_same_result_in_order() -> None:
    pairs = [(Q, PERFECT), ("auth", "auth is important"), (Q, PERFECT), (TDS, EXAMPLE_2_TEXT)]
    results = score_pairs(pairs, workers=1)
    assert [r[0] for r in results] == [92.9, 0.0, 92.9, 41.7]


def test_score_frame_on_an_empty_frame_adds_the_columns() -> None:
    from qmd_finetune.io import empty_frame

    scored = score_frame(empty_frame())
    assert scored.height == 0
    assert {"score", "rating", "deductions"} <= set(scored.columns)
