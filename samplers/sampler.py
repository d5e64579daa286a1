"""A sampler pass over a window, and the continuous tick with its cursor in Redis."""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable

import dramatiq
import redis

from samplers import observations as obs_targets
from samplers.dedup import EnqueueOnce
from samplers.late import START_KEY, due_late_windows, utc_stamp as _stamp
from samplers.planner import refresh_plans
from samplers.quota import SegmentQuota
from samplers import inclusion_log, plan as rate_plans
from samplers.selection import select_with_inclusion
from samplers.traffic import TrafficCounter
from samplers.sessions import SessionScanner, SessionTickReport, seen as session_seen, session_rubrics
from samplers.source import LangfuseTraceSource, TraceRef, is_own_or_internal
from worker.accounting.budget import Budget
from worker.accounting.outcomes import STATS
from worker.alerts.sinks import sinks_for
from worker.drift.aggregates import CELLS
from worker.drift.detection import budget_cell_years
from worker.jobs import Subject, judge_message
from worker.langfuse_io.traces import TraceReader
from worker.redis_client import as_text
from worker.rubrics.rubric import Rubric
from worker.settings import Settings

CURSOR_KEY = "tracejudge:sampler:cursor"
# Moves the cursor forward only. Values are UTC ISO 8601 with microseconds, so the string order
# is the time order (and a value stored without microseconds still compares right: '+' < '.').
_ADVANCE = """
local current = redis.call('GET', KEYS[1])
if current and current >= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
LAST_PASS_KEY = "tracejudge:sampler:last_pass"
log = logging.getLogger("tracejudge.sampler")


@dataclasses.dataclass
class PassReport:
    since: dt.datetime
    until: dt.datetime
    scanned: int = 0
    excluded: int = 0
    selected: int = 0
    enqueued: int = 0
    already_enqueued: int = 0
    budget_held: int = 0  # selected but not enqueued: the rubric's daily budget is (nearly) spent
    per_rubric: Counter[str] = dataclasses.field(default_factory=Counter)
    requests: int = 0
    late: list["PassReport"] = dataclasses.field(default_factory=list)  # the late passes run after it
    observations_scanned: int = 0  # listed for observation rubrics (v2 filters)
    sessions_marked: int = 0  # session x rubric marked pending (judged once idle)
    sessions: SessionTickReport | None = None  # the idle scan run after the passes (tick only)

    def line(self) -> str:
        return (f"window {self.since.isoformat()} .. {self.until.isoformat()}: scanned {self.scanned}, "
                f"excluded {self.excluded}, selected {self.selected}, enqueued {self.enqueued}, "
                f"already enqueued {self.already_enqueued}"
                + (f", held back by budget {self.budget_held}" if self.budget_held else "")
                + (f", observations scanned {self.observations_scanned}" if self.observations_scanned else "")
                + (f", sessions marked {self.sessions_marked}" if self.sessions_marked else "")
                + (f"; sessions idle-checked {self.sessions.checked}, enqueued {self.sessions.enqueued} "
                   f"({self.sessions.rejudges} re-judges)" if self.sessions and self.sessions.checked else "")
                + "".join(f"; late pass {r.since.isoformat()} .. {r.until.isoformat()}: scanned {r.scanned}, "
                          f"enqueued {r.enqueued}" for r in self.late))


class Sampler:
    def __init__(self, settings: Settings, rubrics: dict[str, Rubric], source: LangfuseTraceSource,
                 broker: dramatiq.Broker, client: redis.Redis):
        self.settings = settings
        self.rubrics = list(rubrics.values())
        self.sessions = SessionScanner(client, self.rubrics, TraceReader(
            source.api, generation=source.generation), broker) if self.session_rubrics else None
        self.source = source
        self.broker = broker
        self.client = client
        self.once = EnqueueOnce(client)
        self.quota = SegmentQuota(client)
        self.traffic = TrafficCounter(client)  # power-aware rubrics: traffic per cell (samplers/traffic.py)
        self._advance = client.register_script(_ADVANCE)

    def run_pass(self, since: dt.datetime, until: dt.datetime,
                 on_trace: Callable[[TraceRef], None] | None = None) -> PassReport:
        report = PassReport(since, until)
        before = self.source.requests
        held = self.budget_held()
        trace_rubrics, sessions = self.trace_rubrics, self.session_rubrics  # once per pass
        plans = rate_plans.load_all(self.client, [r.key for r in trace_rubrics if r.power is not None])
        for ref in self.source.iter_roots(since, until):
            report.scanned += 1
            if on_trace:
                on_trace(ref)
            if is_own_or_internal(ref):
                report.excluded += 1
                continue
            if sessions:
                report.sessions_marked += session_seen(self.client, sessions, ref, self.settings.sample_rate)
            claimed = []
            for rubric, inclusion in select_with_inclusion(trace_rubrics, ref, self.settings.sample_rate,
                                                           self.quota, plans, self.traffic):
                report.selected += 1
                if rubric.key in held:
                    # Not claimed: budget-held traces are skipped, not marked as enqueued.
                    report.budget_held += 1
                    continue
                if not self.once.claim(rubric.key, ref.subject):
                    report.already_enqueued += 1
                    continue
                if inclusion is not None:  # how it was picked, for its score's weight (samplers/inclusion_log.py)
                    inclusion_log.record(self.client, rubric.key, ref.trace_id, inclusion)
                claimed.append(rubric.key)
            self._enqueue(ref.subject, claimed, report)
        self.traffic.flush()
        self._observation_pass(since, until, held, report)
        report.requests = self.source.requests - before
        self.client.hset(LAST_PASS_KEY, mapping={"at": dt.datetime.now(dt.timezone.utc).isoformat(),
                                                 "line": report.line()})
        for field, value in (("sampler_scanned", report.scanned), ("sampler_excluded", report.excluded),
                             ("sampler_selected", report.selected), ("enqueued", report.enqueued),
                             ("sampler_budget_held", report.budget_held)):
            if value:
                self.client.hincrby(STATS, field, value)
        return report

    def _observation_pass(self, since: dt.datetime, until: dt.datetime, held: set[str], report: PassReport) -> None:
        """Observation rubrics: their matching observations of the window (samplers/observations.py),
        each hashed on its observation id, one job per (observation, rubric version)."""
        for filters, rubrics in obs_targets.groups(self.observation_rubrics).items():
            for ref in obs_targets.iter_observations(self.source.api, filters, since, until,
                                                     on_request=self._count_request):
                report.observations_scanned += 1
                if obs_targets.is_internal(ref):
                    report.excluded += 1
                    continue
                for rubric in obs_targets.select(rubrics, ref, self.settings.sample_rate):
                    report.selected += 1
                    subject = ref.subject
                    if rubric.key in held:
                        report.budget_held += 1
                    elif not self.once.claim(rubric.key, subject):
                        report.already_enqueued += 1
                    else:
                        self._enqueue(subject, [rubric.key], report)

    # By target, from ``rubrics`` each time (a caller may narrow ``rubrics`` after construction).
    @property
    def trace_rubrics(self) -> list[Rubric]:
        return [r for r in self.rubrics if r.target == "trace"]

    @property
    def observation_rubrics(self) -> list[Rubric]:
        return [r for r in self.rubrics if r.target == "observation"]

    @property
    def session_rubrics(self) -> list[Rubric]:
        return session_rubrics(self.rubrics)

    def _count_request(self) -> None:
        self.source.requests += 1

    def _enqueue(self, subject: Subject, keys: list[str], report: PassReport) -> None:
        """One job per claimed rubric version, each naming the others, so the trace is read once."""
        for i, key in enumerate(keys):
            try:
                self.broker.enqueue(judge_message(subject, key, [k for k in keys if k != key]))
            except Exception:
                for left in keys[i:]:
                    self.once.release(left, subject)
                raise
            self.once.confirm(key, subject)
            report.enqueued += 1
            report.per_rubric[key] += 1

    def refresh_plans(self, now: float | None = None) -> list[rate_plans.RatePlan]:
        """The rate plans of power-aware rubrics that are missing or older than
        samplers/planner.py's PLAN_EVERY_SECONDS, recomputed and stored for every replica."""
        if not any(r.power is not None for r in self.trace_rubrics):
            return []
        cell_years = budget_cell_years(self.settings.false_alarms, max(1, int(self.client.scard(CELLS))))
        return refresh_plans(self.client, self.trace_rubrics, time.time() if now is None else now,
                             cell_years=cell_years)

    def budget_held(self) -> set[str]:
        """Rubric keys whose budget is held now (checked once per pass); the day's alert is queued."""
        budget = Budget(self.client, self.settings.daily_budget_usd)
        held = budget.held(self.rubrics)
        for state in {s.rubric: s for s in held.values()}.values():
            budget.alert_once(state, sinks_for(self.settings))
        return set(held)

    def tick(self, now: dt.datetime | None = None) -> PassReport | None:
        """One continuous step: from the cursor (minus the overlap) up to now minus settle, then
        the late passes that are due (samplers/late.py)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        until = now - dt.timedelta(seconds=self.settings.settle_seconds)
        cursor = self.cursor() or until - dt.timedelta(seconds=self.settings.sample_interval_seconds)
        since = cursor - dt.timedelta(seconds=self.settings.overlap_seconds)
        if until <= since:
            return None
        self.client.set(START_KEY, _stamp(cursor), nx=True)  # late passes never reach before the start
        report = self.run_pass(since, until)
        if self.session_rubrics and self.sessions is not None:  # idle since a pass saw them: judged now
            self.sessions.rubrics = self.session_rubrics
            report.sessions = self.sessions.tick(now)
        # Advance only after the whole window was enqueued: a crash re-scans, dedup makes it free.
        self.set_cursor(max(until, cursor))
        for window in due_late_windows(self.client, self.settings.late_scans, now, max(until, cursor)):
            late = self.run_pass(window.since, window.until)
            window.done(self.client, self._advance)
            report.late.append(late)
        return report

    def cursor(self) -> dt.datetime | None:
        raw = self.client.get(CURSOR_KEY)
        return dt.datetime.fromisoformat(as_text(raw)) if raw else None

    def set_cursor(self, value: dt.datetime) -> bool:
        """Advance the cursor to ``value``; never backwards (a scheduler whose slow pass was
        overtaken by the new lease holder's must not rewind it). False when it did not move."""
        stamp = _stamp(value)
        if self._advance(keys=[CURSOR_KEY], args=[stamp]):
            return True
        log.info("cursor not moved: it is already at or past this window's end", extra={"until": stamp})
        return False
