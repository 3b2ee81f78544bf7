"""Providers behind one small interface, chosen by LiteLLM-style model string.

- ``local/smollm2``: the embedded model through the batching worker in :mod:`local_llm`.
- ``anthropic/<model>``: the anthropic SDK directly, with the fixed instructions (system
  prompt and examples) marked for prompt caching.
- ``openai/<model>`` with ``--api-base``: a lean HTTP/1.1 client for OpenAI-compatible servers
  (:mod:`http11`; LiteLLM's httpx-based client reaches about a tenth of the throughput at
  concurrency 64 on this machine, aiohttp's about 0.4 ms of CPU a request more than it);
  ``--client litellm`` routes it through LiteLLM instead.
- anything else (``ollama_chat/...``, ``gemini/...``, ...): ``litellm.acompletion``.

API keys are read from the environment (``--api-key-env``), held only by the client objects,
and never put into cache keys, records, rejects or log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmd_finetune.generate.http11 import Client, HttpError
from qmd_finetune.generate.prompts import messages_json
from qmd_finetune.redact import redact as redact_secrets
from qmd_finetune.redact import register_env

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


@dataclass
class ChatResponse:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    finish_reason: str | None = None


@dataclass
class GenerationParams:
    max_tokens: int = 400
    temperature: float | None = None  # None: the provider's default (greedy for local/)
    top_p: float | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.temperature is not None:
            data["temperature"] = self.temperature
        if self.top_p is not None:
            data["top_p"] = self.top_p
        if self.seed is not None:
            data["seed"] = self.seed
        return data


BODY_LIMIT = 4000
"""Characters of an error response body kept for the rejects ledger."""


class ProviderError(Exception):
    """A failed request; ``retryable`` for 429/5xx/timeouts/broken bodies, with Retry-After if sent.
    ``body`` is the response body, if any. Reason and body are redacted here, where they are
    made: servers echo request headers (the API key) in error bodies."""

    def __init__(
        self,
        reason: str,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        body: str | bytes | None = None,
    ):
        reason = redact_secrets(reason)
        super().__init__(reason)
        self.reason = reason
        if isinstance(body, bytes):
            body = body.decode("utf-8", errors="replace")
        self.body = redact_secrets(body[:BODY_LIMIT]) if body else None
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


@dataclass
class Pricing:
    """USD per token; from LiteLLM's offline cost map unless overridden."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    known: bool = True

    def cost(self, response: ChatResponse, discount: float = 1.0) -> float:
        plain_input = max(
            0, response.prompt_tokens - response.cache_read_tokens - response.cache_write_tokens
        )
        total = plain_input * self.input + response.completion_tokens * self.output
        total += response.cache_read_tokens * (
            self.cache_read if self.cache_read is not None else self.input * 0.1
        )
        total += response.cache_write_tokens * (
            self.cache_write if self.cache_write is not None else self.input * 1.25
        )
        return total * discount

    def estimate(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input + completion_tokens * self.output


def pricing_for(model: str, price_in: float | None = None, price_out: float | None = None) -> Pricing:
    """Prices per token. ``price_in``/``price_out`` are USD per million tokens and win when given."""
    if model.startswith("local/"):
        return Pricing(0.0, 0.0, 0.0, 0.0)
    if price_in is not None or price_out is not None:
        return Pricing((price_in or 0.0) / 1e6, (price_out or 0.0) / 1e6)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    info = _bundled_price(model)
    if info is None:
        import litellm

        try:
            info = litellm.get_model_info(model)
        except Exception:  # noqa: BLE001 - litellm raises plain Exception for unknown models
            return Pricing(0.0, 0.0, known=False)
    return Pricing(
        input=float(info.get("input_cost_per_token") or 0.0),
        output=float(info.get("output_cost_per_token") or 0.0),
        cache_read=info.get("cache_read_input_token_cost"),
        cache_write=info.get("cache_creation_input_token_cost"),
    )


# Providers this module serves without LiteLLM; their prices are read from LiteLLM's bundled
# price map directly (importing LiteLLM takes about 4 s). tests/generate/test_pricing.py checks
# the answer equals litellm.get_model_info's for every entry of these providers.
_NATIVE_PRICED = ("openai", "anthropic")


@functools.cache
def _bundled_prices() -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(spec.submodule_search_locations[0]) / "model_prices_and_context_window_backup.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _bundled_price(model: str) -> dict[str, Any] | None:
    """The price entry of ``openai/<name>`` or ``anthropic/<name>`` from LiteLLM's bundled map
    (what ``litellm.get_model_info`` answers with the local map), or None: then LiteLLM decides.
    Only when LiteLLM reads its local map (``LITELLM_LOCAL_MODEL_COST_MAP``, our default) and
    is not imported yet: once it is, its own answer holds prices registered at run time."""
    import sys

    provider, sep, name = model.partition("/")
    if not sep or provider not in _NATIVE_PRICED or "litellm" in sys.modules:
        return None
    if os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP", "").strip().lower() not in ("true", "1", "yes"):
        return None
    prices = _bundled_prices()
    for key in (model, name):
        entry = prices.get(key)
        if isinstance(entry, dict) and entry.get("litellm_provider") == provider:
            return entry
    return None


def served_model(model: str) -> str:
    """``ollama/<m>`` is served as ``ollama_chat/<m>``. LiteLLM's ``ollama/`` flattens the chat
    into one text prompt for ``/api/generate``, so a prompt optimized through one route would
    not be the prompt run through the other; every command sends chat messages to ``/api/chat``."""
    provider, sep, name = model.partition("/")
    return f"ollama_chat/{name}" if provider == "ollama" and sep and name else model


def served_note(model: str) -> str | None:
    """The one-line note a summary prints when :func:`served_model` changed the model string."""
    served = served_model(model)
    if served == model:
        return None
    return f"{model} is served as {served} (chat messages to /api/chat, as generate and gepa both send them)"


@dataclass
class ProviderConfig:
    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    client: str = "auto"  # auto | litellm | native
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model = served_model(self.model)
        register_env(self.api_key_env)  # masked from the start, in every writer of this run

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0] if "/" in self.model else "openai"

    def api_key(self) -> str | None:
        if self.api_key_env:
            register_env(self.api_key_env)  # its value is masked wherever it would be written
            return os.environ.get(self.api_key_env)
        default_env = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}.get(self.provider)
        return os.environ.get(default_env) if default_env else None


