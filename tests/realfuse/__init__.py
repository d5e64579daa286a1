"""Opt-in check of the whole pipeline against the real Langfuse server: ``./dev langfuse-test``
(``python -m tests.realfuse``).

Sets up ``../shared/realfuse`` (Langfuse 4.16 built from its own source) when it is not set up,
starts it unless it already answers, and runs tracejudge against it as a user would:

- its own ``redis-server`` on a free port, the judge emulator (hosted judges stay emulated) and a
  counting reverse proxy between tracejudge and Langfuse (the real server counts no requests);
- ``tracejudge scheduler`` and ``tracejudge worker --processes 1 --threads 8``, subprocesses of the
  real CLI, on a copy of the starter rubrics (every target: trace, observation, session) with three
  changes released in the copy's lock: ``helpfulness`` gets a ``review:`` section (annotation
  queue, calibration share, boundary verdicts, failures dataset), ``conversation_resolution``
  judges a session after 30 s of idleness instead of 30 minutes, and ``groundedness`` gets a
  detection target (power-aware sampling: its scores carry their inclusion);
- 39 traces in over OTLP/JSON (the only way into a v4 server in its default events_only mode),
  started 8 to 22 s in the past: four features, several tenants, retrieval steps, agent runs whose
  GENERATION calls a tool, three multi-turn sessions, three of the seed's malformed answers
  (``non_utf8``: lone surrogates, which the server stores and returns raw; a prompt injection;
  Jinja syntax) and one trace that must never be judged (a ``tracejudge-*`` name);
- waits until every selected trace, observation and session is scored or unscored with a reason
  and every written score was read back (or nothing moves any more), has the review loop run once
  more over the run's scores, then reads everything back from Langfuse directly (v3 scores with
  ``fields=details,subject``, the annotation queue's items, the failures dataset, score configs)
  and prints the figures.

Exit 0 only when nothing is missing or doubled (1: a check failed; 2: setup, start or the run
could not be done). Everything it started is stopped at the end, also on failure or Ctrl-C;
``--keep-server`` leaves the Langfuse server running. Modules: ``server`` (realfuse),
``proxy`` (counting), ``traffic`` (traces over OTLP), ``fleet`` (rubric copy, processes, review
tick), ``progress`` (what should end, what did), ``readback`` (Langfuse's side, the checks),
``report`` (the figures), ``slices`` and ``targets`` (what attribution and power-aware sampling
kept).
"""
