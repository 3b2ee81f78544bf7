"""Each request's JSON is built from message encodings made once per run; it must be the very
JSON the plain encoder writes, or the response cache's keys would change under its users."""

from __future__ import annotations

import hashlib
import json

import pytest

from qmd_finetune.generate.cache import request_key
from qmd_finetune.generate.prompts import load_prompt, messages_json
from qmd_finetune.generate.providers import _chat_body

ODD_MESSAGES = [
    [{"role": "user", "content": [{"type": "text", "text": "parts, not a string"}]}],
    [{"role": "user", "content": "x", "name": None}],
    [{"content": "keys out of order", "role": "user"}],
    ["not a dict"],
    [],
]


def _conversations() -> list[list]:
    prompt = load_prompt()
    queries = [
        "docker compose networking",
        'caf\u00e9 "quoted" \\ back\\slash',
        "tab\there",
        "\u4e2d\u6587 \U0001f600",
    ]
    return [prompt.messages(q) for q in queries] + ODD_MESSAGES


@pytest.mark.parametrize("sort_keys", [True, False])
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_messages_json_is_json_dumps(sort_keys: bool, ensure_ascii: bool) -> None:
    for messages in _conversations() * 2:  # the second pass is served from the encodings made
        assert messages_json(messages, sort_keys=sort_keys, ensure_ascii=ensure_ascii) == json.dumps(
            messages, sort_keys=sort_keys, ensure_ascii=ensure_ascii
        )


def test_request_key_is_unchanged() -> None:
    """The key of a fixed request, computed by the plain json.dumps formula the cache has always
    used: caches written by earlier versions keep their hits."""
    messages = [
        {"role": "system", "content": 'Expand the query.\nUse "lex:" lines'},
        {"role": "user", "content": "caf\u00e9 \u00fcber"},
    ]
    params = {"temperature": 0.7, "max_tokens": 100}
    assert (
        request_key("openai/m", messages, params)
        == "37301bd138db68d385b8f48cc9bace0c086b8de07810e8b02788cfff9b28591e"
    )
    for conversation, params in [(c, params) for c in _conversations()] + [
        (_conversations()[0], {"max_tokens": 100, "temperature": 1}),
        (_conversations()[0], {"max_tokens": 100, "temperature": 1.0}),
        (_conversations()[0], {"max_tokens": 100, "temperature": True}),
        (_conversations()[0], {"temperature": 0.7, "max_tokens": 100}),
        (_conversations()[0], {"max_tokens": 100, "stop": ["\n\n"]}),
    ]:
        plain = json.dumps(
            {"model": "openai/m", "messages": conversation, "params": params},
            sort_keys=True,
            ensure_ascii=False,
        )
        assert (
            request_key("openai/m", conversation, params) == hashlib.sha256(plain.encode("utf-8")).hexdigest()
        )


def test_chat_body_is_the_plain_json_of_the_request() -> None:
    for conversation in _conversations():
        for params in ({"max_tokens": 100, "temperature": 0.0}, {}, {"model": "override"}):
            body = {"model": "m", "messages": conversation, **params}
            assert _chat_body("m", conversation, params) == json.dumps(body).encode("utf-8")


def test_the_cache_row_is_the_redacted_request_json(tmp_path, monkeypatch) -> None:
    """The cache stores each request as the plain encoder writes its redacted form; the writer
    encodes each repeated message once, which must not change a row (or let a secret through)."""
    import sqlite3

    from qmd_finetune.generate.cache import ResponseCache
    from qmd_finetune.redact import redact_value, secret_values

    secret = "sk-test-DO-NOT-LEAK-row-4f3e2d"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    conversations = _conversations() + [
        [{"role": "user", "content": f"my key is {secret}"}],
        [{"role": "user", "content": [{"type": "text", "text": f"Bearer {secret}"}]}],
    ]
    params = {"max_tokens": 100, "temperature": 0.0}
    cache = ResponseCache(tmp_path / "c.sqlite")
    for round_ in range(2):  # the second round's rows come from the encodings made in the first
        for i, conversation in enumerate(conversations):
            cache.put(f"k{round_}-{i}", "m", conversation, params, "lex: a", 1, 1, 0.0)
    cache.close()
    rows = dict(sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT key, request FROM responses"))
    secrets = secret_values()
    for round_ in range(2):
        for i, conversation in enumerate(conversations):
            plain = json.dumps(
                {"messages": redact_value(conversation, secrets), "params": params},
                sort_keys=True,
                ensure_ascii=False,
            )
            assert rows[f"k{round_}-{i}"] == plain
    assert not any(secret in row for row in rows.values())
