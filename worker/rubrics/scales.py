"""A rubric's score scale: the judge's output schema and strict validation of its answer."""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, TypeAlias, TypeGuard

from worker.errors import ConfigError, VerdictError

ScaleKind: TypeAlias = Literal["numeric", "categorical", "boolean"]
# A value on a scale as human labels and parsed verdicts hold it: a number (numeric), a label
# string (categorical) or true/false (boolean).
Level: TypeAlias = bool | int | float | str


def is_real(value: object) -> TypeGuard[int | float]:
    """An int or a float, not a bool (YAML and JSON booleans are ints to Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Scale:
    kind: ScaleKind
    minimum: float | None = None  # numeric and boolean scales (a boolean is 0..1)
    maximum: float | None = None
    integer: bool = False
    higher_is_better: bool = True
    labels: tuple[tuple[str, float], ...] = ()  # categorical: (label, value), best first

    @classmethod
    def from_dict(cls, raw: object, where: str) -> Scale:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: 'score' must be a mapping")
        kind = raw.get("type")
        direction = raw.get("direction", "higher_is_better")
        if direction not in ("higher_is_better", "lower_is_better"):
            raise ConfigError(f"{where}: score.direction must be higher_is_better or lower_is_better")
        if kind == "numeric":
            lo, hi = raw.get("min"), raw.get("max")
            if not (is_real(lo) and is_real(hi)):
                raise ConfigError(f"{where}: numeric score needs numbers 'min' and 'max'")
            if lo >= hi:
                raise ConfigError(f"{where}: score.min ({lo}) must be below score.max ({hi})")
            return cls("numeric", float(lo), float(hi), bool(raw.get("integer", False)),
                       direction == "higher_is_better")
        if kind == "categorical":
            labels = raw.get("labels")
            if not isinstance(labels, dict) or len(labels) < 2:
                raise ConfigError(f"{where}: categorical score needs 'labels': a mapping of 2+ label: value")
            pairs = []
            for label, value in labels.items():
                if not isinstance(label, str) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{where}: label {label!r} needs a numeric value")
                pairs.append((label, float(value)))
            return cls("categorical", labels=tuple(pairs), higher_is_better=direction == "higher_is_better")
        if kind == "boolean":
            return cls("boolean", 0.0, 1.0, True, direction == "higher_is_better")
        raise ConfigError(f"{where}: score.type must be numeric, categorical or boolean, not {kind!r}")

    @property
    def bounds(self) -> tuple[float, float]:
        """(minimum, maximum) of a numeric or boolean scale; a categorical scale has none."""
        if self.minimum is None or self.maximum is None:
            raise ValueError(f"a {self.kind} scale has no minimum and maximum")
        return self.minimum, self.maximum

    @property
    def data_type(self) -> str:
        return {"numeric": "NUMERIC", "categorical": "CATEGORICAL", "boolean": "BOOLEAN"}[self.kind]

    def json_schema(self) -> dict[str, object]:
        """The schema of the verdict's ``score`` field."""
        if self.kind == "numeric":
            lo, hi = self.bounds
            return {"type": "integer" if self.integer else "number", "minimum": _plain(lo), "maximum": _plain(hi)}
        if self.kind == "categorical":
            return {"type": "string", "enum": [label for label, _ in self.labels]}
        return {"type": "boolean"}

    def score_value(self, raw: object) -> float | str:
        """The Langfuse score value for the judge's answer; raises VerdictError('off_scale')."""
        if self.kind == "numeric":
            if not is_real(raw) or not math.isfinite(raw):
                raise VerdictError("unparseable", f"score {raw!r} is not a number")
            if self.integer and raw != int(raw):
                raise VerdictError("off_scale", f"score {raw} is not a whole number")
            lo, hi = self.bounds
            if not lo <= raw <= hi:
                raise VerdictError("off_scale", f"score {raw} outside [{_plain(lo)}, {_plain(hi)}]")
            return _plain(raw)
        if self.kind == "categorical":
            if not isinstance(raw, str) or raw not in {label for label, _ in self.labels}:
                raise VerdictError("off_scale", f"label {raw!r} not one of {[l for l, _ in self.labels]}")
            return raw
        if not isinstance(raw, bool):
            raise VerdictError("off_scale", f"score {raw!r} is not a boolean")
        return 1 if raw else 0

    def describe(self) -> str:
        if self.kind == "numeric":
            lo, hi = self.bounds
            return f"{'integer' if self.integer else 'number'} {_plain(lo)}..{_plain(hi)}"
        if self.kind == "categorical":
            return "one of " + ", ".join(label for label, _ in self.labels)
        return "true or false"


def _plain(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x
