"""The scheduler and its state survive real infrastructure (issue 11): Redis outages, two
schedulers at once, revoked sinks, months of uptime, odd settings."""
from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import logging
import shutil
import subprocess
import threading
import time
from decimal import Decimal

import pytest
import redis

from emulators.stack import start_redis, stop
from tests.helpers import free_port, wait_until
from tests.test_alert_kinds import budget
from worker.alerts import outbox
from worker.alerts.sinks import WebhookSink
from worker.errors import ConfigError
from worker.fleet.lease import LOCK_KEY, Lease
from worker.judges.base import Usage
from worker.fleet.redis_health import eviction_warning
from worker.fleet.scheduler import run_scheduler
from worker.logs import JsonFormatter, register_settings_secrets
from worker.redis_client import connect
from worker.settings import Settings
from samplers.sampler import CURSOR_KEY, Sampler


def _settings(redis_url: str, **extra) -> Settings:
    return Settings.from_env({"LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test",
                              "REDIS_URL": redis_url, **extra})


class _TickingSampler:
    """What run_scheduler needs of a sampler, with a tick that only counts."""

    def __init__(self, settings, client):
        self.settings, self.client, self.rubrics, self.broker = settings, client, [], None
        self.ticks = 0

    def tick(self):
        self.client.incr("test:ticks")
        self.ticks += 1


# -- 1. a Redis outage longer than the client rides out does not end the scheduler -------------

@pytest.mark.slow  # stops and restarts redis-server, seconds of real time
def test_the_scheduler_loop_outlives_a_redis_outage_longer_than_its_client_rides_out(tmp_path):
    port = free_port()
    proc, url = start_redis(tmp_path, port)
    client = connect(url, seconds=0.5)  # the policy's ride-out, shortened so the outage outlasts it
    sampler = _TickingSampler(_settings(url), client)
    stop_event = threading.Event()
    loop = threading.Thread(target=run_scheduler, args=(sampler, 0.1, stop_event), daemon=True)
    loop.start()
    try:
        wait_until(lambda: sampler.ticks >= 2, 20, "two ticks", interval=0.05)
        stop(proc)  # hold(), the ticks and drift_due all fail now
        time.sleep(2.0)
        assert loop.is_alive()
        before = sampler.ticks
        proc, _ = start_redis(tmp_path, port)
        wait_until(lambda: sampler.ticks > before + 2, 20, "ticks after the outage", interval=0.05)  # leads again and ticks once Redis is back
    finally:
        stop_event.set()
        loop.join(timeout=10)
        stop(proc)
    assert not loop.is_alive()  # and the final release() did not raise out of the thread


def test_the_default_policy_rides_out_at_least_a_minute_of_outage():
    from worker.redis_client import OUTAGE_SECONDS, connection_pool

    pool = connection_pool("redis://127.0.0.1:1/0")
    assert OUTAGE_SECONDS >= 60 and pool.connection_kwargs["retry"].seconds >= 60


# -- 2. the lease outlives a long tick, and a lost lease stops the tick ---------------------

def test_a_tick_longer_than_the_lease_keeps_it(redis_client):
    first, second = Lease(redis_client, 0.6), Lease(redis_client, 0.6)
    assert first.hold()
    with first.kept_alive():
        time.sleep(1.5)  # 2.5 times the lease's time to live
        assert not second.hold()
    assert not first.lost.is_set()


def test_a_lease_taken_over_mid_tick_skips_the_remaining_phases(redis_client):
    from worker.fleet.scheduler import _tick_as_leader

    lease = Lease(redis_client, 0.3)
    ran = []

    def taken_over():
        redis_client.set(LOCK_KEY, "another-scheduler")
        time.sleep(0.4)  # the keeper's next renewal finds the other holder
        ran.append("first")

    assert _tick_as_leader(lease, [("one", taken_over, ""), ("two", lambda: ran.append("second"), "")], False) is False
    assert ran == ["first"]
    lease.release()
    assert redis_client.get(LOCK_KEY) == b"another-scheduler"  # release never drops another's lease


def test_the_cursor_never_moves_backwards(redis_client, redis_url):
    sampler = Sampler(_settings(redis_url), {}, None, None, redis_client)
    late = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert sampler.set_cursor(late)
    assert not sampler.set_cursor(late - dt.timedelta(minutes=5))  # a slow, overtaken scheduler
    assert sampler.cursor() == late
    assert sampler.set_cursor(late + dt.timedelta(microseconds=1))
    redis_client.set(CURSOR_KEY, "2026-12-01T13:00:00+00:00")  # written without microseconds
    assert not sampler.set_cursor(dt.datetime(2026, 12, 1, 12, 59, 59, 999999, tzinfo=dt.timezone.utc))
    assert sampler.set_cursor(dt.datetime(2026, 12, 1, 13, 0, 0, 1, tzinfo=dt.timezone.utc))


