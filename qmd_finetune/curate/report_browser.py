"""The row browser of the HTML report: every kept and rejected row, searchable, in the same file.

Rows are embedded as gzip-compressed JSON in base64 and unpacked in the page with the
browser's ``DecompressionStream`` (no library, no CDN); a page of rows is drawn at a time, so
100k rows stay usable. Past :data:`MAX_ROWS` per side (kept, rejected) a seeded sample is
embedded and the page says how many of how many it holds.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import polars as pl

from qmd_finetune.curate.summary import reason_kind

MAX_ROWS = 100_000
"""Rows embedded per side (kept, rejected); more are sampled (seeded) and the counts shown."""

COLUMNS = ("status", "query", "output", "category", "score", "deductions", "flags", "source", "reason")


def _sample(frame: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    if frame.height <= limit:
        return frame
    return frame.with_row_index("_order").sample(limit, seed=seed).sort("_order").drop("_order")


def _kept_rows(kept: pl.DataFrame) -> list[list[Any]]:
    def column(name: str, default: Any = None) -> list[Any]:
        return kept.get_column(name).to_list() if name in kept.columns else [default] * kept.height

    sources = [f"{s}:{n}" if s is not None else "" for s, n in zip(column("_source"), column("_line"))]
    return [
        ["kept", q, o or [], c or "", None if s is None else round(s, 1), d or [], f or [], src, ""]
        for q, o, c, s, d, f, src in zip(
            column("query"),
            column("output"),
            column("category"),
            column("score"),
            column("deductions"),
            column("flags"),
            sources,
        )
    ]


def _rejected_row(source: str, line: int | None, stage: str, reason: str, raw: str | None) -> list[Any]:
    """A ledger row; its ``raw`` JSON gives query and output when it parses, else the raw text."""
    record: dict[str, Any] = {}
    if raw:
        try:
            parsed = json.loads(raw)
            record = parsed if isinstance(parsed, dict) else {}
        except (ValueError, RecursionError):  # a ledger row's raw text is any line
            record = {}
    output = record.get("output")
    if not isinstance(output, list) or not all(isinstance(i, list) and len(i) == 2 for i in output):
        output = [["raw", raw or ""]] if not record else []
    score = record.get("score")
    return [
        "rejected",
        str(record.get("query") or ""),
        output,
        str(record.get("category") or ""),
        round(score, 1) if isinstance(score, (int, float)) else None,
        [str(d) for d in record.get("deductions") or []],
        [str(f) for f in record.get("flags") or []],
        f"{source}:{line}" if line is not None else str(source),
        f"{stage}: {reason_kind(reason)}",
    ]


def payload(kept: pl.DataFrame, rejected: pl.DataFrame | None, limit: int = MAX_ROWS, seed: int = 0) -> str:
    """The browser's rows as base64 of gzip-compressed JSON ``{columns, rows, counts}``."""
    rejected = rejected if rejected is not None else pl.DataFrame()
    kept_shown = _sample(kept, limit, seed)
    rejected_shown = _sample(rejected, limit, seed) if rejected.height else rejected
    rows = _kept_rows(kept_shown)
    if rejected_shown.height:
        rows.extend(
            _rejected_row(*values)
            for values in rejected_shown.select("source", "line", "stage", "reason", "raw").iter_rows()
        )
    data = {
        "columns": COLUMNS,
        "rows": rows,
        "counts": {
            "kept": kept.height,
            "kept_shown": kept_shown.height,
            "rejected": rejected.height,
            "rejected_shown": rejected_shown.height,
        },
    }
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    data = text.encode("utf-8", errors="backslashreplace")  # a lone surrogate stays a JSON escape
    return base64.b64encode(gzip.compress(data, compresslevel=6, mtime=0)).decode("ascii")


CSS = """
#browser .controls{display:flex;flex-wrap:wrap;gap:8px;align-items:end;margin:8px 0}
#browser label{display:flex;flex-direction:column;font-size:12px;color:#57606a}
#browser input,#browser select{font-size:13px;padding:3px 5px;border:1px solid #d0d7de;border-radius:4px}
#browser input[type=search]{width:260px}#browser input[type=number]{width:70px}
#browser .status{margin:6px 0;color:#57606a}
.brow{background:#fff;border:1px solid #d0d7de;border-left:4px solid #3a9a5b;border-radius:4px;padding:6px 10px;margin:6px 0}
.brow.rejected{border-left-color:#c8553d}
.brow .head{display:flex;gap:10px;flex-wrap:wrap;align-items:baseline}
.brow .q{font-weight:600}.brow .meta{color:#57606a;font-size:12px}
.brow .tag{font-size:11px;border-radius:3px;padding:0 5px;background:#eaeef2}
.brow .tag.reason{background:#fbe3de}.brow .tag.flag{background:#fff1c2}
.brow .lines{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;margin:4px 0}
.brow .lines b{color:#3b6fb6}.brow .ded{font-size:12px;color:#8a4b00}
#browser .pager{display:flex;gap:8px;align-items:center}
"""

