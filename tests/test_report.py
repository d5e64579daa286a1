"""``tracejudge report``: the HTML quality report, from aggregates the real pipeline wrote (and,
for exact figures and hostile strings, from the same aggregate ops the pipeline records), checked
as text and in a real headless Chromium (a screenshot, and the DOM the browser built)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
import struct
import subprocess
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulators.seed import generate
from tests.helpers import REPO, drain, free_port, make_env, sampler_for, whole_window
from worker.accounting.outcomes import OutcomeLog
from worker.cli.report import report
from worker.drift.contribution import DriftContribution, UnscoredContribution
from worker.drift.check import run_check
from worker.drift.run import run_drift
from worker.judges.base import Usage
from worker.rubrics.rubric import load_rubrics

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT_KEEP = REPO / "benchmarks" / "results" / "report.png"
HOSTILE_ID = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
HOSTILE_TENANT = "</td><script>document.title='pwned'</script>"


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./dev installs it (apt-get install chromium), needed to check the "
                    "report in a real browser")
    return CHROMIUM


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def _decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, raw scanlines without their filter byte) of an 8-bit RGB/RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    rows = [raw[i * stride:(i + 1) * stride] for i in range(height)]
    return width, height, rows


def _screenshot(tmp_path: Path, html: Path) -> Path:
    png = tmp_path / "report.png"
    done = _browser(tmp_path, "--window-size=1280,2400", f"--screenshot={png}", html.as_uri())
    assert png.exists(), f"chromium wrote no screenshot: {done.stderr[-800:]}"
    data = png.read_bytes()
    width, height, rows = _decode_png(data)
    assert (width, height) == (1280, 2400) and len(data) > 20_000
    # Not one uniform colour: a blank page's filtered scanlines are all alike (one per PNG filter type at most).
    distinct = {bytes(row[1:]) for row in rows[::40]}
    assert len(distinct) > 20, "the screenshot is (nearly) blank"
    SCREENSHOT_KEEP.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, SCREENSHOT_KEEP)
    print(f"\nreport screenshot: {png} (kept at {SCREENSHOT_KEEP})")
    return png


def _run(env, *args) -> tuple[int, str]:
    result = CliRunner().invoke(report, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture
def env(langfuse_emu, judge_emu, redis_url, test_rubrics):
    return make_env(langfuse_emu, judge_emu, redis_url, test_rubrics)


@pytest.mark.slow  # opens Chromium
def test_report_of_a_real_pipeline_run_shows_every_rubric_and_opens_in_chromium(
        settings, runtime, broker, redis_client, langfuse_emu, env, tmp_path):
    observations = generate(900, seed=7, drift={"feature": "summarize", "points": 25},
                            end=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    langfuse_emu.load_observations(observations)
    sampler = sampler_for(dataclasses.replace(settings, sample_rate=1.0), runtime, broker)
    sampler.run_pass(*whole_window())
    drain(broker, redis_client, threads=32, timeout=240)
    alerts = run_drift(settings, runtime.rubrics, redis_client, lambda t: f"http://ui/trace/{t}").alerts

    out = tmp_path / "report.html"
    code, output = _run(env, "--out", str(out), "--days", "15")  # the seed spans 14 days
    assert code == 0, output
    page = out.read_text()
    assert re.search(r"wrote .*report\.html: 2 rubric version\(s\), \d+ cells", output)
    reports = run_check(redis_client, runtime.rubrics)
    for name in ("helpfulness", "groundedness"):
        assert f'id="r-{name}-v1-' in page
    # Every cell of the drift check is a table row with its own means, n and status.
    assert page.count('<tr class="') == len(reports)
    for r in reports:
        d = r.decision
        if d.prev_mean is not None:
            assert f"{d.prev_mean:.1f} <span class=\"n\">n={d.n_prev:,}</span>" in page
        if d.status == "insufficient_data" and d.n_needed:
            assert f"n={min(d.n_prev, d.n_curr):,} of {d.n_needed:,} needed per week" in page
    # The alert state: each alerting cell says so, and when the drift job notified its owners.
    alerting = [r for r in reports if r.decision.status == "alert"]
    assert alerting and page.count('<span class="badge alert">alert</span>') == len(alerting)
    assert page.count("· notified 20") == len(alerts) > 0  # by the sequential detector
    assert page.count("detector: ") == len(reports)
    # The seed's broken traces are unscored, with their reasons in the legend.
    assert "no_output" in page
    # Bottom traces link into the Langfuse UI of the emulator's project.
    links = re.findall(r'<a href="([^"]+)" rel="noopener noreferrer"', page)
    assert len(links) == 40 and all(link.startswith(langfuse_emu.base_url + "/project/") for link in links)
    # Self-contained: nothing is fetched from anywhere when the page opens.
    assert not re.search(r"<script|<link|@import|url\(|src=\"http", page)
    _screenshot(tmp_path, out)


def _seed(redis_client, rubric, rows):
    """Record outcomes exactly as the pipeline does: OutcomeLog with the drift contribution, a score's
    applied when its read-back confirms it."""
    log = OutcomeLog(redis_client)
    usage = Usage(input_tokens=1000, output_tokens=100)
    for i, (trace_id, meta, when, value, reason) in enumerate(rows):
        if reason is None:
            ops = DriftContribution.of_score(rubric, trace_id, meta, when, value, 12_345)
            log.scored(f"s{i}", rubric.key, usage, Decimal("0.012345"), 1, {"id": f"s{i}"}, on_confirm=ops)
            log.confirmed(f"s{i}", rubric.key, ops)
        else:
            ops = UnscoredContribution.of_trace(rubric, meta, when, reason)
            log.unscored(f"u{i}", rubric.key, trace_id, reason, "", usage, Decimal("0"), 1, extra=ops)


def test_report_figures_match_the_seeded_scores_and_hostile_strings_stay_text(
        redis_client, env, tmp_path, test_rubrics):
    rubric = load_rubrics(test_rubrics)["helpfulness@v1"]  # 1..5, so value v is (v - 1) * 25 points
    today = dt.datetime.now(dt.timezone.utc).replace(hour=12, minute=0)
    rows = []
    for i in range(8):  # 10 days ago: 6 scores of 4 (75 points) and 2 of 2 (25 points)
        rows.append((f"t-old-{i}", {"feature": "chat", "tenant": "acme"}, today - dt.timedelta(days=10),
                     4 if i < 6 else 2, None))
    rows.append(("t-bad-1", {"feature": "chat", "tenant": "acme"}, today - dt.timedelta(days=10), None, "no_output"))
    rows.append(("t-bad-2", {"feature": "chat", "tenant": "acme"}, today - dt.timedelta(days=10), None, "refused"))
    rows.append((HOSTILE_ID, {"feature": "chat", "tenant": HOSTILE_TENANT}, today - dt.timedelta(days=1), 1, None))
    _seed(redis_client, rubric, rows)

    out = tmp_path / "r.html"
    code, output = _run(env, "--out", str(out), "--days", "14")
    assert code == 0, output
    page = out.read_text()
    old_day = (today - dt.timedelta(days=10)).date().isoformat()
    # 10 days ago: mean (6*75 + 2*25) / 8 = 62.5 over n=8; 2 unscored of 10 judged = 20%; cost 8 * $0.012345.
    assert f"all traffic {old_day}: mean 62.5 (n=8)" in page
    assert f"{old_day}: 20.0% unscored (2 of 10): no_output 1, refused 1" in page
    assert f"{old_day}: $0.0988 judge cost, 8 scored" in page
    assert "$0.1111 in 14 days" in page  # 9 scores in the window
    # The hostile trace id and tenant are escaped text, and the link keeps the id as one path segment.
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "%22%3E%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in page
    # The browser agrees: the DOM it built from the page has no script or img element.
    dom = _browser(tmp_path, "--dump-dom", out.as_uri())
    assert "<body" in dom.stdout, dom.stderr[-800:]
    assert "<script" not in dom.stdout and "<img" not in dom.stdout
    assert "document.title='pwned'" in dom.stdout  # shown as text, in the tenant column

    code, output = _run(env, "--out", str(tmp_path / "only.html"), "--rubric", "groundedness")
    assert code == 0 and "no data yet" in output  # a known rubric, just no scores yet


def test_empty_redis_gives_a_page_that_says_there_is_no_data_yet(redis_client, env, tmp_path):
    out = tmp_path / "empty.html"
    code, output = _run(env, "--out", str(out))
    assert code == 0 and "no data yet" in output
    page = out.read_text()
    assert "No data yet" in page and page.rstrip().endswith("</html>")


def test_bad_out_path_and_unknown_rubric_are_one_line_errors(redis_client, env, tmp_path):
    for bad, why in ((tmp_path / "missing" / "r.html", "does not exist"), (tmp_path, "is a directory")):
        code, output = _run(env, "--out", str(bad))
        assert code == 1 and why in output and len(output.strip().splitlines()) == 1, output
    code, output = _run(env, "--out", str(tmp_path / "r.html"), "--rubric", "no-such-rubric")
    assert code == 1 and "no such rubric" in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
    code, output = _run(env, "--out", str(tmp_path / "r.html"), "--days", "3")
    assert code == 2 and "--days" in output


@pytest.mark.slow  # the Redis client rides out the outage for 90 s first
def test_unreachable_redis_is_a_one_line_error_without_the_password(env, tmp_path):
    port = free_port()  # a port nothing listens on
    code, output = _run({**env, "REDIS_URL": f"redis://:s3cret-pw@127.0.0.1:{port}/0"}, "--out", str(tmp_path / "r.html"))
    assert code == 1 and f"cannot read Redis at redis://127.0.0.1:{port}/0" in output
    assert "s3cret-pw" not in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
