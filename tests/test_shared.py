"""Limits shared through a real Redis: one in-flight count, one rate, leases that expire,
a namespace that never holds the key, and a fallback that never hangs or loses a job."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from _redis_support import redis_server, require_redis
from _wait import until
from conftest import API_KEY

import qwen_edit_async as qe
from qwen_edit_async._config import Secret
from qwen_edit_async._limits import LocalLimits
from qwen_edit_async.testing import FakeProvider

if TYPE_CHECKING:
    from qwen_edit_async._shared import RedisLimits  # needs the redis package

pytestmark = pytest.mark.redis

URL = "https://example.com/a.png"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """The server CI started (``QWEN_EDIT_TEST_REDIS``), else one started here."""
    given = os.environ.get("QWEN_EDIT_TEST_REDIS")
    if given:
        require_redis()
        yield given
        return
    with redis_server() as server:
        yield server.url


def requests(count: int, prompt: str = "edit") -> list[qe.EditRequest]:
    return [qe.EditRequest(images=[URL], prompt=f"{prompt} {i}") for i in range(count)]


def client(fake: FakeProvider, redis_url: str | None, **options: object) -> qe.QwenEditClient:
    return qe.QwenEditClient(
        "vtrix",
        api_key=API_KEY,
        base_url=fake.url,
        shared=redis_url,
        **options,  # type: ignore[arg-type]
    )


async def leases(
    redis_url: str, fake: FakeProvider, key: str = API_KEY, *, which: str = "leases"
) -> int:
    """Slots held now (leases not yet expired) for ``key`` on ``fake``; ``which="accepted"``:
    those whose create the provider accepted."""
    import redis.asyncio as aioredis

    from qwen_edit_async._shared import namespace

    conn = aioredis.Redis.from_url(redis_url)
    try:
        name = namespace("vtrix", fake.url, Secret(key)) + ":" + which
        seconds, micros = await conn.time()  # leases are scored on the server's clock
        return int(await conn.zcount(name, seconds * 1000 + micros // 1000, "+inf"))
    finally:
        await conn.aclose()


def shared_limits(redis_url: str, key: str, *, adaptive: bool = True) -> RedisLimits:
    """Shared limits on their own namespace (``key``), not yet opened."""
    from qwen_edit_async._shared import RedisLimits

    return RedisLimits(
        redis_url,
        LocalLimits(max_in_flight=64, submit_rate=None, adaptive=adaptive),
        provider="vtrix",
        base_url=f"http://127.0.0.1:1/{key}",
        api_key=Secret(API_KEY),
    )


async def test_two_clients_share_one_in_flight_count(redis_url: str) -> None:
    """Two clients on one key, each allowed 3 jobs, sharing Redis: the fake never sees more
    than 3 running together (each alone would run 3, together 6)."""
    async with FakeProvider(api_key=API_KEY, latency=0.15) as fake:
        options = {"max_in_flight": 3, "adaptive_limits": False, "poll_initial": 0.05}
        async with client(fake, redis_url, **options) as a, client(fake, redis_url, **options) as b:

            async def run(c: qe.QwenEditClient, out: list[qe.Outcome]) -> None:
                out.extend([o async for o in c.edit_many(requests(12))])

            first: list[qe.Outcome] = []
            second: list[qe.Outcome] = []
            async with anyio.create_task_group() as group:
                group.start_soon(run, a, first)
                group.start_soon(run, b, second)
            assert a.statistics().in_flight == 0 and b.statistics().in_flight == 0
        assert all(o.ok for o in first + second)
        assert fake.stats.peak_running == 3
        assert await leases(redis_url, fake) == 0  # every slot given back


async def test_the_namespace_is_a_hash_never_the_key(redis_url: str) -> None:
    """Nothing stored in Redis contains the API key; another key gets another namespace, so
    its clients do not share (each runs its own 2 jobs at once)."""
    import redis.asyncio as aioredis

    async with FakeProvider(latency=0.15) as fake:
        options = {"max_in_flight": 2, "adaptive_limits": False, "poll_initial": 0.05}
        a = qe.QwenEditClient("vtrix", api_key="sk-first-key-1234", base_url=fake.url,
                              shared=redis_url, **options)  # type: ignore[arg-type]  # fmt: skip
        b = qe.QwenEditClient("vtrix", api_key="sk-other-key-5678", base_url=fake.url,
                              shared=redis_url, **options)  # type: ignore[arg-type]  # fmt: skip
        async with a, b, anyio.create_task_group() as group:
            for c in (a, b):
                group.start_soon(lambda c=c: _drain(c.edit_many(requests(6))))
        assert fake.stats.peak_running == 4
    conn = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in conn.scan_iter("*")]
        assert keys and all(k.startswith(b"qwen-edit:") for k in keys)
        for k in keys:
            kind = await conn.type(k)
            value = await conn.hgetall(k) if kind == b"hash" else {}
            text = repr(k) + repr(value)
            assert "sk-first" not in text and "sk-other" not in text
    finally:
        await conn.aclose()


async def _drain(outcomes: object) -> None:
    async for outcome in outcomes:  # type: ignore[attr-defined]
        assert outcome.ok, outcome.error


async def test_learned_limits_are_shared(redis_url: str) -> None:
    """A limit one client learned from the quota is where the next client starts."""
    async with FakeProvider(api_key=API_KEY, latency=0.2, max_running=3) as fake:
        key = "sk-learning-key"
        fake.api_key = None
        first = qe.QwenEditClient("vtrix", api_key=key, base_url=fake.url, shared=redis_url,
                                  max_in_flight=32, poll_initial=0.05)  # fmt: skip
        async with first:
            await _drain(first.edit_many(requests(30)))
            learned = first.statistics().in_flight_limit
        assert learned <= 4 and fake.stats.refused_concurrency > 0
        second = qe.QwenEditClient("vtrix", api_key=key, base_url=fake.url, shared=redis_url,
                                   max_in_flight=32)  # fmt: skip
        async with second:
            assert second.statistics().in_flight_limit == learned


async def test_an_unreachable_redis_falls_back_to_local_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down from the start: one log line says so, the jobs run on local limits and
    all succeed, nothing hangs."""
    from _redis_support import free_port

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    caplog.set_level(logging.WARNING, logger="qwen_edit_async")
    async with FakeProvider(api_key=API_KEY, latency=0.05) as fake:
        with anyio.fail_after(20):
            async with client(fake, nowhere, max_in_flight=4, poll_initial=0.05) as c:
                await _drain(c.edit_many(requests(10)))
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "127.0.0.1" in warnings[0].getMessage()