SCRIPT = r"""
(async function () {
  const root = document.getElementById('browser');
  const status = root.querySelector('.status');
  const list = root.querySelector('.rows');
  const pageInfo = root.querySelector('.page');
  const $ = (name) => root.querySelector('[name=' + name + ']');
  const PAGE = 50;
  let rows = [], hits = [], page = 0, counts = {};
  async function load() {
    const b64 = document.getElementById('browser-data').textContent.trim();
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return JSON.parse(await new Response(stream).text());
  }
  function fill(select, values) {
    for (const v of [...values].sort()) {
      const o = document.createElement('option');
      o.value = v; o.textContent = v; select.appendChild(o);
    }
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function render() {
    list.replaceChildren();
    const pages = Math.max(1, Math.ceil(hits.length / PAGE));
    page = Math.min(page, pages - 1);
    for (const i of hits.slice(page * PAGE, (page + 1) * PAGE)) {
      const [st, q, out, cat, score, ded, flags, src, reason] = rows[i];
      const card = el('div', 'brow ' + st);
      const head = el('div', 'head');
      head.append(el('span', 'tag', st), el('span', 'q', q || '(no query)'));
      if (cat) head.append(el('span', 'meta', cat));
      head.append(el('span', 'meta', score === null ? 'no score' : 'score ' + score));
      if (reason) head.append(el('span', 'tag reason', reason));
      for (const f of flags) head.append(el('span', 'tag flag', f));
      head.append(el('span', 'meta', src));
      const lines = el('div', 'lines');
      for (const [kind, text] of out) {
        const line = el('div');
        line.append(el('b', '', kind + ': '), document.createTextNode(text));
        lines.append(line);
      }
      card.append(head, lines);
      if (ded.length) card.append(el('div', 'ded', 'deductions: ' + ded.join('; ')));
      list.append(card);
    }
    const note = counts.kept_shown < counts.kept || counts.rejected_shown < counts.rejected
      ? ' (embedded sample: ' + counts.kept_shown.toLocaleString() + ' of ' + counts.kept.toLocaleString() +
        ' kept, ' + counts.rejected_shown.toLocaleString() + ' of ' + counts.rejected.toLocaleString() + ' rejected)'
      : '';
    status.textContent = hits.length.toLocaleString() + ' of ' + rows.length.toLocaleString() + ' rows match' + note;
    pageInfo.textContent = 'page ' + (page + 1) + ' of ' + pages;
    root.dataset.visible = String(list.children.length);
    root.dataset.matches = String(hits.length);
  }
  function apply() {
    const words = $('q').value.toLowerCase().split(/\s+/).filter(Boolean);
    const want = { st: $('status').value, cat: $('category').value, flag: $('flag').value, reason: $('reason').value };
    const lo = $('min').value === '' ? -Infinity : Number($('min').value);
    const hi = $('max').value === '' ? Infinity : Number($('max').value);
    const scoreFilter = $('min').value !== '' || $('max').value !== '';
    hits = [];
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      if (want.st && r[0] !== want.st) continue;
      if (want.cat && r[3] !== want.cat) continue;
      if (want.flag && !r[6].includes(want.flag)) continue;
      if (want.reason && r[8] !== want.reason) continue;
      if (scoreFilter && (r[4] === null || r[4] < lo || r[4] > hi)) continue;
      if (words.length) {
        const text = r.search || (r.search = (r[1] + '\n' + r[2].map((x) => x[1]).join('\n')).toLowerCase());
        if (!words.every((w) => text.includes(w))) continue;
      }
      hits.push(i);
    }
    page = 0;
    render();
  }
  const data = await load();
  rows = data.rows; counts = data.counts;
  const cats = new Set(), flags = new Set(), reasons = new Set();
  for (const r of rows) {
    if (r[3]) cats.add(r[3]);
    for (const f of r[6]) flags.add(f);
    if (r[8]) reasons.add(r[8]);
  }
  fill($('category'), cats); fill($('flag'), flags); fill($('reason'), reasons);
  let timer = null;
  $('q').addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(apply, 150); });
  for (const name of ['status', 'category', 'flag', 'reason', 'min', 'max']) $(name).addEventListener('change', apply);
  root.querySelector('.prev').addEventListener('click', () => { page = Math.max(0, page - 1); render(); });
  root.querySelector('.next').addEventListener('click', () => { page += 1; render(); });
  root.querySelector('.reset').addEventListener('click', () => {
    for (const name of ['q', 'status', 'category', 'flag', 'reason', 'min', 'max']) $(name).value = '';
    apply();
  });
  apply();
  root.dataset.ready = '1';
})().catch((err) => {
  document.querySelector('#browser .status').textContent = 'could not load the rows: ' + err;
  throw err;
});
"""


def section(encoded: str) -> str:
    """The browser's HTML: controls, a status line, the row list and the embedded data."""
    return f"""
<h2 id="rows">Rows</h2>
<div id="browser">
<p class="muted">Every kept and rejected row of this report. Search matches the query and the
output lines (all words); filters combine. Rejected rows show the stage and reason that removed
them; every row shows its file:line.</p>
<div class="controls">
<label>search<input type="search" name="q" placeholder="words in query or output"></label>
<label>status<select name="status"><option value="">all</option><option value="kept">kept</option><option value="rejected">rejected</option></select></label>
<label>category<select name="category"><option value="">all</option></select></label>
<label>flag<select name="flag"><option value="">all</option></select></label>
<label>reject reason<select name="reason"><option value="">all</option></select></label>
<label>score from<input type="number" name="min" step="any"></label>
<label>to<input type="number" name="max" step="any"></label>
<button type="button" class="reset">reset</button>
</div>
<div class="pager"><button type="button" class="prev">◀ previous</button><span class="page"></span><button type="button" class="next">next ▶</button></div>
<div class="status">loading rows…</div>
<div class="rows"></div>
</div>
<script type="application/octet-stream" id="browser-data">{encoded}</script>
<script>{SCRIPT}</script>
"""
