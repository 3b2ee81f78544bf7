"""The embedded model (SmolLM2-135M-Instruct) as a batched generator and a LiteLLM provider.

``register_litellm_provider()`` makes ``litellm.completion(model="local/smollm2", ...)`` (and
``acompletion``) work, so DSPy reaches the embedded model by name like any other model.
Every request, sync or async, goes through one background worker thread that collects the
requests arriving together into a left-padded batch: concurrent callers (the generate runner,
DSPy's threaded evaluation) get batched generation without knowing about it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

PROVIDER = "local"
MODEL_NAMES = ("smollm2", "embedded")
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_REPETITION_PENALTY = 1.0
MAX_BATCH = 8
# How long the worker waits for more requests to join a batch once the first one arrived.
BATCH_WINDOW_S = 0.01

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    # > 1.0 discourages loops, but also the repeated "lex:"/"vec:" prefixes of this format.
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class EmbeddedEngine:
    """Loads the embedded model once; generates for a list of conversations in one batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            from qmd_finetune import embedded

            path = embedded.model_dir()
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            hf_logging.disable_progress_bar()
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=embedded.best_dtype())
            model.eval()
            self._tokenizer, self._model = tokenizer, model

    def generate(self, conversations: list[Messages], params: GenParams) -> list[Completion]:
        import torch

        self.load()
        tokenizer, model = self._tokenizer, self._model
        conversations = [_plain_messages(m) for m in conversations]
        with self._lock:
            enc = tokenizer(
                [render_prompt(tokenizer, c) for c in conversations],
                padding=True,
                return_tensors="pt",
                add_special_tokens=False,
            )
            kwargs: dict[str, Any] = {
                "max_new_tokens": params.max_new_tokens,
                "pad_token_id": tokenizer.pad_token_id,
                "repetition_penalty": params.repetition_penalty,
            }
            if params.stop:
                # stop rows inside generate, not only by cutting the text afterwards
                kwargs["stopping_criteria"] = [_TailStop(tokenizer, params.stop, enc["input_ids"].shape[1])]
            if params.temperature > 0:
                kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                out = model.generate(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs
                )
        prompt_len = enc["input_ids"].shape[1]
        results = []
        eos_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        for row, mask in zip(out, enc["attention_mask"], strict=True):
            new = row[prompt_len:].tolist()
            n_new = len(new)
            for i, tok in enumerate(new):
                if tok in eos_ids:
                    n_new = i
                    break
            text = tokenizer.decode(new[:n_new], skip_special_tokens=True)
            finish = "stop" if n_new < len(new) or n_new < params.max_new_tokens else "length"
            text, stopped = _apply_stop(text, params.stop)
            results.append(
                Completion(
                    text=text.strip(),
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=n_new,
                    finish_reason="stop" if stopped else finish,
                )
            )
        return results


class _TailStop:
    """Per-row stop when a stop string appears in the last few generated tokens.

    (transformers' ``stop_strings`` does the same with a much costlier precomputation.)"""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_len: int, tail: int = 3) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        self.tail = tail

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        start = max(self.prompt_len, input_ids.shape[1] - self.tail)
        texts = self.tokenizer.batch_decode(input_ids[:, start:])
        return torch.tensor([any(stop in text for stop in self.stops) for text in texts], dtype=torch.bool)


