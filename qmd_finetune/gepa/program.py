"""The DSPy program GEPA optimizes: one predictor from ``query`` to ``expansion``.

The optimized text is the predictor's instruction, and it must work unchanged as
``generate expand --prompt-file``. So the program does not use DSPy's chat format (field
markers a 135M model cannot follow); :class:`ExpansionAdapter` sends exactly the messages the
generate command sends for a prompt file, and takes the whole reply as the expansion. Parsing
is tolerant (prefixed lines, a JSON list of pairs, a JSON object) and a reply that cannot be
parsed is still a prediction, scored as a failure by the metric, never an exception.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from qmd_finetune.records import Item, RecordError, parse_expansion

QUERY_PLACEHOLDER = "{query}"


def prompt_file_text(instruction: str) -> str:
    """The bytes ``--save-prompt`` writes for an instruction (so hashes agree with generate's)."""
    return instruction.strip("\n") + "\n"


def prompt_sha(instruction: str) -> str:
    """``meta.prompt_sha`` as ``generate expand --prompt-file`` records it for the saved file."""
    return hashlib.sha256(prompt_file_text(instruction).encode("utf-8")).hexdigest()


def expansion_messages(instruction: str, query: str) -> list[dict[str, Any]]:
    """The chat messages ``generate expand`` sends for this prompt file and query (its own parser)."""
    from qmd_finetune.generate.prompts import parse_prompt

    return parse_prompt(prompt_file_text(instruction), "gepa").messages(query)


class ExpansionAdapter(dspy.Adapter):
    """Plain prompt in, whole reply out: no field markers for a small model to break."""

    def format(
        self, signature: type[dspy.Signature], demos: list[dict[str, Any]], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return expansion_messages(signature.instructions, str(inputs.get("query", "")))

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        return {"expansion": completion or ""}


class ExpandQuery(dspy.Signature):
    """Expand the search query into lines for hybrid search: hyde, lex and vec."""

    query: str = dspy.InputField(desc="the user's search query")
    expansion: str = dspy.OutputField(desc="lines starting with hyde:, lex: or vec:")


def parse_items(raw: str) -> tuple[list[Item], str | None]:
    """Items of a reply and, when there are none, the reason."""
    try:
        return parse_expansion(raw or ""), None
    except RecordError as exc:
        return [], exc.reason


class QueryExpander(dspy.Module):
    """``query -> expansion`` with the tolerant adapter; unparseable replies become no pairs."""

    def __init__(self, instruction: str) -> None:
        super().__init__()
        self.expand = dspy.Predict(ExpandQuery.with_instructions(instruction))

    @property
    def instruction(self) -> str:
        return self.expand.signature.instructions

    def forward(self, query: str) -> dspy.Prediction:
        with dspy.context(adapter=ExpansionAdapter()):
            try:
                raw = self.expand(query=query).expansion or ""
            except AdapterParseError as exc:
                # Empty replies (and other adapters' marker errors) are the model's failure, not
                # the program's: record the call in the trace so GEPA can reflect on it.
                raw = exc.lm_response or ""
                trace = dspy.settings.trace
                if trace is not None:
                    trace.append((self.expand, {"query": query}, dspy.Prediction(expansion=raw)))
        items, error = parse_items(raw)
        return dspy.Prediction(expansion=raw, pairs=[list(item) for item in items], parse_error=error)


class ProviderEngine:
    """A DSPy engine that sends through ``generate expand``'s own provider for the model string.

    So GEPA scores exactly the request the generate command later sends, for every provider:
    the same messages, the anthropic cache markers, the embedded model's format-safe decoding,
    ``ollama/`` as chat. DSPy keeps its cache and retries; this engine makes one attempt on a
    private event loop (GEPA calls from worker threads).
    """

    def __init__(
        self, model: str, api_base: str | None = None, timeout: float = 120.0, pool: int = 16
    ) -> None:
        from qmd_finetune.generate.providers import ProviderConfig, make_provider

        self.config = ProviderConfig(model=model, api_base=api_base)
        self.timeout = timeout
        self._provider = make_provider(self.config, concurrency=pool)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gepa-provider", daemon=True)
        self._thread.start()

    def complete(self, request: Any) -> Any:
        from dspy import lm15

        from qmd_finetune.generate.providers import GenerationParams, ProviderError

        config = request.config
        params = GenerationParams(
            max_tokens=config.max_tokens or 256,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=config.seed,
        )
        future = asyncio.run_coroutine_threadsafe(
            self._provider.complete(request_messages(request), params, self.timeout), self._loop
        )
        try:
            response = future.result()
        except ProviderError as exc:
            raise provider_lm_error(exc) from exc
        finish = "length" if response.finish_reason in ("length", "max_tokens") else "stop"
        return lm15.Response(
            id=None,
            model=self.config.model,
            message=lm15.Message.assistant([lm15.TextPart(response.text)]),
            finish_reason=finish,
            usage=lm15.Usage(
                input_tokens=response.prompt_tokens,
                output_tokens=response.completion_tokens,
                total_tokens=response.prompt_tokens + response.completion_tokens,
            ),
        )

    def stream(self, request: Any) -> Any:
        from dspy import lm15

        raise lm15.UnsupportedFeatureError("the generate providers do not stream")

    def close(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._provider.aclose(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


def request_messages(request: Any) -> list[dict[str, Any]]:
    """The chat messages of a DSPy request, as ``{"role", "content"}`` dicts."""
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        system = (
            request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        )
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
    return messages


def provider_lm_error(exc: Exception) -> Exception:
    """DSPy's error for a provider failure: retryable ones as the kinds DSPy retries."""
    from dspy import lm15

    status, reason = getattr(exc, "status", None), getattr(exc, "reason", str(exc))
    if status == 429:
        return lm15.RateLimitError(reason, status=status, retry_after=getattr(exc, "retry_after", None))
    if reason.startswith("timeout"):
        return lm15.TimeoutError(reason, status=status)
    if getattr(exc, "retryable", False):
        return lm15.ServerError(reason, status=status)
    return lm15.InvalidRequestError(reason, status=status)


def student_lm(engine: ProviderEngine, *, max_tokens: int, temperature: float = 0.0) -> dspy.LM:
    """The student: a DSPy LM whose requests are exactly ``generate expand``'s."""
    return dspy.LM(
        engine.config.model, engine=engine, max_tokens=max_tokens, temperature=temperature, num_retries=2
    )


def build_lm(
    model: str, *, max_tokens: int, temperature: float = 0.0, api_base: str | None = None
) -> dspy.LM:
    """A DSPy LM for a LiteLLM model string (the reflection model), through LiteLLM;
    ``ollama/`` is served as ``ollama_chat/`` as everywhere else."""
    from qmd_finetune.generate.providers import served_model

    model = served_model(model)
    kwargs: dict[str, Any] = {}
    if api_base:
        kwargs["api_base"] = api_base
        if model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
            # Local OpenAI-compatible servers take no key, but the OpenAI client insists on one.
            kwargs["api_key"] = "no-key"
    if model.split("/", 1)[0] == "local":
        from qmd_finetune.generate.local_llm import register_litellm_provider

        register_litellm_provider()
    return dspy.LM(
        model,
        engine="litellm",
        max_tokens=max_tokens,
        temperature=temperature,
        num_retries=2,
        **kwargs,
    )