class Provider:
    name = "base"

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    async def complete(
        self, messages: list[dict[str, Any]], params: GenerationParams, timeout: float
    ) -> ChatResponse:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class LocalProvider(Provider):
    """The embedded model (``local/smollm2``) or a model the user trained (``local/<dir>``),
    decoded format-safe (:mod:`qmd_finetune.decoding`, ``strict``, plus the line guard of
    :mod:`local_llm`): on 50 queries 50 answers pass the quality gate, against 6 with the
    earlier prefill-and-cut-at-a-blank-line decoding (docs/generate.md)."""

    name = "local"
    DECODING = "strict"

    async def complete(
        self, messages: list[dict[str, Any]], params: GenerationParams, timeout: float
    ) -> ChatResponse:
        from qmd_finetune.generate import local_llm

        gen = local_llm.GenParams(
            max_new_tokens=params.max_tokens,
            temperature=params.temperature or 0.0,
            top_p=params.top_p or 1.0,
            decoding=self.DECODING,
            model=local_llm.model_key(self.config.model),
        )
        # No timeout here: a queued request waits for the batches before it, which is not a fault.
        try:
            result = await local_llm.agenerate(messages, gen)
        except local_llm.Interrupted as exc:
            raise ProviderError("interrupted", retryable=False) from exc
        return ChatResponse(
            text=result.text,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            finish_reason=result.finish_reason,
        )

    def interrupt(self) -> None:
        """Stop the running batch now (a signal): in-flight requests end as ``interrupted``."""
        from qmd_finetune.generate import local_llm

        local_llm.interrupt()