# -- alerts: delivered once, whoever delivers -------------------------------------------------

class _SlowSink:
    name = "slow"

    def __init__(self):
        self.sent = []

    def send(self, alert):
        time.sleep(0.3)
        self.sent.append(alert.id)


def test_two_schedulers_delivering_at_once_send_an_alert_once(redis_client):
    sink = _SlowSink()
    outbox.enqueue(redis_client, budget(), [sink])
    threads = [threading.Thread(target=outbox.deliver, args=(connect_like(redis_client), [sink])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sink.sent == ["b1"] and not redis_client.hlen(outbox.OUTBOX)
    outbox.enqueue(redis_client, budget(), [sink])  # raised again after delivery: nothing to send
    assert outbox.deliver(redis_client, [sink]) == (0, 0) and sink.sent == ["b1"]


def connect_like(client: redis.Redis) -> redis.Redis:
    kwargs = client.connection_pool.connection_kwargs
    return redis.Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs.get("db", 0))


def test_an_entry_for_a_removed_sink_is_dropped_after_a_week(redis_client):
    class Gone:
        name = "gone"

    outbox.enqueue(redis_client, budget(), [Gone()])
    now = time.time()
    assert outbox.deliver(redis_client, [], now=now) == (0, 1)  # kept for a process that has the sink
    assert outbox.deliver(redis_client, [], now=now + outbox.ORPHAN_SECONDS + 1) == (0, 0)


# -- 4. secrets: a revoked webhook is logged by status and sink name, never by URL ---------------

class _Revoked(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_failing_sink_is_logged_by_status_and_name_not_by_url(redis_client):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Revoked)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hooks/T0001/B0002/XyZsecretToken42"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("tracejudge.alerts").addHandler(handler)
    try:
        outbox.enqueue(redis_client, budget(), [WebhookSink(url)])
        assert outbox.deliver(redis_client, [WebhookSink(url)]) == (0, 1)
    finally:
        logging.getLogger("tracejudge.alerts").removeHandler(handler)
        server.shutdown()
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["sink"] == "webhook" and line["status"] == 403
    assert "XyZsecretToken42" not in stream.getvalue() and "/hooks/" not in stream.getvalue()


def test_the_generic_webhook_url_is_registered_for_masking(redis_url):
    url = "https://hooks.example.com/services/abc/TOKEN-9f8e7d6c"
    register_settings_secrets(_settings(redis_url, TRACEJUDGE_ALERT_WEBHOOK_URL=url))
    record = logging.LogRecord("x", logging.ERROR, "", 0, f"posting to {url} failed", None, None)
    assert "TOKEN-9f8e7d6c" not in JsonFormatter().format(record)


def test_every_cli_command_registers_the_secrets(monkeypatch, redis_url):
    from worker.cli.common import load_settings as cli_settings

    token = "https://hooks.slack.com/services/T1/B2/cliSecretValue77"
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-x")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-x")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("TRACEJUDGE_SLACK_WEBHOOK_URL", token)
    cli_settings()
    record = logging.LogRecord("x", logging.ERROR, "", 0, f"error at {token}", None, None)
    assert "cliSecretValue77" not in JsonFormatter().format(record)


# -- 3. maxmemory-policy ---------------------------------------------------------------------

def test_status_warns_when_the_redis_policy_could_evict_our_keys(redis_client):
    redis_client.config_set("maxmemory", 0)
    assert eviction_warning(redis_client) is None  # no limit: nothing is ever evicted
    try:
        redis_client.config_set("maxmemory", 1 << 30)
        redis_client.config_set("maxmemory-policy", "volatile-lru")
        assert "exactly-once markers" in eviction_warning(redis_client)
        redis_client.config_set("maxmemory-policy", "allkeys-lru")
        assert "allkeys-lru" in eviction_warning(redis_client)
        redis_client.config_set("maxmemory-policy", "noeviction")
        assert eviction_warning(redis_client) is None
    finally:
        redis_client.config_set("maxmemory", 0)
        redis_client.config_set("maxmemory-policy", "noeviction")


# -- 7. settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["TRACEJUDGE_SAMPLE_RATE", "TRACEJUDGE_DAILY_BUDGET_USD",
                                  "TRACEJUDGE_JUDGE_TIMEOUT_SECONDS", "LANGFUSE_TIMEOUT"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_settings_refuse_non_finite_numbers(name, value, redis_url):
    with pytest.raises(ConfigError, match=f"{name}={value!r} is not a finite number"):
        _settings(redis_url, **{name: value})


