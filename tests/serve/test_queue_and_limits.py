"""The model queue's bound and bookkeeping, and the limits' validation (no server needed)."""
import asyncio
import threading

import pytest

from sosm.serve.limits import ServeLimits
from sosm.serve.queue import ModelQueue, QueueFull


def test_queue_runs_in_order_on_one_thread_and_refuses_beyond_capacity():
    changes, names, gate = [], [], threading.Event()
    queue = ModelQueue(2, on_change=lambda waiting, running: changes.append((waiting, running)))

    def job(i):
        gate.wait(5)
        names.append((i, threading.current_thread().name))
        return i

    futures = [queue.submit(job, i) for i in range(3)]  # one runs (blocked), two wait
    deadline = threading.Event()
    while queue.running != 1 and not deadline.wait(0.01):
        pass
    with pytest.raises(QueueFull, match="queue_size=2"):
        queue.submit(job, 99)
    gate.set()
    assert [f.result(5) for f in futures] == [0, 1, 2]
    assert [i for i, _ in names] == [0, 1, 2] and len({name for _, name in names}) == 1
    queue.shutdown()
    assert (queue.waiting, queue.running) == (0, 0) and changes[-1] == (0, 0)
    assert max(w for w, _ in changes) == 2 and max(r for _, r in changes) == 1


def test_a_waiting_job_cancelled_leaves_the_queue_without_running():
    gate, ran = threading.Event(), []
    queue = ModelQueue(1)
    first = queue.submit(gate.wait, 5)
    while queue.running != 1:
        pass
    second = queue.submit(ran.append, "second")
    assert queue.waiting == 1 and second.cancel()
    assert queue.waiting == 0
    queue.submit(ran.append, "third")  # room again
    gate.set()
    first.result(5)
    queue.shutdown()
    assert ran == ["third"]


def test_run_awaits_the_result():
    queue = ModelQueue(1)
    assert asyncio.run(queue.run(lambda a, b: a + b, 2, 3)) == 5
    queue.shutdown()


@pytest.mark.parametrize("field,value", [("queue_size", 0), ("max_body_bytes", -1), ("max_tokens", 1.5),
                                         ("max_text_tokens", True), ("max_prompt_tokens", 0), ("drain_seconds", 0)])
def test_limits_reject_bad_values_naming_them(field, value):
    with pytest.raises(ValueError, match=field):
        ServeLimits(**{field: value})


def test_prompt_limit_is_bounded_by_the_context():
    assert ServeLimits().prompt_limit(64) == 64
    assert ServeLimits(max_prompt_tokens=10).prompt_limit(64) == 10
    assert ServeLimits(max_prompt_tokens=100).prompt_limit(64) == 64