def _chat_body(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> bytes:
    """``json.dumps({"model": model, "messages": messages, **params})`` as bytes, with the prompt's
    messages encoded once per run (prompts.messages_json)."""
    if "model" in params or "messages" in params:
        return json.dumps({"model": model, "messages": messages, **params}).encode("utf-8")
    rest = json.dumps(params)[1:-1] if params else ""
    text = '{"model": ' + json.dumps(model) + ', "messages": ' + messages_json(messages)
    return (text + (", " + rest if rest else "") + "}").encode("utf-8")


class OpenAICompatProvider(Provider):
    """POST {api_base}/chat/completions with a pool of keep-alive connections (:mod:`http11`)."""

    name = "openai"

    def __init__(self, config: ProviderConfig, pool_size: int = 100) -> None:
        super().__init__(config)
        if not config.api_base:
            raise ValueError("openai/<model> with the native client needs --api-base")
        self._url = config.api_base.rstrip("/") + "/chat/completions"
        self._pool_size = pool_size
        self._http: Any = None
        self._get_client()  # a bad --api-base or key fails here, before any request

    def _get_client(self) -> Any:
        if self._http is None:
            headers = {"Content-Type": "application/json"}
            key = self.config.api_key()
            if key:
                headers["Authorization"] = f"Bearer {key}"
            self._http = Client(self._url, headers, pool_size=self._pool_size)
        return self._http

    async def complete(
        self, messages: list[dict[str, Any]], params: GenerationParams, timeout: float
    ) -> ChatResponse:
        model = self.config.model.split("/", 1)[1]
        body = _chat_body(model, messages, params.to_dict())
        try:
            resp = await (self._http or self._get_client()).post(body, timeout)
        except TimeoutError as exc:
            raise ProviderError(f"timeout after {timeout:g}s", retryable=True) from exc
        except HttpError as exc:
            raise ProviderError(f"connection error: {exc}", retryable=True) from exc
        raw = resp.body
        if resp.status >= 400:
            raise ProviderError(
                f"HTTP {resp.status}: {_snippet(raw)}",
                retryable=resp.status in RETRYABLE_STATUS,
                status=resp.status,
                retry_after=parse_retry_after(resp.headers.get("retry-after")),
                body=raw,
            )
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ProviderError(
                f"malformed response body: {_snippet(raw)}", retryable=True, body=raw
            ) from exc
        usage = data.get("usage") or {}
        return ChatResponse(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
        )

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


class LiteLLMProvider(Provider):
    name = "litellm"

    async def aclose(self) -> None:
        # LiteLLM keeps HTTP clients bound to the event loop that made them; a later
        # asyncio.run() in the same process (GEPA, tests) would get clients of a closed loop.
        import litellm

        litellm.in_memory_llm_clients_cache.flush_cache()

    async def complete(
        self, messages: list[dict[str, Any]], params: GenerationParams, timeout: float
    ) -> ChatResponse:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        kwargs: dict[str, Any] = dict(params.to_dict())
        if self.config.api_base:
            kwargs["api_base"] = self.config.api_base
        key = self.config.api_key()
        if key:
            kwargs["api_key"] = key
        try:
            response = await asyncio.wait_for(
                litellm.acompletion(
                    model=self.config.model,
                    messages=messages,
                    timeout=timeout,
                    num_retries=0,
                    max_retries=0,
                    **kwargs,
                ),
                timeout=timeout + 1.0,
            )
        except asyncio.TimeoutError as exc:
            raise ProviderError(f"timeout after {timeout:g}s", retryable=True) from exc
        except Exception as exc:  # noqa: BLE001 - classified below
            raise classify_litellm_error(exc, key) from exc
        try:
            choice = response.choices[0]
            text = choice.message.content or ""
        except (AttributeError, IndexError) as exc:
            raise ProviderError("malformed response: no choices", retryable=True) from exc
        usage = getattr(response, "usage", None)
        return ChatResponse(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=getattr(choice, "finish_reason", None),
        )


def classify_litellm_error(exc: Exception, secret: str | None) -> ProviderError:
    return _with_body(_classify_litellm_error(exc, secret), exc, secret)


def _with_body(error: ProviderError, exc: Exception, secret: str | None) -> ProviderError:
    body = _error_body(exc)
    error.body = redact(body[:BODY_LIMIT], secret) if body else None
    return error


def _classify_litellm_error(exc: Exception, secret: str | None) -> ProviderError:
    import litellm

    status = getattr(exc, "status_code", None)
    headers = getattr(exc, "litellm_response_headers", None) or getattr(
        getattr(exc, "response", None), "headers", None
    )
    retry_after = parse_retry_after(headers.get("retry-after") if headers else None)
    message = redact(f"{type(exc).__name__}: {exc}", secret)[:300]
    if isinstance(exc, (litellm.Timeout,)):
        return ProviderError(f"timeout: {message}", retryable=True, status=408)
    if isinstance(exc, (litellm.AuthenticationError, litellm.NotFoundError, litellm.PermissionDeniedError)):
        return ProviderError(message, retryable=False, status=status)
    if isinstance(exc, litellm.BadRequestError) and not isinstance(exc, litellm.ContextWindowExceededError):
        return ProviderError(message, retryable=False, status=status)
    if isinstance(exc, litellm.RateLimitError):
        return ProviderError(message, retryable=True, status=429, retry_after=retry_after)
    if isinstance(status, int) and 400 <= status < 500 and status not in RETRYABLE_STATUS:
        return ProviderError(message, retryable=False, status=status)
    return ProviderError(
        message, retryable=True, status=status if isinstance(status, int) else None, retry_after=retry_after
    )


class AnthropicProvider(Provider):
    """Claude through the anthropic SDK: the system prompt and examples carry ``cache_control``."""

    name = "anthropic"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        import anthropic

        self.model_name = config.model.split("/", 1)[1]
        self._client = anthropic.AsyncAnthropic(
            api_key=config.api_key() or "missing-key",
            base_url=anthropic_base_url(config.api_base),
            max_retries=0,
        )

    @staticmethod
    def request_body(model: str, messages: list[dict[str, Any]], params: GenerationParams) -> dict[str, Any]:
        system = [m["content"] for m in messages if m["role"] == "system"]
        turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        body: dict[str, Any] = {"model": model, "max_tokens": params.max_tokens}
        if system:
            body["system"] = [
                {"type": "text", "text": "\n\n".join(system), "cache_control": {"type": "ephemeral"}}
            ]
        if len(turns) > 1:
            # The few-shot turns are fixed too: end the cached prefix after the last example.
            last_fixed = turns[-2]
            turns[-2] = {
                "role": last_fixed["role"],
                "content": [
                    {"type": "text", "text": last_fixed["content"], "cache_control": {"type": "ephemeral"}}
                ],
            }
        body["messages"] = turns
        return body

    async def complete(
        self, messages: list[dict[str, Any]], params: GenerationParams, timeout: float
    ) -> ChatResponse:
        body = self.request_body(self.model_name, messages, params)
        # This SDK no longer types the sampling parameters; models that take them still do.
        sampling = {
            k: v for k, v in (("temperature", params.temperature), ("top_p", params.top_p)) if v is not None
        }
        try:
            message = await self._client.messages.create(**body, extra_body=sampling or None, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - classified below
            error = classify_anthropic_error(exc, self.config.api_key())
            if error is None:
                raise
            raise error from exc
        return response_from_message(message)

    async def aclose(self) -> None:
        await self._client.close()


def anthropic_base_url(api_base: str | None) -> str | None:
    """The SDK appends ``/v1/messages`` itself: ``http://host/v1`` (as OpenAI-style URLs are
    written) would post to ``/v1/v1/messages``, so a trailing ``/v1`` is dropped."""
    if api_base is None:
        return None
    base = api_base.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def response_from_message(message: Any) -> ChatResponse:
    """ChatResponse from an anthropic Message (SDK object or the plain dict of a batch result)."""
    get = (lambda o, k: o.get(k)) if isinstance(message, dict) else getattr
    content = get(message, "content") or []
    text = "".join(get(block, "text") or "" for block in content if get(block, "type") == "text")
    usage = get(message, "usage")
    if usage is None:
        raise ProviderError("malformed response: no usage", retryable=True)
    read = int(get(usage, "cache_read_input_tokens") or 0)
    write = int(get(usage, "cache_creation_input_tokens") or 0)
    return ChatResponse(
        text=text,
        prompt_tokens=int(get(usage, "input_tokens") or 0) + read + write,
        completion_tokens=int(get(usage, "output_tokens") or 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
        finish_reason=get(message, "stop_reason"),
    )


def classify_anthropic_error(exc: Exception, secret: str | None) -> ProviderError | None:
    error = _classify_anthropic_error(exc, secret)
    return None if error is None else _with_body(error, exc, secret)


def _classify_anthropic_error(exc: Exception, secret: str | None) -> ProviderError | None:
    import anthropic

    message = redact(f"{type(exc).__name__}: {exc}", secret)[:300]
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(f"timeout: {message}", retryable=True, status=408)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(message, retryable=True)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        return ProviderError(
            message, retryable=status in RETRYABLE_STATUS, status=status, retry_after=retry_after
        )
    if isinstance(exc, (anthropic.APIResponseValidationError, ValueError)):
        return ProviderError(f"malformed response: {message}", retryable=True)
    return None


def parse_retry_after(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    from email.utils import parsedate_to_datetime

    try:
        import datetime as dt

        when = parsedate_to_datetime(str(value))
        return max(0.0, (when - dt.datetime.now(when.tzinfo)).total_seconds())
    except (TypeError, ValueError):
        return None


def redact(text: str, secret: str | None) -> str:
    return redact_secrets(text, secret)


def _error_body(exc: Exception) -> str | None:
    """The HTTP response body behind an SDK exception, when it has one."""
    response = getattr(exc, "response", None)
    with contextlib.suppress(Exception):  # an SDK response object may refuse .text (streamed, closed)
        text = getattr(response, "text", None)
        if isinstance(text, str) and text:
            return text
    return str(exc) or None


def _snippet(raw: bytes, width: int = 120) -> str:
    return raw[:width].decode("utf-8", errors="replace").replace("\n", " ")


def make_provider(config: ProviderConfig, concurrency: int = 16) -> Provider:
    provider = config.provider
    if provider == "local":
        # LocalProvider calls the engine itself: no LiteLLM registration (importing LiteLLM
        # took about 4 s of every `generate expand --model local/...` run). DSPy's route to the
        # embedded model registers it where it is needed (gepa.program).
        from qmd_finetune.embedded import generation_dtype

        generation_dtype()  # a bad QMD_FINETUNE_DTYPE fails here, before any request
        return LocalProvider(config)
    if provider == "anthropic" and config.client != "litellm":
        return AnthropicProvider(config)
    if provider == "openai" and config.api_base and config.client != "litellm":
        return OpenAICompatProvider(config, pool_size=max(concurrency, 1))
    return LiteLLMProvider(config)
