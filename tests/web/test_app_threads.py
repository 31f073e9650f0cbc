"""web.gunicorn_worker.AppThreads: the served stack's hand-off of each
request from its greenlet to a native thread and back."""

from __future__ import annotations

import threading
import time

import gevent
import pytest

from web.gunicorn_worker import AppThreads


def test_a_call_runs_in_a_native_thread_and_returns_or_raises_in_the_greenlet() -> None:
    threads = AppThreads(2)
    caller = threading.get_ident()
    assert threads.apply(lambda a, b: (a + b, threading.get_ident()), (2, 3))[0] == 5
    assert threads.apply(threading.get_ident, ()) != caller
    with pytest.raises(ZeroDivisionError):
        threads.apply(lambda: 1 / 0, ())
    assert threads.apply(str, (7,)) == "7"  # a failure leaves the threads working


def test_greenlets_wait_while_the_threads_work_in_parallel() -> None:
    threads = AppThreads(4)
    started = time.monotonic()
    # time.sleep releases the GIL in a native thread; the hub stays free meanwhile.
    calls = [gevent.spawn(threads.apply, time.sleep, (0.3,)) for _ in range(4)]
    ticks = 0
    while not all(call.ready() for call in calls):
        gevent.sleep(0.01)
        ticks += 1
    assert time.monotonic() - started < 1.0  # 4 x 0.3 s in parallel, not in turn
    assert ticks > 5  # the hub kept running other greenlets


def test_a_greenlet_that_stops_waiting_does_not_disturb_the_next_calls() -> None:
    threads = AppThreads(1)
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            threads.apply(time.sleep, (0.2,))
    assert threads.apply(lambda: "next", ()) == "next"
