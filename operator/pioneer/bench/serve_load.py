"""``pioneer bench serve``: a bounded load test of ``pioneer serve`` on loopback, with trace logging on.

A tiny cold start (the builtin smart-home intents, one epoch) is promoted as revision 1 of a DeployedModel and
served by a real ``pioneer serve`` process. An asyncio HTTP client on the same machine then drives it twice:

- **open loop** (``--rate``): requests are sent on a fixed schedule, ``rate`` per second, whether or not earlier
  ones have been answered, the way independent users arrive. Each latency is counted from the request's
  *scheduled* send time, so a server (or a client) that falls behind cannot hide the queue it builds
  (coordinated omission). This answers "does the server hold R requests/s, and at what p99?".
- **closed loop** (``--concurrency``): that many requests always in flight, each sent as soon as the last came
  back. This measures saturation throughput; its latency is queueing at that concurrency, by Little's law.

Every 2xx answer must be exactly one trace: the trace store's rows are counted against the 2xx responses of each
phase (lost or doubled traces are reported, and fail the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
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


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (NaN for no values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


@dataclass
class Phase:
    """What one load phase observed: latencies of answered requests, status codes, transport errors, wall time."""

    latencies: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    wall: float = 0.0
    send_lag: list[float] = field(default_factory=list)  # open loop: how late the client sent each request

    def record(self, status: int, latency: float) -> None:
        self.codes[status] = self.codes.get(status, 0) + 1
        self.latencies.append(latency)

    @property
    def ok(self) -> int:
        return sum(n for c, n in self.codes.items() if 200 <= c < 300)

    def summary(self) -> dict:
        out = {"responses": {str(c): n for c, n in sorted(self.codes.items())}, "connection_errors": self.errors,
               "answered_per_second": round(len(self.latencies) / self.wall, 1) if self.wall else 0.0,
               "wall_seconds": round(self.wall, 2),
               "p50_ms": round(1000 * percentile(self.latencies, 0.50), 1),
               "p99_ms": round(1000 * percentile(self.latencies, 0.99), 1),
               "max_ms": round(1000 * max(self.latencies, default=float("nan")), 1)}
        if self.send_lag:
            out["client_send_lag_p99_ms"] = round(1000 * percentile(self.send_lag, 0.99), 1)
        return out


def _session(connections: int):
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections, force_close=False),
                                 timeout=aiohttp.ClientTimeout(total=60))


async def _post(session, url: str, text: str) -> int:
    async with session.post(f"{url}/predict", json={"input": text}) as r:
        await r.read()
        return r.status


async def closed_loop(url: str, texts: list[str], concurrency: int) -> Phase:
    """``concurrency`` requests always in flight; each latency from its own send."""
    import aiohttp

    phase, queue = Phase(), list(reversed(texts))

    async def worker(session) -> None:
        while queue:
            text = queue.pop()
            started = time.perf_counter()
            try:
                status = await _post(session, url, text)
            except (aiohttp.ClientError, TimeoutError):
                phase.errors += 1
                continue
            phase.record(status, time.perf_counter() - started)

    async with _session(concurrency) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        phase.wall = time.perf_counter() - started
    return phase


async def open_loop(url: str, texts: list[str], rate: float, connections: int = 512) -> Phase:
    """Request ``i`` is due at ``start + i / rate``, answered or not the ones before it; each latency is counted
    from that due time (a late send is the queue's cost too, never hidden)."""
    import aiohttp

    phase = Phase()
    loop = asyncio.get_running_loop()

    async def one(session, due: float, text: str) -> None:
        await asyncio.sleep(max(0.0, due - loop.time()))
        phase.send_lag.append(max(0.0, loop.time() - due))
        try:
            status = await _post(session, url, text)
        except (aiohttp.ClientError, TimeoutError):
            phase.errors += 1
            return
        phase.record(status, loop.time() - due)

    async with _session(connections) as session:
        start = loop.time() + 0.1
        await asyncio.gather(*(one(session, start + i / rate, text) for i, text in enumerate(texts)))
        phase.wall = loop.time() - start
    return phase


def _wait_ready(url: str, proc: subprocess.Popen, seconds: float = 120) -> bool:
    import httpx

    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=30).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    return False


def run(args: argparse.Namespace) -> int:
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
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.server_threads)} if args.server_threads else {})}
    proc = subprocess.Popen([sys.executable, "-m", "pioneer.cli", "serve", "lights", "--artifacts", str(work / "pioneer-artifacts"),
                             "--db", str(db), "--port", str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{args.port}"

    def traces() -> int:
        return query(connect(db), "SELECT count(*) FROM traces")[1][0][0]

    phases: dict[str, dict] = {}
    lost_or_doubled = 0
    try:
        if not _wait_ready(url, proc):
            print("bench serve: the server did not become ready", file=sys.stderr)
            return 1
        pool = [ex.text for ex in home_assistant_intents(200, ["HassTurnOn", "HassTurnOff", "HassLightSet"], seed=3)]
        texts = [pool[i % len(pool)] for i in range(args.requests)]
        asyncio.run(closed_loop(url, texts[: min(200, len(texts))], 8))  # warm-up, not measured
        runs = [("open_loop", lambda: open_loop(url, texts, args.rate))] if args.rate else []
        runs += [("closed_loop", lambda: closed_loop(url, texts, args.concurrency))] if args.concurrency else []
        for name, load in runs:
            before = traces()
            phase = asyncio.run(load())
            logged = traces() - before
            lost_or_doubled += abs(logged - phase.ok)
            phases[name] = {**phase.summary(), "traces_logged": logged, "traces_lost_or_doubled": logged - phase.ok}
            print(f"bench serve: {name}: {json.dumps(phases[name])}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    result = {"benchmark": "serve", "requests": args.requests, "rate": args.rate, "concurrency": args.concurrency,
              "server_threads": args.server_threads or "torch default", "cpus": os.cpu_count(), **phases}
    if "open_loop" in phases:
        held = phases["open_loop"]
        result["target"] = {"rate": args.rate, "p99_ms_below": args.p99_target_ms,
                            "met": held["p99_ms"] < args.p99_target_ms and held["responses"].get("200", 0) == args.requests}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    errors = sum(p["connection_errors"] for p in phases.values())
    return 0 if lost_or_doubled == 0 and errors == 0 else 1