async def _sync_jobs_at_the_provider(shared: str, count: int) -> None:
    """Run 64 DashScope jobs of 30 s through ``shared`` until the fake holds ``count`` of
    them at once: long before the first image is made."""
    async with FakeProvider(api_key=API_KEY, latency=30.0) as fake:
        c = qe.QwenEditClient(
            "dashscope", api_key=API_KEY, base_url=fake.url, shared=shared, max_in_flight=64
        )
        async with c, anyio.create_task_group() as group:

            async def run() -> None:
                async for _ in c.edit_many(requests(64)):
                    pass

            group.start_soon(run)
            await until(lambda: fake.stats.running >= count, seconds=8.0)
            group.cancel_scope.cancel()


async def test_the_local_fallback_opens_up_the_sync_route_before_any_image_is_made() -> None:
    """Redis down from the start, a synchronous provider: the fallback's slow start counts
    creates left unanswered as accepted, as a client without ``shared=`` does, so 36 jobs
    reach the provider long before the first 30 s image (it held 4 when the shared limits
    did not pass the sent create on to the local ones)."""
    from _redis_support import free_port

    await _sync_jobs_at_the_provider(f"redis://127.0.0.1:{free_port()}/0", 36)


async def test_shared_limits_open_up_the_sync_route_before_any_image_is_made(
    redis_url: str,
) -> None:
    """A synchronous provider through shared limits: a leased create left unanswered for
    0.1 s counts for the shared slow start (one slot each), so 24 jobs reach the provider
    long before the first 30 s image (the shared limits waited for answers and held 4
    leases meanwhile)."""
    await _sync_jobs_at_the_provider(redis_url, 24)


