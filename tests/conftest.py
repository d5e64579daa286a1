"""Shared fixtures: a real redis-server on a free port, both emulators over real HTTP, and a
runtime wired to them. Each test starts from an empty Redis database.

Only fixtures (and the one collection hook below) live here; the helpers and constants they use
are in tests/helpers.py."""
from __future__ import annotations

import shutil
from pathlib import Path

import dramatiq
import pytest
import redis

from emulators.stack import start_redis, stop
from tests.helpers import PIPELINE_RUBRICS, PK, REPO, SK, Webhook, hand_built_runtime, installed, make_env
from worker.settings import Settings
from worker.rubrics.rubric import SHARED_PROMPTS

# Slow tests (the `slow` marker: fleets, Chromium, long real-time waits) in files whose owners mark
# them in place later; everywhere else the mark sits on the test itself. test node id -> why.
@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Every test starts with the process-global state of a fresh process, and leaves none behind
    (worker/process_state.py): no installed runtime, the shipped prices, no metrics or wait
    listeners, nothing warned about, no registered log secrets."""
    from worker import process_state

    process_state.reset_for_tests()
    yield
    process_state.reset_for_tests()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run ./dev test (it installs it) or apt-get install redis-server")
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    stop(proc)


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


@pytest.fixture
def webhook():
    """A local HTTP receiver for alert sinks (tests/helpers.py Webhook): what it received."""
    hook = Webhook()
    hook.start()
    yield hook
    hook.stop()


@pytest.fixture
def langfuse_emu():
    from emulators.langfuse_api import LangfuseEmulator

    emu = LangfuseEmulator(public_key=PK, secret_key=SK)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def judge_emu():
    from emulators.judge_api import JudgeEmulator

    emu = JudgeEmulator()
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def test_rubrics(tmp_path_factory) -> Path:
    """The two pipeline rubrics, fixed, so adding starter rubrics doesn't change what tests expect."""
    target = tmp_path_factory.mktemp("rubrics")
    for name in PIPELINE_RUBRICS:
        shutil.copytree(REPO / "rubrics" / name, target / name)
    for shared in SHARED_PROMPTS:  # prompt files every version is hashed with
        shutil.copy(REPO / "rubrics" / shared, target / shared)
    return target


@pytest.fixture
def settings(langfuse_emu, judge_emu, redis_url, redis_client, test_rubrics) -> Settings:
    return Settings.from_env(make_env(langfuse_emu, judge_emu, redis_url, test_rubrics))


@pytest.fixture
def runtime(settings, redis_client):
    with installed(hand_built_runtime(settings, redis_client)) as rt:
        yield rt


@pytest.fixture
def broker(settings, runtime):
    from worker.fleet.broker import build_broker

    b = build_broker(settings)
    dramatiq.set_broker(b)
    yield b
    b.close()


@pytest.fixture
def start():
    """start(**modes) -> (emulator, httpx client): a Langfuse emulator in the given modes; everything
    started is stopped afterwards."""
    import httpx

    from emulators.langfuse_api import LangfuseEmulator

    started = []

    def _start(**kwargs):
        emu = LangfuseEmulator(public_key=PK, secret_key=SK, **kwargs)
        emu.start()
        client = httpx.Client(base_url=emu.base_url, auth=(PK, SK), timeout=60)
        started.append((emu, client))
        return emu, client

    yield _start
    for emu, client in started:
        client.close()
        emu.stop()


@pytest.fixture
def api(langfuse_emu):
    """The langfuse SDK's API client on the emulator."""
    from langfuse.api import LangfuseAPI

    return LangfuseAPI(base_url=langfuse_emu.base_url, username=PK, password=SK)


@pytest.fixture
def rubric():
    """The shipped helpfulness@v1."""
    from worker.rubrics.rubric import load_rubrics

    return load_rubrics(REPO / "rubrics")["helpfulness@v1"]
