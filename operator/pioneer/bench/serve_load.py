"""``pioneer bench serve``: a bounded load test of ``pioneer serve`` on loopback, with trace logging on.

A tiny cold start (the builtin smart-home intents, one epoch) is promoted as revision 1 of a DeployedModel and
served by a real ``pioneer serve`` process. An asyncio HTTP client sends ``--requests`` short texts at
``--concurrency`` in flight and measures throughput and latency. Every 2xx answer must be exactly one trace:
the trace store's rows are counted against the 2xx responses (lost or doubled traces are reported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SPEC = """apiVersion: pioneer.dev/v1alpha1
kind: ModelAdaptation
metadata: {name: load}
spec:
  deployedModel: lights
  task: {description: route smart-home commands, labels: [HassTurnOn, HassTurnOff, HassLightSet]}
  data:
    sources: [{builtin: home-assistant-intents, limitPerLabel: 24}]
    evaluation: {size: 15}
  hyperparameters: {epochs: 1, maxLength: 24, batchSize: 16, learningRate: 1.0e-4}
  search: {maxAttempts: 1, configurationsPerIteration: 1, parallelism: 1}
  gate: {tau: 0.05}
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def _load(url: str, texts: list[str], concurrency: int) -> tuple[list[float], dict[int, int], int, float]:
    import httpx

    latencies: list[float] = []
    codes: dict[int, int] = {}
    errors = 0
    queue: asyncio.Queue = asyncio.Queue()
    for t in texts:
        queue.put_nowait(t)

    async def worker(client) -> None:
        nonlocal errors
        while not queue.empty():
            text = queue.get_nowait()
            started = time.perf_counter()
            try:
                r = await client.post(f"{url}/predict", json={"input": text})
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                latencies.append(time.perf_counter() - started)
            except httpx.HTTPError:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, codes, errors, wall


def run(args: argparse.Namespace) -> int:
    import httpx

    from pioneer.bench.common import fresh_workdir, run_adaptation
    from pioneer.data.sources import home_assistant_intents
    from pioneer.traces.store import connect, query

    out = Path(args.out).resolve()
    work = fresh_workdir(args, out)
    _, status, _, best = run_adaptation(SPEC, work)
    if best is None:
        print("bench serve: the cold start produced no model", file=sys.stderr)
        return 1
    db = work / "traces.db"
    port = args.port
    proc = subprocess.Popen([sys.executable, "-m", "pioneer.cli", "serve", "lights", "--artifacts", str(work / "pioneer-artifacts"),
                             "--db", str(db), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": str(args.server_threads)} if args.server_threads else None)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                print("bench serve: the server did not become ready", file=sys.stderr)
                return 1
            time.sleep(0.5)
        pool = [ex.text for ex in home_assistant_intents(200, ["HassTurnOn", "HassTurnOff", "HassLightSet"], seed=3)]
        texts = [pool[i % len(pool)] for i in range(args.requests)]
        asyncio.run(_load(url, texts[: min(100, len(texts))], args.concurrency))  # warm-up, not measured
        before = query(connect(db), "SELECT count(*) FROM traces")[1][0][0]
        latencies, codes, errors, wall = asyncio.run(_load(url, texts, args.concurrency))
        after = query(connect(db), "SELECT count(*) FROM traces")[1][0][0]
    finally:
        proc.terminate()
        proc.wait(30)
    ok = sum(n for c, n in codes.items() if 200 <= c < 300)
    result = {
        "benchmark": "serve", "requests": args.requests, "concurrency": args.concurrency, "responses": codes,
        "connection_errors": errors, "requests_per_second": round(len(latencies) / wall, 1), "wall_seconds": round(wall, 2),
        "p50_ms": round(1000 * _percentile(latencies, 0.50), 1), "p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
        "max_ms": round(1000 * max(latencies, default=float("nan")), 1),
        "traces_logged": after - before, "traces_lost_or_doubled": (after - before) - ok,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if result["traces_lost_or_doubled"] == 0 and errors == 0 else 1
