"""`pioneer bench serve`'s load client: an open loop counts each latency from the request's scheduled time, so a
server that cannot keep up shows the queue it builds; a closed loop measures from each send."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from pioneer.bench.serve_load import closed_loop, open_loop, percentile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _with_server(service_seconds: float, body):
    """A real HTTP server on loopback that answers one request at a time, each taking ``service_seconds``."""
    lock = asyncio.Lock()
    answered: list[str] = []

    async def predict(request):
        text = (await request.json())["input"]
        async with lock:
            await asyncio.sleep(service_seconds)
        answered.append(text)
        return web.json_response({"prediction": "x"})

    app = web.Application()
    app.router.add_post("/predict", predict)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return await body(f"http://127.0.0.1:{port}"), answered
    finally:
        await runner.cleanup()


def test_an_open_loop_counts_the_queue_a_slow_server_builds():
    # 40 requests due over 0.4 s, served one at a time in 25 ms each: the last is answered about 1 s after the first
    # was due, so it waited about 0.6 s past its own due time, though each service took only 25 ms
    texts = [f"t{i}" for i in range(40)]
    phase, answered = asyncio.run(_with_server(0.025, lambda url: open_loop(url, texts, rate=100)))
    assert phase.codes == {200: 40} and phase.errors == 0 and sorted(answered) == sorted(texts)
    assert max(phase.latencies) > 0.45
    assert phase.wall > 0.9
    assert percentile(phase.send_lag, 0.99) < 0.1  # the client itself kept to the schedule


def test_an_open_loop_below_capacity_sees_only_the_service_time():
    texts = [f"t{i}" for i in range(20)]
    phase, _ = asyncio.run(_with_server(0.005, lambda url: open_loop(url, texts, rate=50)))
    assert phase.codes == {200: 20}
    assert percentile(phase.latencies, 0.5) < 0.1
    assert phase.summary()["answered_per_second"] == pytest.approx(50, rel=0.3)


def test_a_closed_loop_keeps_its_concurrency_and_answers_everything():
    texts = [f"t{i}" for i in range(30)]
    phase, answered = asyncio.run(_with_server(0.01, lambda url: closed_loop(url, texts, concurrency=3)))
    assert phase.codes == {200: 30} and len(answered) == 30
    # three in flight against a one-at-a-time server: each waits for about two others
    assert percentile(phase.latencies, 0.5) >= 0.02


def test_an_open_loop_held_back_by_its_own_connections_still_counts_from_the_due_time():
    # one connection: each request goes only when the one before it came back (what a closed loop would do), yet
    # the latency of each is counted from when it was due, its wait for a connection included
    texts = [f"t{i}" for i in range(40)]
    phase, _ = asyncio.run(_with_server(0.025, lambda url: open_loop(url, texts, rate=100, connections=1)))
    assert phase.codes == {200: 40}
    assert max(phase.latencies) > 0.45
