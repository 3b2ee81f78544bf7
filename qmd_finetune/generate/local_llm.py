"""The embedded model (SmolLM2-135M-Instruct) as a batched generator and a LiteLLM provider.

``register_litellm_provider()`` makes ``litellm.completion(model="local/smollm2", ...)`` (and
``acompletion``) work, so DSPy reaches the embedded model by name like any other model.
``local/<dir>`` runs a model a user trained (a ``train sft`` output directory, its
``merged/`` or ``adapter/``, or any model directory) the same way.
Every request, sync or async, goes through one background worker thread that collects the
requests arriving together into batches: concurrent callers (the generate runner, DSPy's
threaded evaluation) get batched generation without knowing about it.

Why it is fast: the prompt's shared head (system text and few-shot turns, ~450 tokens) is
run through the model once; every row of a batch reads its keys and values
(:mod:`qmd_finetune.generate.shared_head`; models other than Llama get a copy of the head's
cache per batch), so a query costs only its own few tokens plus the answer. Batches of up to
32 hold prompts of similar length, rows leave the batch as they finish, weights are bf16
where the CPU has it. ``interrupt()`` stops a running batch between two tokens (SIGTERM in
``generate expand`` calls it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmd_finetune import cpu_share
from qmd_finetune.generate import shared_head

PROVIDER = "local"
MODEL_NAMES = ("smollm2", "embedded")
DEFAULT_MODEL = "smollm2"
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_REPETITION_PENALTY = 1.0
MAX_BATCH = 32
# How long the worker waits for more requests to join a batch once the first one arrived.
BATCH_WINDOW_S = 0.01
# Prompt heads whose key/value cache is kept (one per prompt file in use).
PREFIX_CACHE_SIZE = 4

Messages = list[dict[str, Any]]


class Interrupted(RuntimeError):
    """The generation was stopped by :func:`interrupt` (a signal), not by a fault."""


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    # > 1.0 discourages loops, but also the repeated "lex:"/"vec:" prefixes of this format.
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    # "free", or a qmd_finetune.decoding mode ("safe", "strict") for the lex/vec/hyde format
    decoding: str = "free"
    model: str = DEFAULT_MODEL


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass
class _Prepared:
    """One conversation split into the cached head and its own tail (token ids)."""

    head: tuple[int, ...]
    tail: list[int]
    query: str
    shown: Any = None  # quality.PromptLines of the prompt: lines the answer must not copy


def is_local(model: str) -> bool:
    """``local/...``: served in this process by the embedded engine (which batches its callers)."""
    return model.startswith(PROVIDER + "/")


def model_key(model: str) -> str:
    """``local/smollm2`` -> ``smollm2``; ``local/<dir>`` -> the directory."""
    return model.split("/", 1)[1] if is_local(model) else model


def check_model(model: str) -> None:
    """A clear error for a name that is neither the embedded model nor a model directory."""
    name = model_key(model)
    if name in MODEL_NAMES:
        return
    from qmd_finetune.training.models import ModelLoadError, inspect_model

    if not Path(name).expanduser().is_dir():
        raise ValueError(
            f"unknown local model {model!r}; available: local/smollm2, or local/<dir> "
            "(a `train sft` output directory or a model directory)"
        )
    try:
        inspect_model(str(Path(name).expanduser()))
    except ModelLoadError as exc:
        raise ValueError(f"local model {model!r}: {exc}") from exc


# Tokens a line may take before it must end: a 135M model otherwise runs one line to the
# token budget ("vec: docker-composite-docker-composite-...") and never writes the others.
LINE_TOKENS = {"hyde": 48, "lex": 12, "vec": 24}


class LineGuard:
    """Extra rules on top of :class:`~qmd_finetune.decoding.FormatConstraint` (strict/safe).

    - a line that reaches its kind's token limit (:data:`LINE_TOKENS`) must end;
    - the first ``lex:`` line starts with a key term of the query, so the keyword line is
      about the query (the quality gate's ``lex_off_topic``) and not a copy of an example;
    - a line may not end as a copy of an earlier line of its kind or of a line the prompt
      shows (compared as the quality gate compares them: case, spaces, end punctuation), nor
      as one more echo of the query when every lex/vec line so far echoes it;
    - when the tokens left (``remaining``) only just fit the lex/vec lines still missing, the
      current line ends and the next one starts with the missing prefix: an answer cut by
      ``--max-tokens`` still has both kinds.
    """

    def __init__(self, tokenizer: Any, pieces: list[str]) -> None:
        import torch

        self.tokenizer = tokenizer
        self.breaks = torch.tensor([i for i, p in enumerate(pieces) if p.endswith("\n")], dtype=torch.long)
        # word start -> token ids, with a leading space (after "lex:") and without (after "lex: ")
        self.starts: dict[bool, dict[str, list[int]]] = {True: {}, False: {}}
        for i, piece in enumerate(pieces):
            if piece.strip() and piece.strip() == piece.lstrip(" ") and "\n" not in piece:
                self.starts[piece.startswith(" ")].setdefault(piece.strip().lower(), []).append(i)
        self.queries: list[str] = []
        self.shown: list[Any] = []
        self.eos = tokenizer.eos_token_id
        self.remaining = 1 << 30
        self.prefix_ids = {
            kind: [i for i, p in enumerate(pieces) if p and f"{kind}: ".startswith(p)] for kind in LINE_TOKENS
        }

    def missing(self, query: str, lines: list[str]) -> list[str]:
        """The lex/vec kinds the answer still needs (only mode: the asked kind)."""
        from qmd_finetune.records import only_mode

        only = only_mode(query)[1]
        needed = [only] if only else ["lex", "vec"]
        return [k for k in needed if not any(line.startswith(f"{k}:") for line in lines)]

    def term_starts(self, query: str, spaced: bool) -> list[int]:
        """Tokens that begin a key term of ``query`` (``spaced``: with a leading space)."""
        from qmd_finetune.records import only_mode
        from qmd_finetune.reward import key_terms

        words = [w.strip(".,;:!?()[]\"'") for w in key_terms(only_mode(query)[0])]
        ids: list[int] = []
        for word in (w for w in words if w):
            for end in range(min(3, len(word)), len(word) + 1):
                ids.extend(self.starts[spaced].get(word[:end], []))
        return ids

    def __call__(self, generated: Any, scores: Any) -> Any:
        for row in range(generated.shape[0]):
            text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
            *done, line = text.split("\n")
            missing = self.missing(self.queries[row], [*done, line])
            reserve = sum(LINE_TOKENS[k] // 2 + 3 for k in missing)
            if missing and self.remaining <= reserve:
                if not line and self._only(scores, row, self.prefix_ids[missing[0]]):
                    continue
                kind = line.split(":", 1)[0].strip().lower()
                if kind not in missing and ":" in line and line.split(":", 1)[1].strip():
                    self._only(scores, row, self.breaks.tolist())
                    continue
            kind = line.split(":", 1)[0].strip().lower()
            if kind not in LINE_TOKENS or ":" not in line:
                continue
            content = line.split(":", 1)[1]
            if kind == "lex" and not content.strip():
                if not any(d.startswith("lex:") for d in done):
                    self._only(scores, row, self.term_starts(self.queries[row], spaced=not content))
                continue
            used = len(self.tokenizer(content, add_special_tokens=False)["input_ids"])
            if used >= LINE_TOKENS[kind]:
                if not self._only(scores, row, self.breaks.tolist()):
                    scores[row, self.breaks] = 0.0
            elif self._copy(row, kind, content, done):
                scores[row, self.breaks] = -float("inf")
                scores[row, self.eos] = -float("inf")
        return scores

    def _copy(self, row: int, kind: str, content: str, done: list[str]) -> bool:
        """Ending the line now would repeat an earlier line or copy the prompt's examples."""
        from qmd_finetune.records import only_mode
        from qmd_finetune.reward import echoes

        line = _norm(content)
        base = only_mode(self.queries[row])[0]
        if echoes(content.strip(), base) and all(
            echoes(d.split(":", 1)[1].strip(), base) for d in done if d.startswith(("lex:", "vec:"))
        ):
            return True  # every line an echo of the query: one at least must say something new
        if any(
            d.split(":", 1)[0].strip().lower() == kind and _norm(d.split(":", 1)[1]) == line
            for d in done
            if ":" in d
        ):
            return True
        return _copies_prompt(line, base, self.shown[row] if row < len(self.shown) else None)

    @staticmethod
    def _only(scores: Any, row: int, ids: list[int]) -> bool:
        """Keep only ``ids`` (with their scores) when one of them is allowed; say whether it was."""
        import torch

        if not ids:
            return False
        index = torch.tensor(ids, dtype=torch.long)
        allowed = scores[row, index]
        if not torch.isfinite(allowed).any():
            return False
        scores[row] = torch.full_like(scores[row], -float("inf"))
        scores[row, index] = allowed
        return True


def _copies_prompt(line: str, query: str, shown: Any) -> bool:
    """The quality gate's ``prompt_copy`` for one normalized line."""
    if "/only:" in line:
        return True
    if shown is None or _norm(query) in shown.queries:
        return False
    return line in shown.lines or any(long in line for long in shown.long_lines)


def clean_answer(text: str, query: str, shown: Any) -> str:
    """Drop lines that repeat an earlier line of their kind or copy the prompt.

    The line guard prevents most of them; a line cut at its token limit can still end as one
    (two lines starting alike, cut at the same length). The copy adds nothing to the answer."""
    from qmd_finetune.records import only_mode

    base = only_mode(query)[0]
    kept: list[str] = []
    seen: set[tuple[str, str]] = set()
    for line in text.split("\n"):
        kind, _, content = line.partition(":")
        key = (kind.strip().lower(), _norm(content))
        if content and (key in seen or _copies_prompt(key[1], base, shown)):
            continue
        seen.add(key)
        kept.append(line)
    return "\n".join(kept)


def _norm(text: str) -> str:
    """As the quality gate compares lines: lower case, single spaces, no end punctuation."""
    return " ".join(text.lower().split()).strip(" .!?")


def generation_threads(others: float | None = None) -> int:
    """Torch threads for generation: ``QMD_FINETUNE_THREADS``, else the cores the other
    processes leave free (``others``: cores they used lately, :class:`cpu_share.CpuWindow`;
    ``None``: the 1-minute load average).

    Token-by-token decoding is many tiny matrix products; when other processes keep the
    cores busy, two OpenMP threads wait on each other at every barrier: on this 2-core machine
    at load 12 one decoding step took 3.8 s with 2 threads and 0.15 s with 1."""
    configured = os.environ.get("QMD_FINETUNE_THREADS")
    if configured and configured.isdigit() and int(configured) > 0:
        return int(configured)
    return cpu_share.free_threads(others)


class EmbeddedEngine:
    """Loads one model once; generates for a list of conversations in length-sorted batches."""

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        self.model_name = model_key(model)
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._heads: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._splits: dict[str, tuple[tuple[int, ...], Any]] = {}
        self._constraints: dict[str, Any] = {}
        self._decoder: Any = None  # shared_head.SharedHeadDecoder for Llama models
        self._window = cpu_share.CpuWindow()  # other processes' CPU use, read before each batch
        self._threads = 1
        # interrupt() moves the epoch on: work started in an earlier epoch stops at its next token
        self.epoch = 0
        self.source = ""

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from transformers.utils import logging as hf_logging

            from qmd_finetune import embedded
            from qmd_finetune.training import models

            hf_logging.disable_progress_bar()
            self._window = cpu_share.CpuWindow()  # what the others use while this process loads
            name = (
                "local/smollm2" if self.model_name in MODEL_NAMES else str(Path(self.model_name).expanduser())
            )
            dtype, int8 = embedded.generation_dtype()
            model, tokenizer, source = models.load(name, dtype=dtype)
            if int8:
                model = embedded.quantize_int8(model)
            tokenizer.padding_side = "left"
            self.source = source.describe() + (" (int8)" if int8 else "")
            self._tokenizer, self._model = tokenizer, model
            self._decoder = shared_head.SharedHeadDecoder(model) if shared_head.supports(model) else None
            self._threads = generation_threads(self._window.others(wait=True))
            import torch

            torch.set_num_threads(self._threads)  # for this thread; each batch fits its own

    def interrupt(self) -> None:
        self.epoch += 1

    def generate(
        self,
        conversations: list[Messages],
        params: GenParams,
        epoch: int | None = None,
        on_done: Any = None,
    ) -> list[Completion]:
        """Answers in input order; rows are batched by prompt head and tail length.
        ``on_done(index, completion)`` is called as each batch finishes.

        Raises :class:`Interrupted` when :meth:`interrupt` was called after ``epoch`` (default:
        now), even while the model was still loading."""
        import torch

        epoch = self.epoch if epoch is None else epoch
        self.load()
        prepared = []
        for messages in conversations:
            if self.epoch != epoch:
                raise Interrupted("interrupted")
            prepared.append(self._prepare(_plain_messages(messages)))
        results: list[Completion | None] = [None] * len(prepared)
        with self._lock, torch.inference_mode():
            for batch in _batches(prepared, MAX_BATCH):
                self._fit_threads()
                answers = self._run([prepared[i] for i in batch], params, epoch)
                for i, completion in zip(batch, answers, strict=True):
                    results[i] = completion
                    if on_done is not None:
                        on_done(i, completion)
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ internals

    def _fit_threads(self) -> None:
        """Before each batch, in the thread that runs it: as many torch threads as the other
        processes left free since the last batch (a run started just after another one takes
        both cores once that one's load is gone, and gives one back when a neighbour starts)."""
        import torch

        others = self._window.others()
        if others is not None:
            self._threads = generation_threads(others)
        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)

    def _prepare(self, messages: Messages) -> _Prepared:
        """Token ids of the prompt head (everything before the last user turn) and the tail.

        The head's ids and shown lines are worked out once per distinct head; the split is
        checked once against tokenizing the whole prompt (it falls on a chat-template marker)."""
        tokenizer = self._tokenizer
        last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        query = str(messages[last_user]["content"]) if last_user >= 0 else ""
        full = render_prompt(tokenizer, messages)
        head_text = (
            tokenizer.apply_chat_template(messages[:last_user], tokenize=False) if last_user > 0 else ""
        )
        if head_text not in self._splits:
            self._splits[head_text] = self._split(messages[:last_user], head_text, full)
        head, shown = self._splits[head_text]
        if head and full.startswith(head_text):
            return _Prepared(
                head, tokenizer(full[len(head_text) :], add_special_tokens=False)["input_ids"], query, shown
            )
        return _Prepared((), tokenizer(full, add_special_tokens=False)["input_ids"], query, shown)

    def _split(self, head_messages: Messages, head_text: str, full: str) -> tuple[tuple[int, ...], Any]:
        from qmd_finetune import quality

        shown = quality.prompt_lines(
            [f"Query: {m['content']}" if m["role"] == "user" else str(m["content"]) for m in head_messages]
        )
        if not head_text or not full.startswith(head_text):
            return (), shown
        tokenizer = self._tokenizer
        head = tokenizer(head_text, add_special_tokens=False)["input_ids"]
        tail = tokenizer(full[len(head_text) :], add_special_tokens=False)["input_ids"]
        whole = tokenizer(full, add_special_tokens=False)["input_ids"]
        return (tuple(head), shown) if head + tail == whole else ((), shown)

    def _head_cache(self, head: tuple[int, ...]) -> Any:
        """The keys and values of a prompt head, computed once and kept (LRU): a
        :class:`~qmd_finetune.generate.shared_head.Head` with the shared-head decoder, else
        the model's own cache."""
        import torch

        if not head:
            return None
        if head in self._heads:
            self._heads.move_to_end(head)
            return self._heads[head]
        if self._decoder is not None:
            cached = self._decoder.head(list(head))
        else:
            cached = self._model(input_ids=torch.tensor([head]), use_cache=True).cache
        self._heads[head] = cached
        while len(self._heads) > PREFIX_CACHE_SIZE:
            self._heads.popitem(last=False)
        return cached

    def _state(self, head: tuple[int, ...], size: int, capacity: int) -> Any:
        """Decoding state for one batch after ``head``: ``step(ids, positions, valid=None)``
        returns the last position's logits, ``select(index)`` drops finished rows."""
        cached = self._head_cache(head)
        if self._decoder is not None:
            return self._decoder.rows(cached, size, capacity)
        return _CacheState(self._model, cached, len(head), size)

    def _constraint(self, mode: str) -> tuple[Any, LineGuard]:
        """The format constraint of ``mode`` and the line guard, built once (they scan the vocabulary)."""
        from qmd_finetune.decoding import FormatConstraint

        if mode not in self._constraints:
            constraint = FormatConstraint(self._tokenizer, [], 0, mode)
            self._constraints[mode] = (constraint, LineGuard(self._tokenizer, constraint.pieces))
        return self._constraints[mode]

    def _run(self, rows: list[_Prepared], params: GenParams, epoch: int) -> list[Completion]:
        import torch

        if self.epoch != epoch:
            raise Interrupted("interrupted")
        tokenizer = self._tokenizer
        pad = tokenizer.pad_token_id
        eos = tokenizer.eos_token_id
        size = len(rows)
        head_len = len(rows[0].head)
        width = max(len(r.tail) for r in rows)
        tail = torch.full((size, width), pad, dtype=torch.long)
        tail_mask = torch.zeros((size, width), dtype=torch.long)
        for i, row in enumerate(rows):
            tail[i, width - len(row.tail) :] = torch.tensor(row.tail)
            tail_mask[i, width - len(row.tail) :] = 1
        positions = (head_len + tail_mask.cumsum(dim=1) - 1).clamp(min=head_len)
        state = self._state(rows[0].head, size, width + params.max_new_tokens)
        constraint, guard = self._constraint(params.decoding) if params.decoding != "free" else (None, None)
        generated = torch.zeros((size, 0), dtype=torch.long)
        active = torch.arange(size)
        done_len = [params.max_new_tokens] * size
        finished = [False] * size
        stopped = [False] * size
        logits = state.step(tail, positions, tail_mask.bool())
        next_pos = positions[:, -1:] + 1
        for step in range(params.max_new_tokens):
            if self.epoch != epoch:
                raise Interrupted("interrupted")
            if constraint is not None and guard is not None:
                constraint.queries = guard.queries = [rows[i].query for i in active.tolist()]
                guard.shown = [rows[i].shown for i in active.tolist()]
                guard.remaining = params.max_new_tokens - step
                logits = guard(generated[active], constraint(generated[active], logits))
            if params.repetition_penalty != 1.0 and generated.shape[1]:
                logits = _penalize(logits, generated[active], params.repetition_penalty)
            token = _choose(logits, params)
            column = torch.full((size,), pad, dtype=torch.long)
            column[active] = token
            generated = torch.cat([generated, column[:, None]], dim=1)
            keep = []
            for j, row in enumerate(active.tolist()):
                if int(token[j]) in (eos, pad):
                    done_len[row], finished[row] = step, True
                elif params.stop and _tail_has_stop(tokenizer, generated[row], params.stop):
                    done_len[row], finished[row], stopped[row] = step + 1, True, True
                else:
                    keep.append(j)
            if not keep or step == params.max_new_tokens - 1:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep)
                state.select(index)
                next_pos, token = next_pos[index], token[index]
                active = active[index]
            logits = state.step(token[:, None], next_pos)
            next_pos = next_pos + 1
        results = []
        for i, row in enumerate(rows):
            new = generated[i, : done_len[i]].tolist()
            text = tokenizer.decode(new, skip_special_tokens=True)
            text, cut = _apply_stop(text, params.stop)
            if params.decoding != "free":
                text = clean_answer(text, row.query, row.shown)
            reason = "stop" if finished[i] or cut else "length"
            results.append(Completion(text.strip(), len(row.head) + len(row.tail), len(new), reason))
        return results


