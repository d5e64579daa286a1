"""CPU per judged trace of the worker fleet, at 64 and 256 calls in flight, and a profile.

The real fleet (`tracejudge worker --processes P --threads T`) judges a backlog (one rubric,
helpfulness@v1, so a job is a judged trace and one judge call) against the judge emulator at a
fixed latency (500 ms). After a warm-up, over a steady window:

- CPU ms per judged trace: user+sys of every process of the fleet's process group, from
  /proc/<pid>/stat, divided by the traces judged in the window (scored outcomes);
- efficiency: judged/s ÷ (calls in flight ÷ judge latency), 1.0 = every slot always waiting on the judge;
- Redis commands per job: `INFO commandstats` before and after (the benchmark's own two reads taken off);
- the emulators' CPU in the same window, for context (they share the two cores);
- the machine's pace just before the window: the CPU one Redis PING round trip costs this
  benchmark's own process, and the CPU per judged trace expressed in such round trips. The
  shared machine's speed varies by 2-3x from hour to hour; that ratio varies much less, so it
  is the figure to compare across sessions.

Then a fresh fleet at 64 in flight is profiled with py-spy (`record --gil --subprocesses --format
raw`: in each process, the thread that holds the GIL, i.e. Python's own CPU) and the hotspots,
grouped by where the code lives, are written to benchmarks/results/profile-<date>.txt. Without
``--gil`` py-spy also samples threads that just left a blocking read (hiredis's socket read came
out as 37% "CPU"); what a process burns outside the GIL (system calls, the kernel's loopback TCP,
GIL hand-offs) is in neither, so the report gives the GIL-held share beside the fleet's CPU.

    python -m benchmarks.cpu [--quick] [--no-profile] [--shapes 1x64,2x32,4x16,8x8 --rounds 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.bench_stack import RESULTS, Stack
from emulators.seed import generate

LATENCY_MS = 500
PROFILE_HZ = 100
# 256 as 4 x 64: at 128 threads a process fails its jobs with redis MaxConnectionsError (redis-py 8's
# ConnectionPool defaults to max_connections=100; worker/redis_client.py connection_pool sets none)
DEFAULT_SHAPES = [(2, 32), (4, 64)]
MAX_THREADS = 96
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(process group, user+sys seconds) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(rest[2]), (int(rest[11]) + int(rest[12])) / CLK_TCK


def group_cpu(pgid: int) -> dict[int, float]:
    """user+sys seconds of every live process in process group ``pgid``."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st and st[0] == pgid:
                out[int(name)] = st[1]
    return out


def pid_cpu(pid: int) -> float:
    st = _stat(pid)
    return st[1] if st else 0.0


def ping_cpu_us(client, n: int = 3000) -> float:
    """CPU microseconds of one Redis PING round trip, as this process pays it now."""
    for _ in range(200):
        client.ping()
    c0 = time.process_time()
    for _ in range(n):
        client.ping()
    return 1e6 * (time.process_time() - c0) / n


def commandstats(client) -> Counter:
    calls = Counter()
    for key, value in client.info("commandstats").items():
        calls[key.removeprefix("cmdstat_")] = int(value["calls"])
    return calls


@dataclasses.dataclass
class Window:
    in_flight: int
    processes: int
    threads: int
    seconds: float
    judged: int
    cpu_seconds: float
    emulator_cpu: float
    redis_calls: Counter
    judge_calls: int
    ping_us: float  # the machine's pace just before the window (ping_cpu_us)

    @property
    def per_second(self) -> float:
        return self.judged / self.seconds

    @property
    def efficiency(self) -> float:
        return self.per_second / (self.in_flight / (LATENCY_MS / 1000))

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / max(1, self.judged)

    @property
    def cpu_in_pings(self) -> float:
        """CPU per judged trace in Redis PING round trips of the same moment."""
        return 1000 * self.cpu_ms / self.ping_us


