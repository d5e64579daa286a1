"""Closing the loop: judged traces to human review, human labels back as judge–human agreement
per rubric version, production traces into labelled examples, failures into Langfuse datasets.

routing.py (which traces people review) → queue.py (the annotation queue, each item once) →
labels.py (human ANNOTATION scores paired with the judge's) → agreement.py (figures, stored,
alerting) → datasets.py (failures and user-flagged traces, each once) → examples.py (``rubrics
examples pull``); tick.py runs the periodic part in one call. reads.py is their Langfuse reads.
"""
