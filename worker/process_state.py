"""Process-global state, in one place. Don't reload this module: every slot would be lost.

tracejudge keeps what the fleet shares in Redis, and what a process needs to judge in one
``Runtime`` (worker/runtime.py) built at start-up and passed down. What is left lives as long
as the process, and every such value is a ``Slot`` declared here, in ``DECLARED``, with its
owner and the reason it cannot be passed down instead:

- ``runtime``: worker/runtime.py. The worker process's Runtime, installed by
  worker/fleet/boot.py; the dramatiq actors fetch it (dramatiq calls them with a message only).
- ``prices``: worker/accounting/pricing.py. The process's price table (shipped prices, user
  prices merged over them); the Runtime installs its own, and ``cost_usd`` reads it.
- ``job_metrics``: worker/accounting/job_metrics.py. Per-job Prometheus metrics; None until a
  fleet process with metrics on enables them.
- ``rate_limit_ids``: worker/rate_limits/limiter.py. This process's prefix for request ids in
  the limiter's Redis sets, drawn again in a forked child, and its counter.
- ``rate_limit_listeners``: worker/rate_limits/limiter.py. Called after every rate-limit wait
  (the fleet's metrics).
- ``self_preference_warned``: worker/judging/pipeline.py. (rubric, producer model) pairs
  already warned about: one warning per process.
- ``identity_warned``: worker/judges/identity.py. Self-hosted endpoints whose served model
  could not be checked, warned about once per process.
- ``log_secrets``: worker/logs.py. The exact values masked in every log line.

The owner declares its slot (``slot(name, fresh)``); only the owner knows the value's type.
``reset_for_tests()`` puts every slot back as a fresh process has it. The test suite's autouse
fixture calls it around every test, so no test resets a global by hand.
A module-level value that changes after import and is not a slot is a mistake (tests/
test_process_state.py fails on a ``global`` statement anywhere else).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

DECLARED: dict[str, str] = {
    "runtime": "worker/runtime.py",
    "prices": "worker/accounting/pricing.py",
    "job_metrics": "worker/accounting/job_metrics.py",
    "rate_limit_ids": "worker/rate_limits/limiter.py",
    "rate_limit_listeners": "worker/rate_limits/limiter.py",
    "self_preference_warned": "worker/judging/pipeline.py",
    "identity_warned": "worker/judges/identity.py",
    "log_secrets": "worker/logs.py",
}


class Slot(Generic[T]):
    """One process-global value: ``value``, the ``lock`` its owner takes around a
    read-then-write, and ``fresh()``, the value a new process starts with."""

    def __init__(self, name: str, fresh: Callable[[], T]) -> None:
        self.name = name
        self._fresh = fresh
        self.lock = threading.RLock()
        self.value: T = fresh()

    def reset(self) -> None:
        with self.lock:
            self.value = self._fresh()


_SLOTS: dict[str, Slot[Any]] = {}


def slot(name: str, fresh: Callable[[], T]) -> Slot[T]:
    """The slot ``name`` (declared in ``DECLARED``), holding ``fresh()`` to begin with."""
    if name not in DECLARED:
        raise ValueError(f"process state {name!r} is not declared in worker/process_state.py")
    made: Slot[T] = Slot(name, fresh)
    _SLOTS[name] = made
    return made


def first_time(warned: Slot[set[K]], key: K) -> bool:
    """True the first time ``key`` is seen by this process (warn-once sets), then False."""
    with warned.lock:
        if key in warned.value:
            return False
        warned.value.add(key)
        return True


def slots() -> dict[str, Slot[Any]]:
    """The slots declared so far (their owners' modules have been imported)."""
    return dict(_SLOTS)


def reset_for_tests() -> None:
    """Every slot as a fresh process has it: no runtime installed, the shipped prices, no
    metrics, nothing warned about, no secrets registered."""
    for each in list(_SLOTS.values()):
        each.reset()
