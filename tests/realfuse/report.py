"""The figures of a run, and the list of what failed."""
from __future__ import annotations

import collections
from pathlib import Path

from tests.realfuse.common import log
from tests.realfuse.fleet import REVIEWED
from tests.realfuse.progress import Expected, job_failures, warnings
from tests.realfuse.proxy import CountingProxy, request_kind
from tests.realfuse.readback import Findings
from tests.realfuse.traffic import Plan


def outcome_of(outcome: dict) -> str:
    return outcome["done"] or ("dead-lettered" if outcome["exhausted"] else "not ended")


def figures(base: str, plan: Plan, expected: Expected, outcomes: dict, found: Findings, status: dict,
            proxy: CountingProxy, waited: dict, review_ran: bool, seconds_up: float) -> None:
    wb = status["write_back"]
    log("")
    log("=" * 100)
    log(f"tracejudge against the real Langfuse ({base}): {len(plan.traces)} traces "
        f"({sum(t['excluded'] for t in plan.traces.values())} never to be judged), {len(plan.observations)} "
        f"observations, {len(plan.sessions)} sessions; {len(expected.items)} (subject, rubric) pairs")
    log(f"pipeline: {waited['how']}, {waited['seconds']:.0f} s after the traces went in; "
        f"{seconds_up:.0f} s from the server being up to the read-back")
    for target in ("trace", "observation", "session"):
        its = [outcomes[i["score_id"]] for i in expected.items if i["target"] == target]
        kinds = collections.Counter(outcome_of(o).split(":")[0] for o in its)
        na = sum(o["done"] == "unscored:not_applicable" for o in its)
        log(f"  {target + 's':<13} {len(its):4d} pairs: scored {kinds['scored']}, not applicable {na}, "
            f"unscored {kinds['unscored'] - na}, dead-lettered {kinds['dead-lettered']}, not ended {kinds['not ended']}")
    same = found.written == found.confirmed == found.present
    log(f"scores: written {len(found.written)} = confirmed {len(found.confirmed)} = present in Langfuse "
        f"{len(found.present)}  ({'equal' if same else 'NOT EQUAL'}; status: written {wb['written']}, confirmed "
        f"{wb['confirmed']}, awaiting read-back {wb['awaiting_read_back']}, missing {wb['missing']}, "
        f"re-written {wb['rewritten']})")
    log(f"duplicates (two scores with one subject + name): {len(found.duplicates)}; scores of ours under another "
        f"id: {len(found.unexpected)}; scores on the never-judged trace: {len(found.on_excluded)}")
    unscored = collections.Counter()
    for item in expected.items:
        done = outcomes[item["score_id"]]["done"] or ""
        if done.startswith("unscored:"):
            unscored[(item["target"], done.split(":", 1)[1])] += 1
    log("unscored by reason: " + (", ".join(f"{t} {r} {n}" for (t, r), n in sorted(unscored.items())) or "none")
        + f"  (status: {status['unscored_by_reason']})")
    judged = {expected.by_score_id[s]["trace_id"] for s in found.written if expected.by_score_id[s]["target"] == "trace"}
    total = proxy.total()
    log(f"Langfuse requests: {total} = {total / max(1, len(judged)):.2f} per judged trace ({len(judged)} traces), "
        f"{total / max(1, len(found.written)):.2f} per written score")
    kinds = collections.Counter()
    for (route, _code), n in proxy.counts.items():
        kinds[request_kind(route)] += n
    log("    per judged trace: " + ", ".join(f"{k} {n / max(1, len(judged)):.2f}" for k, n in kinds.most_common()))
    for (route, code), n in sorted(proxy.counts.items(), key=lambda kv: -kv[1])[:12]:
        log(f"    {n:5d}  {code}  {route}")
    log(f"seconds from write to confirmation: {wb['mean_seconds_to_confirm']} (mean; {wb['read_back_requests']} "
        f"read-back requests)")
    non_utf8 = plan.case("non_utf8")
    log(f"non_utf8 trace {non_utf8}: " + ", ".join(
        f"{i['rubric']}{' (its generation)' if i['target'] == 'observation' else ''} {outcome_of(outcomes[i['score_id']])}"
        for i in expected.items if i["trace_id"] == non_utf8))
    log(f"review loop ({REVIEWED}, {'ran' if review_ran else 'did NOT run'} over the run's scores): queue items for "
        f"our traces {sum(found.queued.values())} ({len(found.queued)} traces), calibration/boundary traces queued "
        f"{len(found.should_queue & set(found.queued))} of {len(found.should_queue)}; earlier runs' traces "
        f"posted again by this run {len(found.others_doubled)}; failures dataset {sum(found.in_dataset.values())} "
        f"items for our traces, {len(found.should_dataset)} judged below 3; review stats {status['review']}")
    log(f"score configs created by this run: {len(found.new_configs)}, doubling an active one of the same name and "
        f"scale: {len(found.doubled_configs)}; dead letters {status['queue']['dead_letters']}; judge calls "
        f"{status['judge']['calls']}")
    refused = collections.Counter((r, s) for r, s, _ in proxy.refused)
    if refused:
        log("Langfuse answers to tracejudge other than 2xx:")
        for (route, code), n in refused.most_common(8):
            body = next(b for r, s, b in proxy.refused if (r, s) == (route, code))
            log(f"    {n:4d}x {code} {route}: {' '.join(body.split())[:150]}")


def problems(expected: Expected, outcomes: dict, found: Findings, status: dict, review_ran: bool,
             work: Path) -> list[str]:
    out = []
    stuck = [i for i in expected.items if not outcomes[i["score_id"]]["done"]]
    dead = [i for i in stuck if outcomes[i["score_id"]]["exhausted"]]
    if len(stuck) > len(dead):
        out.append(f"{len(stuck) - len(dead)} pairs never ended (neither scored nor unscored): " + ", ".join(
            f"{i['rubric']}:{i['subject']}" for i in stuck if not outcomes[i["score_id"]]["exhausted"])[:300])
    if dead:
        out.append(f"{len(dead)} pairs dead-lettered instead of scored or unscored with a reason: " + "; ".join(
            f"{i['rubric']}:{i['subject']} ({str(outcomes[i['score_id']]['exhausted'].get('reason'))[:100]})"
            for i in dead[:3]))
    if not review_ran:
        out.append("the review loop did not run within 90 s of its mark being cleared")
    out += found.problems()
    if status["queue"]["dead_letters"]:
        out.append(f"{status['queue']['dead_letters']} dead letters")
    for name in ("worker", "scheduler"):
        for what, n in job_failures(work / f"{name}.log").most_common(4):
            out.append(f"{name} log: {n}x {what}")
    return out


def verdict(problems_found: list[str], work: Path) -> None:
    for name in ("worker", "scheduler"):
        lines = warnings(work / f"{name}.log")
        if lines:
            log(f"{name} log, warnings and errors (most frequent first):")
            for line in lines:
                log("    " + line)
    log("=" * 100)
    if problems_found:
        log("FAILED:")
        for p in problems_found:
            log(f"  - {p}")
    else:
        log("PASSED: every selected trace, observation and session scored or unscored with a reason; "
            "nothing missing, nothing doubled")
    log(f"logs, plan.json and the rubric copy: {work}")
