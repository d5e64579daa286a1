"""Shared fixtures: a real redis-server on a free port, both emulators over real HTTP, and a
runtime wired to them. Each test starts from an empty Redis database."""
from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import dramatiq
import pytest
import redis

from worker.stack import start_redis, stop
from worker.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PK, SK = "pk-lf-test", "sk-lf-test"


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
    shutil.copy(REPO / "rubrics" / "repair.j2", target / "repair.j2")
    return target


PIPELINE_RUBRICS = ("helpfulness", "groundedness")


def make_env(langfuse_emu, judge_emu, redis_url, rubrics_dir: Path, **extra) -> dict[str, str]:
    env = {
        "LANGFUSE_BASE_URL": langfuse_emu.base_url,
        "LANGFUSE_PUBLIC_KEY": PK,
        "LANGFUSE_SECRET_KEY": SK,
        "REDIS_URL": redis_url,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": judge_emu.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": judge_emu.base_url + "/v1",
        "TRACEJUDGE_RUBRICS_DIR": str(rubrics_dir),
        "TRACEJUDGE_SETTLE_SECONDS": "0",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def settings(langfuse_emu, judge_emu, redis_url, redis_client, test_rubrics) -> Settings:
    return Settings.from_env(make_env(langfuse_emu, judge_emu, redis_url, test_rubrics))


@pytest.fixture
def runtime(settings, redis_client):
    from worker.runtime import Runtime, set_runtime

    rt = Runtime(settings, redis_client=redis_client)
    set_runtime(rt)
    yield rt
    set_runtime(None)


@pytest.fixture
def broker(settings, runtime):
    from worker.broker import build_broker

    b = build_broker(settings)
    dramatiq.set_broker(b)
    yield b
    b.close()


def drain(broker, client, *, threads: int = 8, timeout: float = 60.0) -> None:
    """Run a real dramatiq worker in this process until the judge queue is empty."""
    from worker.queues import queue_depth

    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while queue_depth(client).outstanding:
            if time.monotonic() > deadline:
                raise AssertionError(f"queue not drained in {timeout}s: {queue_depth(client)}")
            time.sleep(0.05)
    finally:
        worker.stop()


def utc(**delta) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(**delta)
