"""Batch mode: rubrics with ``judge.mode: batch`` are judged through Anthropic Message Batches
or the OpenAI Batch API at half price, for work that can wait hours.

A job renders its request as usual and defers it to a Redis store (store.py); a batch cycle
(worker/judging/batch_cycle.py) submits what is pending, polls what was submitted, and finishes
every result with the online path's own steps. providers.py speaks the two batch APIs and
sizing.py cuts requests into batches. Nothing here knows the judging steps: judging imports
this package, never the other way round.
"""
