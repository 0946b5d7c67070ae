"""The API's create lane: a few dedicated threads that run calls from the event loop in turn."""
from __future__ import annotations

import asyncio
import threading

import pytest

from jobs_core.api.lane import ThreadLane


def test_calls_run_on_the_lane_threads_and_return_results_and_errors():
    lane = ThreadLane(2, "test-lane")

    async def main() -> tuple[str, list[str], BaseException]:
        loop_thread = threading.current_thread().name
        names = await asyncio.gather(*(lane.run(lambda: threading.current_thread().name) for _ in range(8)))
        with pytest.raises(ValueError, match="no such floor") as raised:
            await lane.run(_raise, ValueError("no such floor"))
        return loop_thread, names, raised.value

    try:
        loop_thread, names, error = asyncio.run(main())
    finally:
        lane.close()
    assert loop_thread not in names and set(names) <= {"test-lane-0", "test-lane-1"}
    assert isinstance(error, ValueError)


def _raise(error: BaseException) -> None:
    raise error


def test_at_most_its_threads_run_at_once_and_all_of_them_do():
    lane, running, most = ThreadLane(3, "test-lane"), [0], [0]
    guard, go = threading.Lock(), threading.Event()

    def call() -> None:
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
            if running[0] == 3:
                go.set()  # the third concurrent call opens the gate for everyone
        assert go.wait(10), "three calls never ran at once"
        with guard:
            running[0] -= 1

    async def main() -> None:
        await asyncio.gather(*(lane.run(call) for _ in range(12)))

    try:
        asyncio.run(main())
    finally:
        lane.close()
    assert most[0] == 3


def test_a_cancelled_caller_does_not_stop_its_call_and_close_waits_for_it():
    lane, release, finished = ThreadLane(1, "test-lane"), threading.Event(), threading.Event()

    def slow_create() -> str:
        release.wait(10)
        finished.set()
        return "job_1"

    async def main() -> None:
        task = asyncio.ensure_future(lane.run(slow_create))
        await asyncio.sleep(0)  # let it reach the lane
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not finished.is_set()
    release.set()
    lane.close()  # returns only once the call has run to its end
    assert finished.is_set()


def test_a_closed_lane_starts_new_threads_when_used_again():
    lane = ThreadLane(1, "test-lane")
    assert asyncio.run(lane.run(lambda: 1)) == 1
    lane.close()
    assert asyncio.run(lane.run(lambda: 2)) == 2
    lane.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("test-lane")]


def test_a_lane_needs_a_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        ThreadLane(0, "test-lane")
