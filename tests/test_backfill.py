"""Backfill is resumable: an interrupted run keeps its finished slices, and the rerun enqueues
exactly what one uninterrupted run would have."""
from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from emulators.seed import generate
from samplers.backfill import progress_key, run_backfill, slices
from tests.helpers import expected_pairs, make_env, sampler_for, utc
from worker.cli.main import main

RATE = 0.2


def test_slices_cover_the_window_without_gaps_or_overlaps():
    since, until = utc(days=15), utc(seconds=0)
    parts = slices(since, until)
    assert parts[0][0] == since and parts[-1][1] == until
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert len(parts) == 360  # one an hour
    assert len(slices(utc(days=400), utc(seconds=0))) == 500  # capped


def test_an_interrupted_backfill_resumes_and_enqueues_each_pair_once(settings, runtime, broker, redis_client,
                                                                      langfuse_emu):
    observations = generate(400, include_malformed=False, seed=5, end=utc(minutes=30))
    langfuse_emu.load_observations(observations)
    s = dataclasses.replace(settings, sample_rate=RATE)
    since, until = utc(days=15), utc(minutes=1)

    interrupted = sampler_for(s, runtime, broker)
    real_pass, calls = interrupted.run_pass, []

    def ctrl_c_during_the_151st_slice(start, end, **kw):
        calls.append(start)
        if len(calls) == 151:
            real_pass(start, start + (end - start) / 2, **kw)  # half the slice enqueued, then Ctrl-C
            raise KeyboardInterrupt
        return real_pass(start, end, **kw)

    interrupted.run_pass = ctrl_c_during_the_151st_slice
    with pytest.raises(KeyboardInterrupt):
        run_backfill(interrupted, since, until)
    assert redis_client.scard(progress_key(since, until, list(runtime.rubrics))) == 150

    report, skipped = run_backfill(sampler_for(s, runtime, broker), since, until)
    assert skipped == 150  # the interrupted slice is redone: dedup makes its repeats free
    enqueued = {(k.decode().split(":")[3], k.decode().split(":")[2].split("@")[0])
                for k in redis_client.scan_iter("tracejudge:enqueued:*")}
    sampled = {t for t, _ in expected_pairs(observations, RATE)}
    assert enqueued == {(t, r) for t in sampled for r in ("helpfulness", "groundedness")}  # each rubric, once

    again, skipped = run_backfill(sampler_for(s, runtime, broker), since, until)
    assert skipped == len(slices(since, until)) and again.scanned == 0


def test_backfill_cli_refuses_an_unknown_rubric(langfuse_emu, judge_emu, redis_url, test_rubrics):
    env = make_env(langfuse_emu, judge_emu, redis_url, test_rubrics)
    result = CliRunner().invoke(main, ["backfill", "--since", "2026-11-01T00:00:00Z", "--until",
                                       "2026-11-02T00:00:00Z", "--rubric", "nosuch"], env=env)
    assert result.exit_code == 2 and "unknown rubric nosuch" in result.output
