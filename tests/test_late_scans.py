"""Continuous mode finds traces ingested late without re-listing every trace on every tick."""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

import pytest

from samplers.late import LATE_CURSOR, START_KEY
from samplers.sampler import Sampler
from samplers.source import LangfuseTraceSource
from tests.helpers import one_trace
from worker.errors import ConfigError
from worker.langfuse_io.client import build_langfuse_api
from worker.settings import Settings

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)
LAGS = [dt.timedelta(0), dt.timedelta(minutes=5), dt.timedelta(minutes=40), dt.timedelta(hours=3),
        dt.timedelta(hours=20)]  # how late each trace reaches Langfuse, in turn


class Enqueued:
    """The broker's interface the sampler uses, keeping what it got."""

    def __init__(self):
        self.messages = []

    def enqueue(self, message):
        self.messages.append(message)


class CountingSource(LangfuseTraceSource):
    def __init__(self, api):
        super().__init__(api)
        self.listed: Counter = Counter()

    def iter_roots(self, since, until):
        for ref in super().iter_roots(since, until):
            self.listed[ref.trace_id] += 1
            yield ref


def traces(n: int) -> list[tuple[dt.datetime, dt.datetime, list[dict]]]:
    """(timestamp, when it reaches Langfuse, observations), one every 6 minutes over a day."""
    out = []
    for i in range(n):
        at = T0 + dt.timedelta(minutes=6 * i)
        obs = one_trace(f"{i:032x}", "Open Settings > Security > Reset password.")
        for o in obs:
            o["startTime"] = o["endTime"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out.append((at, at + LAGS[i % len(LAGS)], obs))
    return out


def simulate(settings, runtime, langfuse_emu, redis_client, hours: float):
    step = dt.timedelta(seconds=settings.sample_interval_seconds)  # the scheduler's tick
    rubrics = {k: v for k, v in runtime.rubrics.items() if k == "helpfulness@v1"}
    source = CountingSource(build_langfuse_api(settings))
    broker = Enqueued()
    sampler = Sampler(dataclasses.replace(settings, sample_rate=1.0), rubrics, source, broker, redis_client)
    pending = traces(240)
    now = T0
    while now < T0 + dt.timedelta(hours=hours):
        arrived = [t for t in pending if t[1] <= now]
        for t in arrived:
            langfuse_emu.load_observations(t[2])
            pending.remove(t)
        sampler.tick(now=now)
        now += step
    return source.listed, Counter(m.args[0] for m in broker.messages)


def test_traces_up_to_a_day_late_are_judged_once_and_listed_at_most_three_times(
        settings, runtime, langfuse_emu, redis_client):
    s = dataclasses.replace(settings, settle_seconds=600, sample_interval_seconds=600, overlap_seconds=0)
    # The last trace is 20 h late at 24 h: the day-late pass (every 6 h) lists it by 24 + 24 + 6 h.
    listed, enqueued = simulate(s, runtime, langfuse_emu, redis_client, hours=55)
    assert len(enqueued) == 240 and set(enqueued.values()) == {1}, "a late trace was missed or enqueued twice"
    assert max(listed.values()) <= 3
    assert sum(listed.values()) / len(listed) <= 3.0


def test_an_overlap_window_instead_lists_each_trace_on_every_tick(settings, runtime, langfuse_emu, redis_client):
    """Today's schedule beside the new one: a one-hour overlap re-lists a trace 12 times at 5-minute ticks
    (61 times at the default 1-minute ticks)."""
    s = dataclasses.replace(settings, settle_seconds=600, sample_interval_seconds=300, overlap_seconds=3600,
                            late_scans=())
    listed, enqueued = simulate(s, runtime, langfuse_emu, redis_client, hours=26)
    on_time = [f"{i:032x}" for i in range(0, 240, len(LAGS))]  # reached Langfuse at once
    assert all(listed[t] >= 12 for t in on_time)
    assert len(enqueued) < 240, "a one-hour overlap cannot catch traces 3 or 20 hours late"


def test_late_passes_never_reach_before_continuous_mode_began(settings, runtime, langfuse_emu, redis_client):
    s = dataclasses.replace(settings, settle_seconds=600, sample_interval_seconds=300)
    simulate(s, runtime, langfuse_emu, redis_client, hours=2)
    start = dt.datetime.fromisoformat(redis_client.get(START_KEY).decode())
    assert start <= T0 - dt.timedelta(seconds=300)  # the first window: one interval before the first tick
    hour = dt.datetime.fromisoformat(redis_client.get(LATE_CURSOR + "3600").decode())
    assert T0 < hour <= T0 + dt.timedelta(hours=1)


@pytest.mark.parametrize("raw, expected", [("3600:900,86400:21600", ((3600, 900), (86400, 21600))),
                                           ("86400:3600", ((86400, 3600),)), ("off", ())])
def test_late_scans_setting(raw, expected, tmp_path):
    env = {"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "TRACEJUDGE_RUBRICS_DIR": str(tmp_path),
           "TRACEJUDGE_LATE_SCANS": raw}
    assert Settings.from_env(env).late_scans == expected


def test_a_malformed_late_scans_setting_is_refused_in_one_line(tmp_path):
    env = {"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "TRACEJUDGE_RUBRICS_DIR": str(tmp_path),
           "TRACEJUDGE_LATE_SCANS": "3600:900,daily"}
    with pytest.raises(ConfigError, match="'daily' is not DELAY:EVERY in seconds"):
        Settings.from_env(env)