def seed_backlog(stack: Stack, n: int, seed: int) -> int:
    from samplers.sampler import Sampler
    from samplers.source import LangfuseTraceSource
    from worker.fleet.broker import build_broker
    from worker.langfuse_io.client import build_langfuse_api
    from worker.rubrics.rubric import load_rubrics
    from worker.settings import Settings

    now = dt.datetime.now(dt.timezone.utc)
    stack.load(generate(n, include_malformed=False, seed=seed, end=now - dt.timedelta(hours=2)))
    settings = Settings.from_env({**stack.env, "TRACEJUDGE_SAMPLE_RATE": "1", "TRACEJUDGE_SETTLE_SECONDS": "0"})
    sampler = Sampler(settings, load_rubrics(settings.rubrics_dir), LangfuseTraceSource(build_langfuse_api(settings)),
                      build_broker(settings), stack.redis)
    return sampler.run_pass(now - dt.timedelta(days=15), now).enqueued


def scored(stack: Stack) -> int:
    raw = stack.redis.hget("tracejudge:stats", "scored")
    return int(raw or 0)


def _judging(stack: Stack, fleet: subprocess.Popen, warmup: float) -> None:
    """Until the fleet answers its first judge call, then ``warmup`` seconds more."""
    begun = stack.judge_counts().get("status:200", 0)
    deadline = time.monotonic() + 120
    while stack.judge_counts().get("status:200", 0) == begun:
        if fleet.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"fleet did not start judging; see {stack.workdir}")
        time.sleep(0.2)
    time.sleep(warmup)


def measure(stack: Stack, processes: int, threads: int, warmup: float, window: float, log) -> Window:
    from worker.accounting.outcomes import STATS

    assert STATS == "tracejudge:stats"
    fleet = stack.fleet(processes, threads, {}, f"worker-{processes}x{threads}.log")
    try:
        _judging(stack, fleet, warmup)
        emulators = [p.pid for p in stack.procs[1:]]
        ping_us = ping_cpu_us(stack.redis)
        # the window: two HGETs of ours fall between the two INFOs; the INFOs are not counted by Redis
        r0, c0, e0 = commandstats(stack.redis), group_cpu(fleet.pid), sum(pid_cpu(p) for p in emulators)
        j0, s0, t0 = stack.judge_counts().get("status:200", 0), scored(stack), time.monotonic()
        time.sleep(window)
        s1, t1, j1 = scored(stack), time.monotonic(), stack.judge_counts().get("status:200", 0)
        c1, e1, r1 = group_cpu(fleet.pid), sum(pid_cpu(p) for p in emulators), commandstats(stack.redis)
        if fleet.poll() is not None:
            raise SystemExit(f"fleet exited; see {stack.workdir}")
    finally:
        from emulators.stack import stop_group
        stop_group(fleet, 60)
        stack.fleets.remove(fleet)
    calls = r1 - r0
    calls["hget"] -= 2
    calls.pop("info", None)
    cpu = sum(c1[p] - c0[p] for p in c1 if p in c0)
    w = Window(processes * threads, processes, threads, t1 - t0, s1 - s0, cpu, e1 - e0, +calls, j1 - j0, ping_us)
    log(f"  {w.in_flight:>3} in flight ({processes} x {threads}): {w.per_second:6.1f} judged/s, efficiency "
        f"{w.efficiency:.2f}, {w.cpu_ms:.1f} ms CPU per judged trace (= {w.cpu_in_pings:.0f} Redis PINGs at "
        f"{w.ping_us:.0f} us each), {sum(calls.values()) / max(1, w.judged):.1f} "
        f"Redis commands per job ({len(c1)} processes)")
    return w


def profile(stack: Stack, processes: int, threads: int, seconds: float, warmup: float, raw_path: Path, log) -> bool:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        log("  py-spy not installed (.venv/bin/pip install py-spy): no profile")
        return False
    fleet = stack.fleet(processes, threads, {}, f"worker-profiled-{processes}x{threads}.log")
    try:
        _judging(stack, fleet, warmup)
        j0, t0 = stack.judge_counts().get("status:200", 0), time.monotonic()
        done = subprocess.run([pyspy, "record", "--gil", "--pid", str(fleet.pid), "--subprocesses", "--duration",
                               str(int(seconds)), "--rate", str(PROFILE_HZ), "--format", "raw", "-o",
                               str(raw_path)], capture_output=True, text=True, timeout=seconds + 120)
        j1, t1 = stack.judge_counts().get("status:200", 0), time.monotonic()
        if done.returncode != 0 or not raw_path.exists():
            log(f"  py-spy failed: {done.stderr.strip()[-500:]}")
            return False
        log(f"  profiled {seconds:.0f} s at {processes * threads} in flight: {(j1 - j0) / (t1 - t0):.1f} judge calls/s "
            f"under py-spy (py-spy ran {t1 - t0:.0f} s)")
        return True
    finally:
        from emulators.stack import stop_group
        stop_group(fleet, 60)
        stack.fleets.remove(fleet)


