"""A rubric.yaml read with the line of every key, and the problems found in it.

Every problem names the file and the line of the offending key; ``load_rubrics`` raises the first
as a ConfigError (start-up), ``tracejudge rubrics lint`` reports them all.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from pathlib import Path
from typing import Literal, TypeAlias, TypeGuard

import yaml

from worker.errors import ConfigError

Severity: TypeAlias = Literal["error", "warning", "note"]
# Where a value sits in rubric.yaml: its keys from the top (mapping keys, list indexes), e.g.
# ("variables", "question", "path", 0). A key is whatever YAML made of it (usually a string).
Keys: TypeAlias = tuple[Hashable, ...]


@dataclasses.dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


class Problems(list[Problem]):
    """Collects problems instead of stopping at the first, so an author fixes them in one go."""

    def add(self, path: str | Path, line: int | None, message: str, severity: Severity = "error") -> None:
        self.append(Problem(str(path), line, message, severity))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self if p.severity == "error"]

    def raise_errors(self) -> None:
        errors = self.errors
        if errors:
            more = f" (and {len(errors) - 1} more: run `tracejudge rubrics lint`)" if len(errors) > 1 else ""
            raise ConfigError(f"{errors[0]}{more}")


class RubricDoc:
    """A parsed rubric.yaml: its data and the line of every key, so messages point at the key."""

    def __init__(self, path: Path, problems: Problems):
        self.path = path
        self.problems = problems
        self.lines: dict[Keys, int] = {(): 1}
        self.data: object = None  # what the YAML holds (a mapping, when the file is well-formed)

    def line(self, *keys: Hashable) -> int:
        """The line of the nearest of ``keys`` and its parents that the file has."""
        found: Keys = keys
        while found not in self.lines:
            found = found[:-1]
        return self.lines[found]

    def error(self, keys: Keys, message: str) -> None:
        self.problems.add(self.path, self.line(*keys), message)

    def warn(self, keys: Keys, message: str) -> None:
        self.problems.add(self.path, self.line(*keys), message, "warning")

    def parse(self, text: str) -> None:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                self._index(node, ())
                self.data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            detail = exc.problem or exc.context or "cannot parse"
            if exc.context and exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
                # The parser notices late: name where the unclosed construct began, too.
                detail += f" ({exc.context.removeprefix('while ')} that starts on line {exc.context_mark.line + 1})"
            self.problems.add(self.path, mark.line + 1 if mark else 1, f"invalid YAML: {detail}")
        except yaml.YAMLError as exc:
            self.problems.add(self.path, 1, f"invalid YAML: {exc}")
        finally:
            loader.dispose()

    def _index(self, node: yaml.Node, keys: Keys) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = key_node.value
                line = key_node.start_mark.line + 1
                if keys + (key,) in self.lines:
                    # PyYAML silently keeps the last value of a repeated key: say so instead.
                    self.problems.add(self.path, line, f"duplicate key '{'.'.join(map(str, keys + (key,)))}' "
                                      f"(first on line {self.lines[keys + (key,)]}): YAML keeps only the last")
                self.lines[keys + (key,)] = line
                self._index(value_node, keys + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[keys + (i,)] = item.start_mark.line + 1
                self._index(item, keys + (i,))


def is_number(value: object) -> TypeGuard[int | float]:
    """A finite int or float (not a bool, NaN or an infinity): what a rubric's numbers must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))
