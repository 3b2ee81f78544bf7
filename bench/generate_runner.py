"""Throughput of the generate runner and of the embedded model (a benchmark, not a test).

1. A local OpenAI-compatible server (separate process, aiohttp) answers every request after a
   fixed latency (50 ms). The runner drives it at concurrency 1, 8 and 64; ideal throughput is
   concurrency / latency. Measured twice: the bare runner (requests only) and the full
   `generate expand` path (parse, score, validate, append to JSONL, SQLite cache).
2. The embedded model: completion tokens/s for the same prompts batched vs one at a time.

    .venv/bin/python bench/generate_runner.py [--latency 0.05] [--skip-model]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# A minimal HTTP/1.1 keep-alive server on asyncio's Protocol API: it answers every POST with
# the same OpenAI chat.completion body after LATENCY seconds. Far cheaper per request than
# aiohttp's server, so on this 2-core machine the client, not the server, is what is measured.
SERVER = textwrap.dedent(
    """
    import asyncio, json, sys
    LATENCY = float(sys.argv[2])
    ANSWER = ("hyde: A compose file puts services on one default network where each service name resolves by DNS.\\n"
              "lex: docker compose network bridge\\nlex: compose service dns names\\n"
              "vec: how do containers in one docker compose file reach each other\\n"
              "vec: what network does docker compose create for services by default")
    BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 60, "total_tokens": 180}}).encode()
    RESPONSE = (b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
                + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY)

    class Chat(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buffer = transport, b""
        def data_received(self, data):
            self.buffer += data
            while True:
                head_end = self.buffer.find(b"\\r\\n\\r\\n")
                if head_end < 0:
                    return
                length = 0
                for line in self.buffer[:head_end].split(b"\\r\\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                end = head_end + 4 + length
                if len(self.buffer) < end:
                    return
                self.buffer = self.buffer[end:]
                asyncio.get_running_loop().call_later(LATENCY, self.reply)
        def reply(self):
            if not self.transport.is_closing():
                self.transport.write(RESPONSE)

    async def main():
        server = await asyncio.get_running_loop().create_server(Chat, "127.0.0.1", int(sys.argv[1]), backlog=1024)
        async with server:
            await server.serve_forever()
    asyncio.run(main())
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(latency)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("bench server did not start")


async def bare_runner(api_base: str, concurrency: int, n: int) -> float:
    from qmd_finetune.generate.providers import GenerationParams, Pricing, ProviderConfig, make_provider
    from qmd_finetune.generate.runner import Job, Runner, RunnerConfig

    provider = make_provider(ProviderConfig(model="openai/bench", api_base=api_base), concurrency)
    runner = Runner(
        provider,
        "openai/bench",
        GenerationParams(max_tokens=100),
        RunnerConfig(concurrency=concurrency, progress=False),
        Pricing(0.0, 0.0),
    )
    jobs = [Job(key=f"q{i}", messages=[{"role": "user", "content": f"query {i}"}]) for i in range(n)]
    start = time.perf_counter()
    await runner.run(jobs, lambda outcome: None)
    return n / (time.perf_counter() - start)


def full_expand(api_base: str, concurrency: int, n: int, workdir: Path) -> float:
    from qmd_finetune.generate.expand import ExpandConfig, run_expand
    from qmd_finetune.generate.providers import GenerationParams
    from qmd_finetune.generate.runner import RunnerConfig

    queries = workdir / f"q{concurrency}.txt"
    queries.write_text("".join(f"docker compose networking case {concurrency}-{i}\n" for i in range(n)))
    cfg = ExpandConfig(
        model="openai/bench",
        queries=queries,
        output=workdir / f"out{concurrency}.jsonl",
        api_base=api_base,
        params=GenerationParams(max_tokens=100),
        runner=RunnerConfig(concurrency=concurrency, progress=False),
    )
    start = time.perf_counter()
    result = run_expand(cfg)
    elapsed = time.perf_counter() - start
    assert result.kept == n, (result.kept, result.rejected_by_stage, result.stats.reasons)
    return n / elapsed


def bench_runner(latency: float) -> None:
    from qmd_finetune.generate.providers import pricing_for

    pricing_for("openai/bench")  # imports LiteLLM (its cost map) once, outside the timings
    proc, api_base = start_server(latency)
    try:
        print(f"runner vs local OpenAI-compatible server, fixed latency {latency * 1000:.0f} ms")
        print(f"{'path':<8} {'conc':>5} {'n':>6} {'req/s':>9} {'ideal':>9} {'% ideal':>8} {'x seq':>7}")
        with tempfile.TemporaryDirectory() as tmp:
            for path in ("bare", "expand"):
                sequential = None
                asyncio.run(bare_runner(api_base, 4, 8))  # warm-up: imports, connections
                for concurrency in (1, 8, 64):
                    n = max(40, concurrency * 100)
                    if path == "bare":
                        rate = asyncio.run(bare_runner(api_base, concurrency, n))
                    else:
                        rate = full_expand(api_base, concurrency, n, Path(tmp))
                    sequential = sequential or rate
                    ideal = concurrency / latency
                    print(
                        f"{path:<8} {concurrency:>5} {n:>6} {rate:>9.1f} {ideal:>9.1f} "
                        f"{100 * rate / ideal:>7.1f}% {rate / sequential:>6.1f}x"
                    )
    finally:
        proc.terminate()
        proc.wait()


def bench_model(prompts: int, max_new_tokens: int) -> None:
    from qmd_finetune import embedded
    from qmd_finetune.generate import local_llm
    from qmd_finetune.generate.prompts import load_prompt

    prompt = load_prompt()
    queries = [
        "docker compose networking",
        "sourdough starter",
        "who is Marie Curie",
        "python async await",
        "tenant rights eviction",
        "marathon training plan",
        "causes of world war i",
        "git rebase vs merge",
    ][:prompts]
    conversations = [prompt.messages(q) for q in queries]
    engine = local_llm.engine()
    engine.load()
    params = local_llm.GenParams(max_new_tokens=max_new_tokens)
    engine.generate(conversations[:1], local_llm.GenParams(max_new_tokens=4))  # warm-up
    print(
        f"\nembedded model ({embedded.best_dtype()}), {len(queries)} prompts, max_new_tokens={max_new_tokens}"
    )
    start = time.perf_counter()
    single = [engine.generate([c], params)[0] for c in conversations]
    t_single = time.perf_counter() - start
    start = time.perf_counter()
    batched = engine.generate(conversations, params)
    t_batched = time.perf_counter() - start
    tok_single = sum(r.completion_tokens for r in single)
    tok_batched = sum(r.completion_tokens for r in batched)
    rate_single, rate_batched = tok_single / t_single, tok_batched / t_batched
    print(f"one at a time: {tok_single} tokens in {t_single:.1f}s = {rate_single:.1f} tok/s")
    print(f"batched ({len(queries)}):   {tok_batched} tokens in {t_batched:.1f}s = {rate_batched:.1f} tok/s")
    print(f"batched / one at a time: {rate_batched / rate_single:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    print(
        f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (other jobs share this machine)"
    )
    bench_runner(args.latency)
    if not args.skip_model:
        bench_model(args.prompts, args.max_new_tokens)


if __name__ == "__main__":
    main()
