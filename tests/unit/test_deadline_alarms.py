"""The deadlines' alarms outside gevent: one watchdog thread fires them in time order, never a cancelled one."""

from __future__ import annotations

import threading

from core import deadline


def test_alarms_fire_in_time_order_and_cancelled_ones_never():
    fired: list[int] = []
    done = threading.Event()
    deadline._WATCHDOG.schedule(0.3, lambda: (fired.append(3), done.set()))
    deadline._WATCHDOG.schedule(0.1, lambda: fired.append(1))
    cancel = deadline._WATCHDOG.schedule(0.2, lambda: fired.append(2))
    cancel()
    cancel()  # twice is harmless
    assert done.wait(5)
    assert fired == [1, 3]


def test_many_cancelled_alarms_are_dropped_and_the_live_ones_still_fire():
    fired = threading.Event()
    deadline._WATCHDOG.schedule(0.5, fired.set)
    for _ in range(3 * deadline.COMPACT_AT):
        deadline._WATCHDOG.schedule(60, lambda: None)()
    assert len(deadline._WATCHDOG._queue) < deadline.COMPACT_AT * 2
    assert fired.wait(5)


def test_a_failing_alarm_does_not_stop_the_others():
    fired = threading.Event()

    def broken() -> None:
        raise RuntimeError("boom")

    deadline._WATCHDOG.schedule(0.05, broken)
    deadline._WATCHDOG.schedule(0.1, fired.set)
    assert fired.wait(5)


def test_a_deadline_uses_no_thread_of_its_own():
    before = threading.active_count()
    deadlines = [deadline.FetchDeadline(30) for _ in range(50)]
    for d in deadlines:
        d.start()
    assert threading.active_count() <= before + 1  # at most the watchdog, once per process
    for d in deadlines:
        d.close()