def render_prompt(tokenizer: Any, messages: Messages) -> str:
    """Chat-template text; a final assistant message is continued (a prefill), not closed."""
    if messages and messages[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _plain_messages(messages: Messages) -> Messages:
    """Chat-template input: role + string content (OpenAI content parts are joined)."""
    plain = []
    for message in messages:
        content = message.get("content", "")
        if isinstance(content, list):
            content = "".join(
                part.get("text", "")
                for part in content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        plain.append({"role": message.get("role", "user"), "content": content or ""})
    return plain


def _apply_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class _Batcher:
    """One worker thread; requests queued within a short window share one generate() call."""

    def __init__(self, engine: EmbeddedEngine, max_batch: int = MAX_BATCH, window: float = BATCH_WINDOW_S):
        self.engine = engine
        self.max_batch = max_batch
        self.window = window
        self._queue: queue.Queue[tuple[Messages, GenParams, concurrent.futures.Future]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, messages: Messages, params: GenParams) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._ensure_thread()
        self._queue.put((messages, params, future))
        return future

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="embedded-llm", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        pending: list[tuple[Messages, GenParams, concurrent.futures.Future]] = []
        while True:
            if not pending:
                pending.append(self._queue.get())
            deadline = time.monotonic() + self.window
            while len(pending) < self.max_batch * 4:
                timeout = deadline - time.monotonic()
                try:
                    pending.append(
                        self._queue.get(timeout=max(timeout, 0)) if timeout > 0 else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            params = pending[0][1]
            batch = [p for p in pending if p[1] == params][: self.max_batch]
            pending = [p for p in pending if not any(p is b for b in batch)]
            live = [b for b in batch if b[2].set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = self.engine.generate([b[0] for b in live], params)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                for b in live:
                    b[2].set_exception(exc)
                continue
            for b, result in zip(live, results, strict=True):
                b[2].set_result(result)


_ENGINE = EmbeddedEngine()
_BATCHER = _Batcher(_ENGINE)


def engine() -> EmbeddedEngine:
    return _ENGINE


def generate_batch(
    conversations: list[Messages],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = MAX_BATCH,
) -> list[str]:
    """Answer each conversation with the embedded model, ``batch_size`` prompts per forward pass."""
    return [
        c.text for c in generate_completions(conversations, max_new_tokens, temperature, top_p, batch_size)
    ]


def generate_completions(
    conversations: list[Messages],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = MAX_BATCH,
) -> list[Completion]:
    params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    results: list[Completion] = []
    for start in range(0, len(conversations), max(1, batch_size)):
        results.extend(_ENGINE.generate(conversations[start : start + batch_size], params))
    return results


def submit(messages: Messages, params: GenParams) -> concurrent.futures.Future:
    """Queue one conversation for the shared batching worker; the future yields a Completion."""
    return _BATCHER.submit(messages, params)


async def agenerate(messages: Messages, params: GenParams) -> Completion:
    return await asyncio.wrap_future(submit(messages, params))


def params_from_optional(optional_params: dict[str, Any]) -> GenParams:
    max_tokens = optional_params.get("max_tokens") or optional_params.get("max_completion_tokens")
    stop = optional_params.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    temperature = optional_params.get("temperature")
    top_p = optional_params.get("top_p")
    penalty = optional_params.get("repetition_penalty")
    return GenParams(
        repetition_penalty=float(penalty) if penalty is not None else DEFAULT_REPETITION_PENALTY,
        max_new_tokens=int(max_tokens) if max_tokens else DEFAULT_MAX_NEW_TOKENS,
        temperature=float(temperature) if temperature is not None else 0.0,
        top_p=float(top_p) if top_p is not None else 1.0,
        stop=tuple(stop),
    )


def _check_model(model: str) -> None:
    name = model.split("/", 1)[1] if model.startswith(PROVIDER + "/") else model
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown local model {model!r}; available: local/smollm2")


def _model_response(model: str, completion: Completion, model_response: Any) -> Any:
    from litellm.types.utils import Usage

    model_response.choices[0].message.content = completion.text
    model_response.choices[0].finish_reason = completion.finish_reason
    model_response.model = model if model.startswith(PROVIDER + "/") else f"{PROVIDER}/{model}"
    model_response.created = int(time.time())
    model_response.usage = Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        total_tokens=completion.prompt_tokens + completion.completion_tokens,
    )
    return model_response


_HANDLER: Any = None
_REGISTER_LOCK = threading.Lock()


def _handler_class() -> type:
    from litellm import CustomLLM

    class EmbeddedLLM(CustomLLM):
        """LiteLLM custom provider ``local/<name>`` backed by the shared batching worker."""

        def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            _check_model(model)
            params = params_from_optional(kwargs.get("optional_params") or {})
            result = submit(messages, params).result(timeout=_timeout(kwargs.get("timeout")))
            return _model_response(model, result, kwargs["model_response"])

        async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            _check_model(model)
            params = params_from_optional(kwargs.get("optional_params") or {})
            future = asyncio.wrap_future(submit(messages, params))
            result = await asyncio.wait_for(future, _timeout(kwargs.get("timeout")))
            return _model_response(model, result, kwargs["model_response"])

    return EmbeddedLLM


def _timeout(value: Any) -> float | None:
    if isinstance(value, (int, float)) and value > 0:
        return float(value)
    read = getattr(value, "read", None)
    return float(read) if isinstance(read, (int, float)) else None


def register_litellm_provider() -> None:
    """Make ``local/smollm2`` a LiteLLM model (idempotent; cheap: the model loads on first call)."""
    global _HANDLER
    import litellm
    from litellm.utils import custom_llm_setup

    with _REGISTER_LOCK:
        if _HANDLER is None:
            _HANDLER = _handler_class()()
        entries = [e for e in litellm.custom_provider_map if e.get("provider") != PROVIDER]
        entries.append({"provider": PROVIDER, "custom_handler": _HANDLER})
        litellm.custom_provider_map = entries
        custom_llm_setup()
        free = {
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
            "cache_creation_input_token_cost": 0.0,
            "cache_read_input_token_cost": 0.0,
            "litellm_provider": PROVIDER,
            "mode": "chat",
        }
        for name in MODEL_NAMES:
            if f"{PROVIDER}/{name}" not in litellm.model_cost:
                litellm.register_model({f"{PROVIDER}/{name}": dict(free)})
