"""The optional ``review:`` and ``calibration:`` sections of rubric.yaml: which judged traces go
to people, which failures become a dataset, and how much judge–human agreement the rubric needs.

    review:
      queue: helpfulness-review        # the Langfuse annotation queue (default: tracejudge-<rubric>)
      bottom_per_week: 5               # the N lowest-scored traces per segment cell and ISO week
      calibration_share: 0.02          # of the judged traces, picked by the contract's hash
      boundary: true                   # verdicts at the scale's ends (or a list of scale values)
      dataset:                         # failures into a Langfuse dataset (default: tracejudge-<rubric>-failures)
        name: helpfulness-failures
        below: 3                       # a value on the scale: traces the judge scored below it
        user_feedback: {name: user_feedback, below: 0}   # traces users flagged (a numeric score < 0)
    calibration:
      min_kappa: 0.6                   # alert the owner when production κ falls below this
      min_pairs: 30                    # ... with at least this many human-labelled traces
      window_days: 28                  # the rolling window of human labels

Absent sections change nothing: no routing, no dataset, no agreement alert, and the version's
sha256 is that of its files, as before. Values are kept as written on the scale; worker/review
maps them to quality points.
"""
from __future__ import annotations

import dataclasses
from typing import TypeGuard

from worker.rubrics.doc import Keys, RubricDoc, is_number
from worker.rubrics.scales import Level, Scale

MAX_BOTTOM_PER_WEEK = 20  # the drift aggregates keep the 20 lowest traces per cell-day
REVIEW_KEYS = {"queue", "bottom_per_week", "calibration_share", "boundary", "dataset"}
DATASET_KEYS = {"name", "below", "user_feedback"}
FEEDBACK_KEYS = {"name", "below", "values"}
CALIBRATION_KEYS = {"min_kappa", "min_pairs", "window_days"}


@dataclasses.dataclass(frozen=True)
class FeedbackSpec:
    """A user-feedback score on the trace: flagged when its number is below ``below`` or its
    label is one of ``values``."""

    name: str
    below: float | None = None
    values: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    name: str | None = None
    below: Level | None = None  # a value on the rubric's scale; None: no threshold
    user_feedback: FeedbackSpec | None = None


@dataclasses.dataclass(frozen=True)
class ReviewSpec:
    queue: str | None = None
    bottom_per_week: int = 0
    calibration_share: float = 0.0
    boundary: tuple[Level, ...] = ()  # values on the scale whose verdicts go to review
    dataset: DatasetSpec | None = None


@dataclasses.dataclass(frozen=True)
class CalibrationSpec:
    min_kappa: float | None = None
    min_pairs: int = 30
    window_days: int = 28


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _name(doc: RubricDoc, keys: Keys, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        doc.error(keys, f"{'.'.join(map(str, keys))} must be a non-empty name of at most 255 characters")
        return None
    return value.strip()


def on_scale(doc: RubricDoc, keys: Keys, value: object, scale: Scale | None) -> Level | None:
    """``value`` as a level of ``scale`` (number, label or bool), or None with an error naming the key."""
    where = ".".join(map(str, keys))
    if scale is None:
        return None  # the scale's own error is reported already
    if scale.kind == "boolean":
        if isinstance(value, bool):
            return value
        doc.error(keys, f"{where} must be true or false (the scale is boolean)")
    elif scale.kind == "categorical":
        names = [label for label, _ in scale.labels]
        if isinstance(value, str) and value in names:
            return value
        doc.error(keys, f"{where} must be one of the labels {names}, not {value!r}")
    elif is_number(value) and scale.bounds[0] <= value <= scale.bounds[1]:
        return value
    else:
        doc.error(keys, f"{where} must be a number on the scale ({scale.describe()}), not {value!r}")
    return None


def _boundary(doc: RubricDoc, raw: object, scale: Scale | None) -> tuple[Level, ...]:
    keys = ("review", "boundary")
    if raw is None or raw is False:
        return ()
    if raw is True:
        if scale is None:
            return ()
        if scale.kind == "numeric":
            return scale.bounds
        if scale.kind == "boolean" or len(scale.labels) < 3:
            doc.error(keys, "review.boundary: true on a two-valued scale would send every verdict to review: "
                      "list the values instead (e.g. [false]) or use review.calibration_share")
            return ()
        ordered = sorted(scale.labels, key=lambda pair: pair[1])
        return (ordered[0][0], ordered[-1][0])
    if not isinstance(raw, list) or not raw:
        doc.error(keys, "review.boundary must be true, false or a non-empty list of values on the scale")
        return ()
    values = [on_scale(doc, keys + (i,), value, scale) for i, value in enumerate(raw)]
    return tuple(v for v in values if v is not None)


def _feedback(doc: RubricDoc, raw: object) -> FeedbackSpec | None:
    keys = ("review", "dataset", "user_feedback")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"name": raw, "below": 0}
    if not isinstance(raw, dict):
        doc.error(keys, "review.dataset.user_feedback must be a mapping with 'name' and 'below' or 'values'")
        return None
    name = _name(doc, keys + ("name",), raw.get("name"))
    if name is None and "name" not in raw:
        doc.error(keys, "review.dataset.user_feedback needs 'name': the feedback score's name in Langfuse")
    below, values = raw.get("below"), raw.get("values") or []
    if below is not None and not is_number(below):
        doc.error(keys + ("below",), "review.dataset.user_feedback.below must be a number")
        below = None
    if not isinstance(values, list) or not all(isinstance(v, (str, bool)) for v in values):
        doc.error(keys + ("values",), "review.dataset.user_feedback.values must be a list of labels")
        values = []
    if below is None and not values and "below" not in raw and "values" not in raw:
        doc.error(keys, "review.dataset.user_feedback needs 'below' (a number) or 'values' (labels) "
                  "saying which feedback flags a trace")
    if name is None:
        return None
    return FeedbackSpec(name, None if below is None else float(below), tuple(str(v) for v in values))


