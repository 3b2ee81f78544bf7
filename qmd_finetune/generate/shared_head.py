"""Batched decoding for Llama-architecture models with the prompt head shared by every row.

Every query the embedded provider answers starts with the same ~450 prompt tokens (system
text and few-shot turns). The keys and values of that head are computed once. The generic
path (``transformers`` with a ``DynamicCache``) copies them into every row of a batch,
``torch.cat``s each layer's whole cache at every token, and expands the key/value heads for
grouped-query attention. On 2 CPU cores that copying took about a third of the decoding
time at batch 20. Here the head is kept once per layer, shape ``(kv_heads, head_len, dim)``,
and every row reads it:

- scores against the head are one batched matrix product per key/value head for all rows
  and query heads of the group;
- each row's own tokens (the query's tail and the answer so far) live in buffers allocated
  once per batch and written in place;
- the softmax runs over both parts without concatenating them.

The layers' own modules do the rest (norms, projections, rotary embedding, MLP), so int8
quantized linear layers and bf16 weights work unchanged. Only the last position's logits
are computed. :func:`supports` says which models this applies to; anything else uses the
generic path. ``tests/generate/test_shared_head.py`` checks the logits against the model's
own forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Own tokens per row a batch state has room for at first (the query's tail is about 12-30).
INITIAL_ROOM = 128


def supports(model: Any) -> bool:
    """A plain ``LlamaForCausalLM`` (SmolLM2 and models trained from it), no sliding window."""
    config = getattr(model, "config", None)
    if type(model).__name__ != "LlamaForCausalLM" or getattr(config, "model_type", "") != "llama":
        return False
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    return bool(layers) and getattr(config, "sliding_window", None) is None


@dataclass
class Head:
    """The keys and values of a prompt head, per layer ``(kv_heads, length, head_dim)``."""

    keys: list[Any]
    values: list[Any]
    length: int


class SharedHeadDecoder:
    """Runs a Llama model's layers over batches that share one prompt head."""

    def __init__(self, model: Any) -> None:
        config = model.config
        self.model = model
        self.layers = list(model.model.layers)
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.groups = self.heads // self.kv_heads
        self.scaling = self.head_dim**-0.5
        self.dtype = next(p.dtype for p in model.model.embed_tokens.parameters())
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.rotary = apply_rotary_pos_emb

    def logits(self, last: Any) -> Any:
        """float32 logits ``(rows, vocab)`` of the final hidden states ``(rows, hidden)``.

        For a plain linear head, ``weight @ last.T``: MKL runs the tall (49,152 x 576) matrix
        this way in 29 ms instead of 56 for 32 rows (28 ms instead of 42 for 20) on this
        2-core machine, and the head was a third of each decoding step. Quantized heads (int8)
        are called as they are."""
        import torch

        head = self.model.lm_head
        if type(head) is torch.nn.Linear and head.bias is None and head.weight.dtype == last.dtype:
            return torch.mm(head.weight, last.t()).t().float()
        return head(last).float()

    def head(self, ids: list[int]) -> Head:
        """Run ``ids`` (one sequence, no padding) and keep its keys and values."""
        import torch

        rows = self.rows(None, 1, len(ids))
        tokens = torch.tensor([ids], dtype=torch.long)
        rows.step(tokens, torch.arange(len(ids))[None, :])
        return Head(
            [k[0, :, : len(ids)].contiguous() for k in rows.keys],
            [v[0, :, : len(ids)].contiguous() for v in rows.values],
            len(ids),
        )

    def rows(self, head: Head | None, size: int, capacity: int) -> Rows:
        """State for a batch of ``size`` rows after ``head``, room for ``capacity`` own tokens each."""
        return Rows(self, head, size, capacity)