async def test_redis_lost_mid_run_loses_no_job(caplog: pytest.LogCaptureFixture) -> None:
    """Redis stops while jobs hold shared slots and others wait: the client logs it once,
    goes on with local limits, and every job still ends with its result."""
    caplog.set_level(logging.WARNING, logger="qwen_edit_async")
    with redis_server() as server:
        url = server.url
        async with FakeProvider(api_key=API_KEY, latency=0.2) as fake:
            options = {"max_in_flight": 3, "adaptive_limits": False, "poll_initial": 0.05}
            with anyio.fail_after(30):
                async with client(fake, url, **options) as c:
                    outcomes: list[qe.Outcome] = []
                    async with anyio.create_task_group() as group:

                        async def run() -> None:
                            outcomes.extend([o async for o in c.edit_many(requests(15))])

                        group.start_soon(run)
                        while fake.stats.jobs_created < 3:
                            await anyio.sleep(0.01)
                        server.stop()
    assert len(outcomes) == 15 and all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1


_HOLDER = textwrap.dedent(
    """
    import sys, anyio, qwen_edit_async as qe

    async def main(fake_url, redis_url):
        async with qe.QwenEditClient("vtrix", api_key="sk-holder", base_url=fake_url,
                                     shared=redis_url, max_in_flight=3, lease_ttl=1.0,
                                     adaptive_limits=False) as client:
            req = qe.EditRequest(images=["https://example.com/a.png"], prompt="[stuck]")
            for _ in range(3):
                await client.submit(req)
            print("held", flush=True)
            await anyio.sleep(60)

    anyio.run(main, sys.argv[1], sys.argv[2])
    """
)


@pytest.mark.slow
async def test_a_process_killed_with_sigkill_gives_its_slots_back_within_the_ttl(
    redis_url: str,
) -> None:
    """A process holding 3 shared slots is killed with -9: its leases expire within the
    lease TTL (1 s here, renewed while it lived), and another client then gets the slots."""
    async with FakeProvider(latency=0.05) as fake:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, fake.url, redis_url],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert line.strip() == "held"
            await anyio.sleep(1.5)  # past one TTL: the leases live on because they are renewed
            assert await leases(redis_url, fake, "sk-holder") == 3
            assert await leases(redis_url, fake, "sk-holder", which="accepted") == 3
            killed = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            with anyio.fail_after(5):
                while await leases(redis_url, fake, "sk-holder") > 0:
                    await anyio.sleep(0.05)
            assert await leases(redis_url, fake, "sk-holder", which="accepted") == 0
            assert time.monotonic() - killed <= 1.0 + 0.5
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        other = qe.QwenEditClient("vtrix", api_key="sk-holder", base_url=fake.url,
                                  shared=redis_url, max_in_flight=3, adaptive_limits=False,
                                  poll_initial=0.05)  # fmt: skip
        async with other:
            with anyio.fail_after(10):
                await _drain(other.edit_many(requests(3)))


@pytest.mark.slow
def test_two_cli_runs_split_a_manifest_with_shared_limits(redis_url: str, tmp_path: Path) -> None:
    """Two `qwen-edit run --shared URL --concurrency 3` processes, each with half of one
    manifest (as on two machines): both succeed, and the fake never runs more than 3 jobs
    at once in total, because the two runs share one in-flight count."""
    from tests._bulk_support import FakeServer, edits, start_cli, write_images, write_manifest

    write_images(tmp_path)
    jobs = edits(8)
    server = FakeServer("--latency", "0.3")
    try:
        procs = []
        for half in (0, 1):
            manifest = write_manifest(tmp_path / f"part{half}.jsonl", jobs[half::2])
            args = ["run", manifest, "--out", tmp_path / f"out{half}", "--provider", "vtrix"]
            args += ["--base-url", server.url, "--progress", "none", "--concurrency", "3"]
            procs.append(start_cli(*args, "--shared", redis_url))
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert "4 succeeded, 0 failed" in out
        stats = server.stats()
        assert stats["jobs_created"] == 8
        assert stats["peak_running"] <= 3
    finally:
        server.close()