def test_a_unix_socket_redis_url_works(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(sock.exists, 20, "the socket", interval=0.05)
        settings = _settings(f"unix://{sock}")
        client = connect(settings.redis_url)
        wait_until(lambda: _pings(client), 20, "a PING over the socket", interval=0.05)
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        stop(proc)
    with pytest.raises(ConfigError, match="REDIS_URL"):
        _settings("unix://")


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


# -- 3. every key family has a TTL or a bound --------------------------------------------------

def test_drift_cell_days_expire_and_an_emptied_cell_leaves_the_set(redis_client, test_rubrics):
    from worker.accounting.outcomes import OutcomeLog
    from worker.drift import aggregates as agg
    from worker.drift import detection
    from worker.drift.check import STATE
    from worker.drift.contribution import UnscoredContribution
    from worker.drift.retention import sweep_aggregates
    from worker.rubrics.rubric import load_rubrics

    rubric = load_rubrics(test_rubrics)["helpfulness@v1"]
    today = dt.date(2026, 12, 1)
    log_ = OutcomeLog(redis_client)
    old = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)  # 153 days before today
    recent = dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)
    log_.unscored("s-old", rubric.key, "t-old", "refused", "", Usage(), Decimal(0), 1,
                  UnscoredContribution.of_trace(rubric, {"tenant": "gone"}, old, "refused"))
    log_.unscored("s-new", rubric.key, "t-new", "refused", "", Usage(), Decimal(0), 1,
                  UnscoredContribution.of_trace(rubric, {"tenant": "acme"}, recent, "refused"))
    gone_cell, all_cell = agg.cell_key(rubric, "tenant=gone"), agg.cell_key(rubric, "all")
    redis_client.hset(STATE, gone_cell, "{}")
    detector = [agg.PENDING + gone_cell, detection.STATE + gone_cell, detection.FLAGGED + gone_cell]
    redis_client.zadd(detector[0], {"t-old||50.0": old.timestamp()})
    redis_client.set(detector[1], "{}")
    redis_client.sadd(detector[2], "2026-07-01")
    redis_client.set(detection.STATE + all_cell, "{}")
    summary = sweep_aggregates(redis_client, today)
    cells = {m.decode() for m in redis_client.smembers(agg.CELLS)}
    assert gone_cell not in cells and all_cell in cells and not redis_client.hexists(STATE, gone_cell)
    assert redis_client.exists(*detector) == 0 and redis_client.exists(detection.STATE + all_cell)  # with its cell
    assert not redis_client.exists(agg.day_key(all_cell, "2026-07-01"))  # past TTL_DAYS: removed
    ttl = redis_client.ttl(agg.day_key(all_cell, "2026-11-30"))
    # the sweep ages as if ``today`` were the real date: its "now" is today's date at today's time
    dated_now = agg.day_epoch(today.isoformat()) + time.time() % 86400
    expected = agg.day_epoch("2026-12-01") + agg.TTL_DAYS * 86400 - dated_now
    assert abs(ttl - expected) < 5  # expires TTL_DAYS after the end of its day, whatever the calendar
    assert summary.cells_removed == 1 and summary.days_removed >= 2


def test_the_exhausted_log_is_bounded_by_age_and_size(redis_client):
    from worker.accounting.outcomes import EXHAUSTED
    from worker.fleet.housekeeping import trim_exhausted

    now = time.time()
    for i in range(30):
        redis_client.hset(EXHAUSTED, f"s{i}", json.dumps({"at": now - i * 86400 * 2}))
    assert trim_exhausted(redis_client, now, days=30, most=10) == 20
    assert sorted(k.decode() for k in redis_client.hkeys(EXHAUSTED)) == sorted(f"s{i}" for i in range(10))


def test_batch_items_of_an_unloaded_rubric_are_recorded_and_dropped_after_a_week(redis_client):
    from worker.accounting.outcomes import EXHAUSTED
    from worker.batching.store import ITEMS, PENDING, Item
    from worker.fleet.housekeeping import ORPHAN_BATCH_DAYS, drop_orphaned_batch_items

    item = Item("s1", "t1", "retired@v1", "anthropic", {}, {}, {}, None)
    redis_client.hset(ITEMS, "s1", item.dumps())
    redis_client.sadd(PENDING + "anthropic", "s1")
    now = time.time()
    assert drop_orphaned_batch_items(redis_client, {"helpfulness@v1"}, now) == 0
    assert drop_orphaned_batch_items(redis_client, {"helpfulness@v1"}, now + 86400) == 0  # within the week
    assert drop_orphaned_batch_items(redis_client, {"helpfulness@v1"}, now + ORPHAN_BATCH_DAYS * 86400 + 1) == 1
    assert not redis_client.hlen(ITEMS) and not redis_client.scard(PENDING + "anthropic")
    assert "not loaded" in json.loads(redis_client.hget(EXHAUSTED, "s1"))["reason"]
