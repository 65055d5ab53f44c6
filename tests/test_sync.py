"""SyncQwenEditClient: every method, blocking, against the fake provider (``qwen_fake``)."""

from __future__ import annotations

import asyncio
import gc
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

import qwen_edit_async as qe
from qwen_edit_async.testing import FakeProvider

URL = "https://example.com/a.png"


def sync_client(
    fake: FakeProvider, provider: str = "vtrix", **options: object
) -> qe.SyncQwenEditClient:
    """A sync client on ``provider``'s dialect of the fake, with quick polling."""
    options.setdefault("poll_initial", 0.05)
    options.setdefault("poll_max_interval", 0.2)
    return qe.SyncQwenEditClient(provider, api_key="sk-any", base_url=fake.url, **options)  # type: ignore[arg-type]


def loop_threads() -> int:
    """Threads running a sync client's event loop."""
    return sum(t.name == "qwen-edit-sync" for t in threading.enumerate())


def wait_until(condition: object, limit: float = 10.0) -> None:
    """Block until ``condition()`` is true, failing after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.mark.parametrize("provider", ["dashscope", "vtrix"])
def test_edit_and_download_block_and_return(
    qwen_fake: FakeProvider, provider: str, tmp_path: pathlib.Path
) -> None:
    """edit returns the result (sync and task providers); download saves the images."""
    with sync_client(qwen_fake, provider) as client:
        result = client.edit([URL], "Make it blue", n=2, size="1024*1536")
        paths = client.download(result, tmp_path, stem="out")
        stats = client.statistics()
    assert len(result.images) == 2 and result.provider == provider
    assert [p.name for p in paths] == ["out-0.png", "out-1.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
    assert (stats.completed, stats.failed, stats.in_flight) == (1, 0, 0)


def test_submit_then_attach_from_another_sync_client(qwen_fake: FakeProvider) -> None:
    """submit returns a job at once; a second client attaches to its task id; an unknown id
    is TaskNotFoundError from attach."""
    with sync_client(qwen_fake) as first:
        job = first.submit(qe.EditRequest(images=[URL], prompt="later", n=2))
        task_id = job.id
        assert job.task_id == task_id
        assert job.status in (qe.JobStatus.PENDING, qe.JobStatus.SUCCEEDED)
        assert len(job.result(timeout=30).images) == 2
        assert job.done() and job.exception() is None
    with sync_client(qwen_fake) as second:
        again = second.attach(task_id)
        assert again.result().task_id == task_id
        with pytest.raises(qe.TaskNotFoundError):
            second.attach("task-does-not-exist")
        assert second.statistics().in_flight == 0


def test_errors_reach_the_caller_with_their_type(qwen_fake: FakeProvider) -> None:
    """A validation error, a failed task and a job-result timeout are raised as such."""
    with sync_client(qwen_fake) as client:
        with pytest.raises(qe.ValidationError) as info:
            client.edit([URL], "x", n=9)
        assert info.value.field == "n"
        with pytest.raises(qe.JobFailedError):
            client.edit([URL], "[fail] x")
        stuck = client.submit([URL], "[stuck] x")
        with pytest.raises(TimeoutError):
            stuck.result(timeout=0.1)
        assert not stuck.done()  # waiting less is not cancelling
        stuck.cancel()
        wait_until(stuck.done)
        assert stuck.status is qe.JobStatus.CANCELLED


def test_edit_many_iterates_outcomes_for_requests_and_dicts(qwen_fake: FakeProvider) -> None:
    """edit_many yields one outcome per request (requests or dicts), failures included."""
    items: list[qe.EditRequest | dict[str, object]] = [
        {"images": [URL], "prompt": f"dict {i}"} for i in range(5)
    ]
    items.append(qe.EditRequest(images=[URL], prompt="[fail] struct"))
    with sync_client(qwen_fake, max_in_flight=3) as client:
        outcomes = list(client.edit_many(items))
    assert sorted(o.index for o in outcomes) == list(range(6))
    assert [o.ok for o in sorted(outcomes, key=lambda o: o.index)] == [True] * 5 + [False]


def test_leaving_edit_many_early_cancels_its_jobs(qwen_fake: FakeProvider) -> None:
    """Breaking out of the loop cancels the jobs still running: their slots come back."""
    requests = [qe.EditRequest(images=[URL], prompt="quick")] + [
        qe.EditRequest(images=[URL], prompt=f"[stuck] {i}") for i in range(6)
    ]
    with sync_client(qwen_fake, max_in_flight=4) as client:
        for outcome in client.edit_many(requests):
            assert outcome.ok
            break
        wait_until(lambda: client.statistics().in_flight == 0)
        stats = client.statistics()
        assert (stats.waiting, stats.polling) == (0, 0)
        assert stats.completed == 1
        # Four slots, seven requests: the worker that ran the quick job may start the next
        # one while its outcome crosses to this thread, but nothing starts once the loop
        # was left (without the cancellation all seven would be created).
        assert qwen_fake.stats.creates <= 5


def test_with_options_view_shares_the_client(qwen_fake: FakeProvider) -> None:
    """A view fails fast on a 429 with max_attempts=1, counts in the client's statistics,
    and closing the view closes nothing."""
    with sync_client(qwen_fake) as client:
        fast = client.with_options(max_attempts=1, job_timeout=30, model="qwen-image-edit-max")
        qwen_fake.script("rate_limit")
        with pytest.raises(qe.RateLimitError):
            fast.edit([URL], "fail fast")
        assert fast.edit([URL], "max").images
        fast.close()
        assert not client.closed and fast.config.job_timeout == 30
        assert client.statistics().completed == 1
    assert fast.closed
    models = [job["model"] for job in qwen_fake.stats.snapshot()["jobs"]]
    assert models == ["qwen_image_edit_max"]


def test_closing_cancels_jobs_and_stops_the_loop_thread(qwen_fake: FakeProvider) -> None:
    """close() cancels unfinished jobs and ends the loop thread; the client then refuses
    work; closing twice is fine."""
    before = loop_threads()
    client = sync_client(qwen_fake)
    assert loop_threads() == before + 1
    stuck = client.submit([URL], "[stuck] x")
    client.close()
    assert loop_threads() == before
    assert client.closed and stuck.status is qe.JobStatus.CANCELLED
    with pytest.raises(RuntimeError, match="closed"):
        client.edit([URL], "x")
    with pytest.raises(RuntimeError, match="closed"):
        client.edit_many([])
    assert client.statistics().failed == 1
    client.close()


def test_an_unclosed_client_is_closed_when_dropped(qwen_fake: FakeProvider) -> None:
    """A client dropped without close() stops its loop thread when collected."""
    before = loop_threads()
    client = sync_client(qwen_fake)
    assert client.edit([URL], "x").images
    del client
    gc.collect()
    assert loop_threads() == before


def test_construction_errors_leave_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad argument is raised from the constructor, and no loop thread is left behind."""
    before = loop_threads()
    monkeypatch.delenv("QWEN_EDIT_API_KEY", raising=False)
    monkeypatch.delenv("VTRIX_API_KEY", raising=False)
    with pytest.raises(qe.ConfigurationError, match="no API key"):
        qe.SyncQwenEditClient("vtrix")
    with pytest.raises(qe.ValidationError):
        qe.SyncQwenEditClient("vtrix", api_key="k", max_in_flight=0)
    assert loop_threads() == before