async def test_a_burst_within_the_shared_rate_goes_at_once(redis_url: str) -> None:
    """The shared schedule allows the same short burst as the local pace: at a learned
    1,000 creates/s, 40 creates in a row wait for nothing (each used to wait 1 ms more than
    the last), while at 4 creates/s the second one still waits its turn."""

    qe.set_testing(False)
    for rate, waits in ((1000.0, False), (4.0, True)):
        limits = shared_limits(redis_url, f"burst-{rate}-{uuid.uuid4().hex}")
        async with anyio.create_task_group() as group:
            await limits.open(group)
            limits._learned.rate = rate
            for _ in range(40 if not waits else 2):
                await limits.pace()
            assert (limits._rate_waited_at > 0.0) is waits
            await limits.aclose()
            group.cancel_scope.cancel()


def test_the_shared_slow_start_adds_one_slot_per_accepted_create() -> None:
    """Accepts reach the shared state in batches from several processes, each counting
    itself bound while it has waiters: one slot each (two, as a lone process adds, overshot
    a shared quota of 8 and had 15% of creates refused with four processes)."""
    from qwen_edit_async._learning import Learned

    limits = shared_limits("redis://127.0.0.1:1/0", "slow-start")
    state = Learned(in_flight=4.0, rate=4.0)
    assert limits._apply(state, events=[("accepted", 1.0)] * 3)
    assert state.in_flight == 7.0


async def test_a_refused_job_waits_for_a_lease_without_holding_one(redis_url: str) -> None:
    """A concurrency refusal while other leases are held: the refused job goes back to the
    queue and, once a lease is free, retries at once. It used to take the lease and then
    sleep up to 2 s on it, keeping a slot from every process sharing the quota."""

    qe.set_testing(False)

    key = uuid.uuid4().hex  # a namespace of its own
    a, b = shared_limits(redis_url, key), shared_limits(redis_url, key)
    others, refused_job = [object() for _ in range(3)], object()
    returned = anyio.Event()

    async def refuse() -> None:
        await b.refused(refused_job, "concurrency", None, 30.0)
        returned.set()

    async with anyio.create_task_group() as group:
        await a.open(group)
        await b.open(group)
        for holder in others:
            await a.acquire(holder)
            a.accepted(holder)  # running at the provider
        await b.acquire(refused_job)
        group.start_soon(refuse)
        with anyio.fail_after(10):
            while b._waiters == 0:  # the limit dropped to the three others: it queues
                await anyio.sleep(0.01)
            a.release(others[0])
            while refused_job not in b._leases:
                await anyio.sleep(0.01)
        await anyio.wait_all_tasks_blocked()
        assert returned.is_set()
        await a.aclose()
        await b.aclose()
        group.cancel_scope.cancel()