def _batches(prepared: list[_Prepared], most: int) -> list[list[int]]:
    """Indices of ``prepared`` in batches: one prompt head each, sorted by tail length, at
    most ``most`` rows and of even size (50 rows at most 32: 25 and 25, not 32 and 18; a
    step costs about the same for 18 rows as for 25)."""
    order = sorted(range(len(prepared)), key=lambda i: (prepared[i].head, len(prepared[i].tail)))
    groups: list[list[int]] = []
    for i in order:
        if groups and prepared[groups[-1][0]].head == prepared[i].head:
            groups[-1].append(i)
        else:
            groups.append([i])
    batches = []
    for group in groups:
        count = -(-len(group) // max(1, most))
        size = -(-len(group) // count)
        batches.extend(group[start : start + size] for start in range(0, len(group), size))
    return batches


class _CacheState:
    """The generic path for any causal LM: the model's forward with its own key/value cache
    (the head's cache copied into every row)."""

    def __init__(self, model: Any, head_cache: Any, head_len: int, size: int) -> None:
        import torch

        self.model = model
        self.cache = None
        if head_cache is not None:
            self.cache = copy.deepcopy(head_cache)
            if size > 1:
                self.cache.batch_repeat_interleave(size)
        self.mask = torch.ones((size, head_len), dtype=torch.long)
        # only the last position's logits, where the model's forward can be told so
        self.extra = {"logits_to_keep": 1} if _accepts(model.forward, "logits_to_keep") else {}

    def step(self, ids: Any, positions: Any, valid: Any = None) -> Any:
        import torch

        new = torch.ones(ids.shape, dtype=torch.long) if valid is None else valid.long()
        self.mask = torch.cat([self.mask, new], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            **self.extra,
        )
        self.cache = out.cache
        return out.logits[:, -1, :].float()

    def select(self, index: Any) -> None:
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]


def _accepts(function: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _choose(logits: Any, params: GenParams) -> Any:
    import torch

    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > params.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, sorted_idx, sorted_probs)
    return torch.multinomial(probs, 1)[:, 0]


def _penalize(logits: Any, generated: Any, penalty: float) -> Any:
    """transformers' repetition penalty: tokens already written lose probability."""
    import torch

    seen = logits.gather(1, generated)
    logits.scatter_(1, generated, torch.where(seen > 0, seen / penalty, seen * penalty))
    return logits


def _tail_has_stop(tokenizer: Any, ids: Any, stops: tuple[str, ...], tail: int = 3) -> bool:
    text = tokenizer.decode(ids[-tail:])
    return any(stop in text for stop in stops)


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


_Request = tuple[Messages, GenParams, concurrent.futures.Future, int]


class _Batcher:
    """One worker thread; requests queued within a short window share one generate() call."""

    def __init__(self, max_batch: int = MAX_BATCH, window: float = BATCH_WINDOW_S):
        self.max_batch = max_batch
        self.window = window
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._pending: list[_Request] = []
        self._live: list[_Request] = []

    def submit(self, messages: Messages, params: GenParams) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._ensure_thread()
        self._queue.put((messages, params, future, engine(params.model).epoch))
        return future

    def fail_waiting(self, exc: BaseException) -> None:
        """Every queued request ends with ``exc`` (after an interrupt nothing more is started)."""
        waiting = list(self._pending) + list(self._live)
        self._pending.clear()
        while True:
            try:
                waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for _, _, future, _ in waiting:
            if future.done():
                continue
            # the running batch's futures are already running (it may still be loading the model)
            if future.running() or future.set_running_or_notify_cancel():
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    future.set_exception(exc)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="embedded-llm", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                pending.append(self._queue.get())
            deadline = time.monotonic() + self.window
            # collect a few batches' worth: the engine sorts them by length into batches
            while len(pending) < self.max_batch * 4:
                timeout = deadline - time.monotonic()
                try:
                    pending.append(
                        self._queue.get(timeout=max(timeout, 0)) if timeout > 0 else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            params = pending[0][1]
            batch = [p for p in pending if p[1] == params][: self.max_batch * 4]
            pending[:] = [p for p in pending if not any(p is b for b in batch)]
            live = [b for b in batch if b[2].set_running_or_notify_cancel()]
            if not live:
                continue
            self._live = live
            try:
                # the oldest epoch: a batch holding a request from before an interrupt stops
                epoch = min(b[3] for b in live)
                # each batch's callers get their answers when it finishes, not after all of them
                engine(params.model).generate(
                    [b[0] for b in live],
                    params,
                    epoch,
                    on_done=lambda i, c, live=live: _settle(live[i][2], c),
                )
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                self._live = []
                for b in live:
                    _settle(b[2], exception=exc)
                if isinstance(exc, Interrupted):
                    self.fail_waiting(exc)
                continue
            self._live = []


def _settle(
    future: concurrent.futures.Future, result: Any = None, exception: BaseException | None = None
) -> None:
    """Set a future's outcome unless an interrupt already did."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)


_ENGINES: dict[str, EmbeddedEngine] = {}
_ENGINES_LOCK = threading.Lock()
_BATCHER = _Batcher()


def engine(model: str = DEFAULT_MODEL) -> EmbeddedEngine:
    """The engine of ``model`` (``smollm2`` or a directory), created once per process."""
    key = model_key(model)
    key = DEFAULT_MODEL if key in MODEL_NAMES else str(Path(key).expanduser().resolve())
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = EmbeddedEngine(key)
        return _ENGINES[key]


def interrupt() -> None:
    """Stop the running batch between two tokens and fail every queued request with
    :class:`Interrupted` (the caller decides what an unfinished request means)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
    for eng in engines:
        eng.interrupt()
    _BATCHER.fail_waiting(Interrupted("interrupted"))


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
    decoding: str = "free",
    model: str = DEFAULT_MODEL,
) -> list[Completion]:
    params = GenParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, decoding=decoding, model=model
    )
    results: list[Completion] = []
    for start in range(0, len(conversations), max(1, batch_size)):
        results.extend(engine(model).generate(conversations[start : start + batch_size], params))
    return results


def submit(messages: Messages, params: GenParams) -> concurrent.futures.Future:
    """Queue one conversation for the shared batching worker; the future yields a Completion."""
    return _BATCHER.submit(messages, params)


async def agenerate(messages: Messages, params: GenParams) -> Completion:
    return await asyncio.wrap_future(submit(messages, params))


def params_from_optional(optional_params: dict[str, Any], model: str = DEFAULT_MODEL) -> GenParams:
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
        model=model_key(model),
    )


def _model_response(model: str, completion: Completion, model_response: Any) -> Any:
    from litellm.types.utils import Usage

    model_response.choices[0].message.content = completion.text
    model_response.choices[0].finish_reason = completion.finish_reason
    model_response.model = model if is_local(model) else f"{PROVIDER}/{model}"
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
            check_model(model)
            params = params_from_optional(kwargs.get("optional_params") or {}, model)
            result = submit(messages, params).result(timeout=_timeout(kwargs.get("timeout")))
            return _model_response(model, result, kwargs["model_response"])

        async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            check_model(model)
            params = params_from_optional(kwargs.get("optional_params") or {}, model)
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