async def test_works_where_the_calling_thread_already_runs_a_loop(
    qwen_fake: FakeProvider,
) -> None:
    """As in Jupyter: blocking code called from a coroutine, on a thread whose asyncio loop
    is running, uses the sync client normally."""
    asyncio.get_running_loop()  # this test's own loop is running in this thread

    def notebook_cell() -> list[qe.Outcome]:
        with sync_client(qwen_fake) as client:
            assert client.edit([URL], "in a notebook").images
            return list(client.edit_many([{"images": [URL], "prompt": "many"}] * 3))

    outcomes = notebook_cell()
    assert [o.ok for o in outcomes] == [True, True, True]


def test_a_script_that_never_closes_still_exits(tmp_path: pathlib.Path) -> None:
    """A script that leaves a sync client (with a stuck job and an unfinished edit_many)
    and a threaded fake open exits promptly: both are closed at exit, nothing hangs."""
    script = tmp_path / "leak.py"
    script.write_text(
        "import qwen_edit_async as qe\n"
        "from qwen_edit_async.testing import fake_in_thread\n"
        "running = fake_in_thread()\n"
        "fake = running.__enter__()\n"
        "client = qe.SyncQwenEditClient('vtrix', api_key='k', base_url=fake.url)\n"
        "assert client.edit(['https://example.com/a.png'], 'x').images\n"
        "job = client.submit(['https://example.com/a.png'], '[stuck] y')\n"
        "outcomes = client.edit_many([{'images': ['https://example.com/a.png'],"
        " 'prompt': '[stuck] z'}])\n"
        "print('leaving')\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "leaving"


def test_ctrl_c_while_waiting_cancels_the_job(qwen_fake: FakeProvider) -> None:
    """An interrupt (Ctrl-C) during a blocking edit reaches the caller and cancels the job:
    its slot comes back instead of the edit running on unwatched."""
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main

    with sync_client(qwen_fake) as client:
        timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                client.edit([URL], "[stuck] forever")
        finally:
            timer.cancel()
        wait_until(lambda: client.statistics().in_flight == 0)
        assert client.statistics().failed == 1


@pytest.mark.parametrize(
    "name", ["__init__", "edit", "submit", "attach", "edit_many", "with_options", "download"]
)
def test_the_sync_twin_takes_the_async_clients_arguments(name: str) -> None:
    """Every argument the blocking client shares with the async one has the same kind,
    default and type, so the twins cannot drift apart (the sync client leaves out only
    what needs the caller's loop: a session, callbacks, shared limits, async iterables)."""
    import inspect

    own = inspect.signature(getattr(qe.QwenEditClient, name)).parameters
    twin = inspect.signature(getattr(qe.SyncQwenEditClient, name)).parameters
    assert set(twin) <= set(own)
    left_out = {"__init__": {"session", "callbacks", "shared"}}.get(name, set())
    assert set(own) - set(twin) == left_out
    for key, param in twin.items():
        mine = own[key]
        assert (param.kind, param.default) == (mine.kind, mine.default), key
        if not (name == "edit_many" and key == "requests"):  # no async iterables there
            assert param.annotation == mine.annotation, key