async def test_a_lease_freed_by_another_process_wakes_the_waiter(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process waiting for a shared slot hears another give one back (announced through
    Redis) and takes it at once, however long it would wait between looks; it used to find
    out only by looking again, every 25 ms."""
    from qwen_edit_async import _shared

    monkeypatch.setattr(_shared, "POLL", 600.0)
    monkeypatch.setattr(_shared, "POLL_UNHEARD", 600.0, raising=False)
    key = uuid.uuid4().hex
    a = shared_limits(redis_url, key, adaptive=False)
    b = shared_limits(redis_url, key, adaptive=False)
    a._learned.in_flight = b._learned.in_flight = 2.0
    held, waiting = [object(), object()], object()
    async with anyio.create_task_group() as group:
        await a.open(group)
        await b.open(group)
        for holder in held:
            await a.acquire(holder)
        while not b._heard:
            await anyio.sleep(0.01)
        group.start_soon(b.acquire, waiting)
        while b._waiters == 0:
            await anyio.sleep(0.01)
        a.release(held[0])
        with anyio.fail_after(10):  # a bound against hanging, far below the 600 s look
            while waiting not in b._leases:
                await anyio.sleep(0.01)
        await a.aclose()
        await b.aclose()
        group.cancel_scope.cancel()


async def test_a_concurrency_refusal_cuts_to_the_accepted_jobs_of_every_process(
    redis_url: str,
) -> None:
    """Five leases held in another process, three of them with their create accepted (the
    other two wait for the pace or for their create's answer): a concurrency refusal cuts
    the shared limit to 3, the jobs running at the provider. It used to cut to every other
    lease (5), one less per refusal, while a burst of refusals came back."""
    key = uuid.uuid4().hex
    a, b = shared_limits(redis_url, key), shared_limits(redis_url, key)
    a._learned.in_flight = 10.0  # published by the first to open
    held, refused_job = [object() for _ in range(5)], object()
    async with anyio.create_task_group() as group:
        await a.open(group)
        await b.open(group)
        for holder in held:
            await a.acquire(holder)
        for holder in held[:3]:
            a.accepted(holder)
        await b.acquire(refused_job)
        with anyio.fail_after(10):
            await b.refused(refused_job, "concurrency", None, 0.0, retrying=False)
        assert b.snapshot().in_flight == 3
        await a.aclose()
        await b.aclose()
        group.cancel_scope.cancel()


async def test_accepts_while_leases_wait_for_the_pace_do_not_grow_the_limit(
    redis_url: str,
) -> None:
    """Jobs wait for a lease while one of this process's leases waits for the shared pace:
    the rate holds it back, not the concurrency, so an accept then is not a reason to grow
    the in-flight limit (growing on it took four processes to 26 slots against a quota of
    8 while the rate let 4 creates/s out, and 19 creates were refused when the rate caught
    up)."""
    from qwen_edit_async._learning import Learned

    qe.set_testing(False)
    limits = shared_limits(redis_url, uuid.uuid4().hex)
    limits._learned = Learned(in_flight=2.0, rate=1.0)  # one create a second
    first, paced, queued = object(), object(), object()
    async with anyio.create_task_group() as group:
        await limits.open(group)
        await limits.acquire(first)
        await limits.acquire(paced)
        await limits.pace()  # the first create goes at once
        group.start_soon(limits.pace)  # the second waits its turn
        group.start_soon(limits.acquire, queued)  # a third job waits for a lease
        with anyio.fail_after(10):
            while not (limits._pacing and limits._waiters):
                await anyio.sleep(0.01)
        limits.accepted(first)
        (event,) = limits._events
        state = Learned(in_flight=2.0, rate=1.0)
        limits._apply(state, events=[event])
        assert state.in_flight == 2.0
        group.cancel_scope.cancel()
    with anyio.CancelScope(shield=True):
        await limits.aclose()


async def test_above_the_last_cut_one_probe_at_a_time(redis_url: str) -> None:
    """After a cut to 3, the learned limit has grown to 6: the first lease above 3 is a
    probe, and no other lease above the cut is given (in any process) until the provider
    accepts that probe's create or its lease is given back. Each process used to take its
    own lease up to 6 at once, and every one of them was refused against a quota of 3."""
    import time

    key = uuid.uuid4().hex
    a, b = shared_limits(redis_url, key), shared_limits(redis_url, key)
    cut_at = time.time()
    a._learned.in_flight, a._learned.in_flight_base = 6.0, 3.0
    a._learned.in_flight_cut_at = cut_at  # published by the first to open

    async def take(limits: RedisLimits) -> bool:
        """One try at a lease, as acquire makes it."""
        keys = [limits._leases_key, limits._state_key, limits._accepted_key, limits._probe_key]
        lease = uuid.uuid4().hex
        return bool(await limits._call("acquire", keys, [lease, limits._ttl_ms, 1]))

    held, probe = [object() for _ in range(3)], object()
    async with anyio.create_task_group() as group:
        await a.open(group)
        await b.open(group)
        for holder in held:
            await a.acquire(holder)
            a.accepted(holder)
        await a.acquire(probe)  # the fourth: a probe above the cut
        assert not await take(b)  # a fifth waits for the probe's answer
        a.accepted(probe)
        await a._mark_accepted()
        assert await take(b)  # accepted: the next probe may go
        assert not await take(a)  # and it is the only one again
        await a.aclose()
        await b.aclose()
        group.cancel_scope.cancel()