def _dataset(doc: RubricDoc, raw: object, scale: Scale | None) -> DatasetSpec | None:
    keys = ("review", "dataset")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        doc.error(keys, "review.dataset must be a mapping (name, below, user_feedback)")
        return None
    below = None if raw.get("below") is None else on_scale(doc, keys + ("below",), raw["below"], scale)
    feedback = _feedback(doc, raw.get("user_feedback"))
    if raw.get("below") is None and "user_feedback" not in raw:
        doc.error(keys, "review.dataset needs 'below' (a value on the scale) or 'user_feedback'")
    return DatasetSpec(_name(doc, keys + ("name",), raw.get("name")), below, feedback)


def parse_review(doc: RubricDoc, raw: object, scale: Scale | None) -> ReviewSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        doc.error(("review",), "review must be a mapping (queue, bottom_per_week, calibration_share, boundary, "
                  "dataset)")
        return None
    bottom = raw.get("bottom_per_week", 0)
    if not _whole(bottom) or not 0 <= bottom <= MAX_BOTTOM_PER_WEEK:
        doc.error(("review", "bottom_per_week"),
                  f"review.bottom_per_week must be a whole number in 0..{MAX_BOTTOM_PER_WEEK} "
                  "(the lowest traces kept per segment and day)")
        bottom = 0
    share = raw.get("calibration_share", 0.0)
    if not is_number(share) or not 0 <= share <= 1:
        doc.error(("review", "calibration_share"), "review.calibration_share must be a number within 0..1 "
                  "(the share of judged traces people review)")
        share = 0.0
    return ReviewSpec(queue=_name(doc, ("review", "queue"), raw.get("queue")), bottom_per_week=int(bottom),
                      calibration_share=float(share), boundary=_boundary(doc, raw.get("boundary"), scale),
                      dataset=_dataset(doc, raw.get("dataset"), scale))


def parse_calibration(doc: RubricDoc, raw: object) -> CalibrationSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        doc.error(("calibration",), "calibration must be a mapping (min_kappa, min_pairs, window_days)")
        return None
    kappa = raw.get("min_kappa")
    if kappa is not None and (not is_number(kappa) or not -1 <= kappa <= 1):
        doc.error(("calibration", "min_kappa"), "calibration.min_kappa must be a number within -1..1")
        kappa = None
    pairs = raw.get("min_pairs", CalibrationSpec.min_pairs)
    if not _whole(pairs) or pairs < 2:
        doc.error(("calibration", "min_pairs"), "calibration.min_pairs must be a whole number of at least 2")
        pairs = CalibrationSpec.min_pairs
    days = raw.get("window_days", CalibrationSpec.window_days)
    if not _whole(days) or not 1 <= days <= 90:
        doc.error(("calibration", "window_days"), "calibration.window_days must be a whole number in 1..90")
        days = CalibrationSpec.window_days
    return CalibrationSpec(None if kappa is None else float(kappa), int(pairs), int(days))