class Rows:
    """One batch: each row's own keys and values, and which of their positions are real tokens."""

    def __init__(self, decoder: SharedHeadDecoder, head: Head | None, size: int, capacity: int) -> None:
        import torch

        self.decoder = decoder
        self.head = head if head is not None and head.length else None
        self.capacity = capacity
        self.valid = torch.zeros((size, capacity), dtype=torch.bool)
        self.length = 0
        # Room for the first tokens only; it doubles as answers grow (a batch of 32 with room
        # for 400 new tokens would otherwise hold about 600 MB, most of it never written).
        self.keys = [self._buffer(size, min(capacity, INITIAL_ROOM)) for _ in decoder.layers]
        self.values = [self._buffer(size, min(capacity, INITIAL_ROOM)) for _ in decoder.layers]

    def _buffer(self, size: int, room: int) -> Any:
        import torch

        d = self.decoder
        # never read before written: every position below ``length`` is written by ``step``
        return torch.empty((size, d.kv_heads, room, d.head_dim), dtype=d.dtype)

    def _grow(self, end: int) -> None:
        room = self.keys[0].shape[2]
        if end <= room:
            return
        room = min(self.capacity, max(end, 2 * room))
        size = self.valid.shape[0]
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                new = self._buffer(size, room)
                new[:, :, : self.length] = old[:, :, : self.length]
                buffers[i] = new

    def select(self, index: Any) -> None:
        """Keep only the rows ``index`` (rows that finished leave the batch)."""
        self.keys = [k[index] for k in self.keys]
        self.values = [v[index] for v in self.values]
        self.valid = self.valid[index]

    def step(self, ids: Any, positions: Any, valid: Any = None) -> Any:
        """Feed ``ids`` ``(rows, n)`` at ``positions``; ``valid`` is False on left padding
        (default: every token is real).

        Returns the float32 logits of each row's last position ``(rows, vocab)``."""
        import torch

        d = self.decoder
        inner = d.model.model
        size, width = ids.shape
        start, end = self.length, self.length + width
        if end > self.capacity:
            raise ValueError(f"batch state holds {self.capacity} tokens per row, asked for {end}")
        self._grow(end)
        self.valid[:, start:end] = True if valid is None else valid
        # key j is visible to query i when it is a real token at or before i; a padding query
        # sees itself, so no row of the softmax is empty.
        keys_at = torch.arange(end)
        queries_at = torch.arange(start, end)
        causal = keys_at[None, :] <= queries_at[:, None]
        own = keys_at[None, :] == queries_at[:, None]
        visible = (self.valid[:, None, :end] & causal[None]) | own[None]  # (rows, n, end)
        grouped = visible[:, None, None].expand(size, 1, d.groups, width, end).reshape(size, 1, -1, end)
        hidden = inner.embed_tokens(ids)
        cos, sin = inner.rotary_emb(hidden, positions)
        for i, layer in enumerate(d.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(size, width, d.heads, d.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(size, width, d.kv_heads, d.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(size, width, d.kv_heads, d.head_dim).transpose(1, 2)
            q, k = d.rotary(q, k, cos, sin)
            self.keys[i][:, :, start:end] = k
            self.values[i][:, :, start:end] = v
            out = self._attend(i, q, end, grouped)
            hidden = hidden + attn.o_proj(out)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        self.length = end
        last = inner.norm(hidden[:, -1, :])
        return d.logits(last)

    def _attend(self, layer: int, q: Any, end: int, grouped: Any) -> Any:
        """Attention of ``q`` ``(rows, heads, n, dim)`` over the shared head and the rows' own tokens."""
        import torch

        d = self.decoder
        size, _, width, dim = q.shape
        kv, rows_q = d.kv_heads, d.groups * width
        # query heads of one key/value head, stacked: (rows, kv_heads, groups * n, dim)
        qg = q.reshape(size, kv, rows_q, dim)
        own_k = self.keys[layer][:, :, :end]
        own_v = self.values[layer][:, :, :end]
        own = torch.matmul(qg, own_k.transpose(-1, -2)).float() * d.scaling  # (rows, kv, gn, end)
        own = own.masked_fill(~grouped, float("-inf"))
        if self.head is None:
            weights = torch.softmax(own, dim=-1).to(q.dtype)
            out = torch.matmul(weights, own_v)
        else:
            head_k, head_v = self.head.keys[layer], self.head.values[layer]
            # every row's queries against the one head: (kv, rows * gn, head_len)
            shared_q = qg.transpose(0, 1).reshape(kv, size * rows_q, dim)
            shared = torch.bmm(shared_q, head_k.transpose(1, 2)).float() * d.scaling
            shared = shared.view(kv, size, rows_q, -1)
            top = torch.maximum(shared.amax(-1), own.amax(-1).transpose(0, 1))  # (kv, rows, gn)
            shared = (shared - top[..., None]).exp_()
            own = (own - top.transpose(0, 1)[..., None]).exp_()
            total = shared.sum(-1).transpose(0, 1) + own.sum(-1)  # (rows, kv, gn)
            from_head = torch.bmm(shared.to(q.dtype).view(kv, size * rows_q, -1), head_v)
            from_head = from_head.view(kv, size, rows_q, dim).transpose(0, 1)
            out = (from_head.float() + torch.matmul(own.to(q.dtype), own_v).float()) / total[..., None]
            out = out.to(q.dtype)
        # (rows, kv, groups * n, dim) -> (rows, n, heads * dim)
        return out.reshape(size, d.heads, width, dim).transpose(1, 2).reshape(size, width, d.heads * dim)