# -- the profile report --------------------------------------------------------------------------
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
GROUPS = (  # (group, first path component(s)), first match wins; py-spy names files relative to sys.path
    ("tracejudge: worker/", ("worker",)), ("tracejudge: samplers/", ("samplers",)),
    ("langfuse SDK", ("langfuse",)), ("pydantic", ("pydantic", "pydantic_core")),
    ("httpx/httpcore/h11", ("httpx", "httpcore", "h11", "httpx2", "httpcore2")), ("anthropic SDK", ("anthropic",)),
    ("openai SDK", ("openai",)), ("redis-py", ("redis",)), ("dramatiq", ("dramatiq",)),
    ("logging", ("logging", "pythonjsonlogger")), ("jinja2", ("jinja2", "markupsafe")), ("json", ("json",)),
    ("prometheus", ("prometheus_client",)), ("tenacity", ("tenacity",)),
    ("ssl/socket/selectors", ("ssl.py", "socket.py", "selectors.py", "socketserver.py")),
    ("threading/queue", ("threading.py", "queue.py", "concurrent")),
    ("import machinery", ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")),
)
_SITE = Path(sys.executable).resolve().parent.parent / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / \
    "site-packages"
_PACKAGES = {p.name.split(".")[0] for p in Path(sys.prefix).glob("lib/python*/site-packages/*")}


def group_of(path: str) -> str:
    rel = _short(path)
    top = rel.split("/", 1)[0]
    for group, tops in GROUPS:
        if top in tops:
            return group
    if top in _PACKAGES:
        return "other packages: " + top
    if top in ("emulators", "benchmarks"):
        return "other (emulators/benchmarks)"
    return "other stdlib"


def _short(path: str) -> str:
    for cut in ("/site-packages/", "/work/main/", "/lib/python3.11/"):
        if cut in path:
            return path.split(cut, 1)[1]
    return path


def parse_raw(raw_path: Path) -> list[tuple[list[tuple[str, str, str]], int]]:
    """py-spy's raw (collapsed) stacks: [([(func, file, line), ...root first], count)]."""
    stacks = []
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            m = _FRAME.match(part.strip())
            if m:
                frames.append((m["func"], m["file"], m["line"] or ""))
        if frames:
            stacks.append((frames, int(count)))
    return stacks


# Leaf frames where a thread waits (py-spy may still sample a thread blocked there): not CPU work.
WAITING = {("Condition.wait", "threading.py"), ("Event.wait", "threading.py"), ("_PollLikeSelector.select", "selectors.py"),
           ("SocketBuffer._read_from_socket", "redis/_parsers/socket.py"), ("Thread.join", "threading.py"),
           ("_CtypesTimeoutManager.run", "dramatiq/middleware/time_limit.py")}


def _waiting(frame) -> bool:
    func, file, _ = frame
    rel = _short(file)
    return (func, rel) in WAITING or (func == "SyncStream.read" and rel.split("/")[0] in ("httpcore", "httpcore2"))


def report(stacks, note: str, top: int = 25) -> str:
    waiting = sum(c for frames, c in stacks if _waiting(frames[-1]))
    sampled = sum(c for _, c in stacks)
    stacks = [(frames, c) for frames, c in stacks if not _waiting(frames[-1])]
    total = sum(c for _, c in stacks) or 1
    self_fn, cum_fn, self_group, cum_group = Counter(), Counter(), Counter(), Counter()
    logging_callers, pydantic_callers, redis_callers = Counter(), Counter(), Counter()
    startup = 0
    for frames, count in stacks:
        if any(f[1].startswith("<frozen importlib") for f in frames):
            startup += count
        func, file, _ = frames[-1]
        self_fn[f"{func} ({_short(file)})"] += count
        self_group[group_of(file)] += count
        for key in {f"{f} ({_short(p)})" for f, p, _ in frames}:
            cum_fn[key] += count
        for g in {group_of(p) for _, p, _ in frames}:
            cum_group[g] += count
        for name, counter in (("logging", logging_callers), ("pydantic", pydantic_callers),
                              ("redis-py", redis_callers)):
            idx = next((i for i, f in enumerate(frames) if group_of(f[1]) == name), None)
            if idx:
                # the nearest caller that is ours or another library's entry point
                caller = next((frames[j] for j in range(idx - 1, -1, -1) if group_of(frames[j][1]) != name), None)
                ours = next((frames[j] for j in range(idx - 1, -1, -1) if group_of(frames[j][1]).startswith("tracejudge")),
                            None)
                label = f"{caller[0]} ({_short(caller[1])})" if caller else "?"
                if ours and ours is not caller:
                    label += f"  <- {ours[0]} ({_short(ours[1])})"
                counter[label] += count
    out = io.StringIO()
    w = out.write
    w(note)
    w(f"{sampled} samples at {PROFILE_HZ} Hz of the GIL's holder in every process of the fleet (py-spy record --gil "
      f"--subprocesses); {waiting} of them in a wait (a blocked socket read, a lock, a condition: not CPU) are left out; the "
      f"percentages below are of the other {total}; {100 * startup / total:.1f}% of those are start-up imports\n\n")
    w("By where the code lives (self = the sampled frame is there; cumulative = anywhere on the stack)\n")
    w(f"{'group':<34}{'self %':>8}{'cumul %':>9}\n")
    for g, _ in sorted(cum_group.items(), key=lambda kv: -self_group[kv[0]]):
        if self_group[g] / total >= 0.002 or cum_group[g] / total >= 0.01:
            w(f"{g:<34}{100 * self_group[g] / total:>8.1f}{100 * cum_group[g] / total:>9.1f}\n")
    w(f"\nTop {top} functions by self %\n")
    for name, c in self_fn.most_common(top):
        w(f"{100 * c / total:6.1f}%  {100 * cum_fn[name] / total:6.1f}% cum  {name}\n")
    w(f"\nTop {top} functions by cumulative % (outside threading/dramatiq's worker loop)\n")
    shown = 0
    for name, c in cum_fn.most_common():
        if any(skip in name for skip in ("threading.py", "dramatiq/worker.py", "<module>", "dramatiq/cli.py",
                                         "multiprocessing/", "_bootstrap")):
            continue
        w(f"{100 * c / total:6.1f}% cum  {100 * self_fn[name] / total:5.1f}% self  {name}\n")
        shown += 1
        if shown >= top:
            break
    for title, counter in (("logging", logging_callers), ("pydantic (typed parsing/validation)", pydantic_callers),
                           ("redis-py (round trips)", redis_callers)):
        w(f"\nWho calls {title}: cumulative % of all samples, by nearest caller  <- nearest tracejudge frame\n")
        for name, c in counter.most_common(8):
            w(f"{100 * c / total:6.1f}%  {name}\n")
    return out.getvalue()


# -- the part --------------------------------------------------------------------------------------
def run(args, log, profile_path: Path | None) -> str:
    quick = getattr(args, "quick", False)
    window, warmup = (8, 4) if quick else (20, 8)
    sizes = getattr(args, "shapes", None) or DEFAULT_SHAPES
    rounds = getattr(args, "rounds", 1)
    backlog = (3000 if quick else 8000) * len(sizes) * rounds
    workdir = Path(tempfile.mkdtemp(prefix="tracejudge-cpu-"))
    stack = Stack(workdir, judge_latency_ms=LATENCY_MS, rubrics=("helpfulness",))
    try:
        jobs = seed_backlog(stack, backlog, seed=31)
        log(f"cpu: {jobs} jobs queued (helpfulness@v1, one judge call each); judge latency {LATENCY_MS} ms")
        windows = [measure(stack, p, t, warmup, window, log) for _ in range(rounds) for p, t in sizes]
        profiled, profiled_seconds = None, 8 if quick else 25
        if profile_path is not None:
            raw = workdir / "profile.raw"
            if profile(stack, 2, 32, profiled_seconds, warmup, raw, log):
                profiled = raw
    finally:
        stack.close()
    out = io.StringIO()
    w = out.write
    w(f"worker fleet on the shared cores, judge emulator at {LATENCY_MS} ms, steady window {window} s after a "
      f"{warmup} s warm-up; one rubric, so a judged trace is one job and one judge call\n")
    w(f"{'in flight':>10}{'P x T':>9}{'judged/s':>10}{'ideal/s':>9}{'efficiency':>11}{'CPU ms/trace':>14}"
      f"{'in PINGs':>10}{'fleet cores':>12}{'emulators cores':>16}{'Redis cmds/job':>15}\n")
    for x in windows:
        w(f"{x.in_flight:>10}{f'{x.processes} x {x.threads}':>9}{x.per_second:>10.1f}"
          f"{x.in_flight / (LATENCY_MS / 1000):>9.0f}{x.efficiency:>11.2f}{x.cpu_ms:>14.1f}{x.cpu_in_pings:>10.0f}"
          f"{x.cpu_seconds / x.seconds:>12.2f}{x.emulator_cpu / x.seconds:>16.2f}"
          f"{sum(x.redis_calls.values()) / max(1, x.judged):>15.1f}\n")
    x = next((v for v in windows if (v.processes, v.threads) == (2, 32)), windows[0])  # the profiled shape
    w(f"\nRedis commands per job at {x.in_flight} in flight, by command: " + ", ".join(
        f"{k} {v / max(1, x.judged):.1f}" for k, v in x.redis_calls.most_common(12)) + "\n")
    if profiled is not None and profile_path is not None:
        note = (f"# py-spy profile of the tracejudge worker fleet, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} "
                f"UTC\n# 2 processes x 32 threads = 64 judge calls in flight, judge emulator at {LATENCY_MS} ms, "
                f"backlog of helpfulness@v1 jobs; python -m benchmarks.cpu (benchmarks/continuous.py runs it)\n"
                f"# CPU per judged trace at {x.processes} x {x.threads} without py-spy: {x.cpu_ms:.1f} ms, efficiency "
                f"{x.efficiency:.2f}, {sum(x.redis_calls.values()) / max(1, x.judged):.1f} Redis commands per job\n")
        stacks = parse_raw(profiled)
        held = sum(c for _, c in stacks) / (PROFILE_HZ * profiled_seconds)  # GIL-held seconds a second, both processes
        note += (f"# the GIL was held {held:.2f} of a second per second over the 2 worker processes; the fleet burnt "
                 f"{x.cpu_seconds / x.seconds:.2f} cores unprofiled: the rest is outside Python (system calls, the "
                 f"kernel's loopback TCP, GIL hand-offs)\n\n")
        text = report(stacks, note)
        profile_path.write_text(text)
        shutil.copy(profiled, profile_path.with_suffix(".raw"))
        w(f"\nprofile written to {profile_path} (raw stacks: {profile_path.with_suffix('.raw').name})\n")
        w(text[text.find("By where"):text.find("\nTop")] + "\n")
    return out.getvalue()


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def shapes(text: str) -> list[tuple[int, int]]:
    """"2x32,8x8" -> [(2, 32), (8, 8)], for --shapes."""
    out = []
    for part in text.split(","):
        try:
            p, t = (int(n) for n in part.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not PROCESSESxTHREADS, e.g. 2x32") from None
        if p < 1 or not 1 <= t <= MAX_THREADS:
            raise argparse.ArgumentTypeError(f"{part!r}: need at least one process and 1-{MAX_THREADS} threads "
                                             f"(a process's Redis pool holds 100 connections)")
        out.append((p, t))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 s windows and a smaller backlog")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--shapes", type=shapes, default=None, metavar="PxT[,PxT...]",
                        help="fleet shapes (processes x threads) to measure, in this order "
                             "(default: 2x32,4x64, i.e. 64 and 256 in flight)")
    parser.add_argument("--rounds", type=_positive, default=1, help="measure every shape this many times, alternating")
    args = parser.parse_args(argv)
    stamp = dt.datetime.now().strftime("%Y-%m-%d")
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(run(args, print, None if args.no_profile else RESULTS / f"profile-{stamp}{'-quick' if args.quick else ''}.txt"))


if __name__ == "__main__":
    main()
