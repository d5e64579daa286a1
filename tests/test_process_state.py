"""Process-global state lives in worker/process_state.py: every slot declared there, one reset for
all of them, and no ``global`` statement anywhere else in the product."""
from __future__ import annotations

import ast
import importlib

import pytest

from tests.helpers import REPO
from worker import process_state


def _owner_module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def test_every_declared_slot_is_made_by_its_owner_and_no_other_exists():
    for owner in set(process_state.DECLARED.values()):
        importlib.import_module(_owner_module(owner))
    assert set(process_state.slots()) == set(process_state.DECLARED)
    with pytest.raises(ValueError, match="not declared"):
        process_state.slot("a_new_global", dict)


def test_reset_for_tests_gives_every_slot_its_fresh_value(tmp_path):
    from worker.accounting import job_metrics, pricing
    from worker.rate_limits import limiter

    user = tmp_path / "prices.json"
    user.write_text('{"my-model": {"input": 0, "output": 0}}')
    pricing.use_price_file(user)
    limiter.add_wait_listener(lambda key, seconds: None)
    ids = limiter._REQUEST_IDS.value
    changed = {name: s.value for name, s in process_state.slots().items()}
    process_state.reset_for_tests()
    assert pricing.prices().user_file is None and "my-model" not in pricing.price_table()
    assert limiter._LISTENERS.value == [] and limiter._REQUEST_IDS.value is not ids
    assert job_metrics._JOB_METRICS.value is None
    for name, s in process_state.slots().items():
        assert s.value is not changed[name] or s.value is None, f"{name} kept its value"


def test_first_time_is_true_once_per_key_until_a_reset():
    warned: process_state.Slot[set[str]] = process_state.Slot("local", set)  # not registered: a test's own
    assert process_state.first_time(warned, "a") and not process_state.first_time(warned, "a")
    assert process_state.first_time(warned, "b")
    warned.reset()
    assert process_state.first_time(warned, "a")


def test_no_global_statement_outside_process_state():
    found = []
    for pkg in ("worker", "samplers"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Global):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: global {', '.join(node.names)}")
    assert not found, "process-global state belongs in worker/process_state.py:\n" + "\n".join(found)
