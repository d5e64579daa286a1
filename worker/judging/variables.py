"""Trace fields → a rubric's variables: JSON-path selection, then untrusted-text hygiene.

Trace content is untrusted. It reaches the template only as data (so Jinja syntax in it is
inert), made valid UTF-8, stripped of PII and secrets (redaction.py), cut to a budget with a
visible marker, and with every delimiter the template uses, and chat role markers, neutralised
so it cannot close its own quote. Redaction comes before truncation so a secret cut in half by
the marker is still caught whole, and neutralising comes last so nothing after it can reopen a tag.
"""
from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections import Counter
from typing import Any, TypedDict

from worker.errors import Unscored
from worker.judging.redaction import Redactor
from worker.judging.session_view import conversation, session_facts, view_for
from worker.langfuse_io.traces import CUT_KEY, Trace
from worker.rubrics.rubric import Rubric, Variable

_MISSING = object()
_TOKEN = re.compile(r"\.([A-Za-z_][\w-]*)|\['([^']*)'\]|\[(-?\d+)\]|\[\*\]|\[\?\(@\.(\w+)\s*==\s*'([^']*)'\)\]")
# Chat-template tokens of the common model families (ChatML, Llama 2 and 3, Gemma, Anthropic's
# legacy turns): text that could make a judge believe a new turn or a system prompt started.
_ROLE_MARKERS = re.compile(
    r"(<\|im_(?:start|end|sep)\|>|<\|(?:system|user|assistant|endoftext|eot_id|begin_of_text)\|>"
    r"|<\|(?:start|end)_header_id\|>|\[/?INST\]|<</?SYS>>|</?(?:start|end)_of_turn>"
    r"|\r?\n[ \t]*\r?\n(?:Human|Assistant|System):)", re.I)
_DEFANG = str.maketrans({"<": "‹", ">": "›", "[": "⟦", "]": "⟧"})
# Everything a reader (or a model) takes for "<": the character, its fullwidth and small forms,
# and HTML entities.
_LESS_THAN = r"(?:<|＜|﹤|&lt;|&#0*60;|&#x0*3c;)"


def select(value: Any, path: str) -> Any:
    """A small JSONPath subset: $, .key, ['key'], [n], [-1], [*], [?(@.key=='v')]."""
    if not path.startswith("$"):
        raise ValueError(f"path {path!r} must start with $")
    rest, items, many = path[1:], [value], False
    while rest:
        match = _TOKEN.match(rest)
        if not match:
            raise ValueError(f"cannot parse path {path!r} at {rest!r}")
        rest = rest[match.end():]
        key, quoted, index, fkey, fval = match.groups()
        nxt = []
        for item in items:
            if key is not None or quoted is not None:
                k = key if key is not None else quoted
                if isinstance(item, dict) and k in item:
                    nxt.append(item[k])
            elif index is not None:
                if isinstance(item, list) and -len(item) <= int(index) < len(item):
                    nxt.append(item[int(index)])
            elif fkey is not None:
                many = True
                if isinstance(item, list):
                    nxt.extend(e for e in item if isinstance(e, dict) and str(e.get(fkey)) == fval)
            else:  # [*]
                many = True
                if isinstance(item, list):
                    nxt.extend(item)
                elif isinstance(item, dict):
                    nxt.extend(item.values())
        items = nxt
    if many:
        return items
    return items[0] if items else _MISSING


def as_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = "\n\n".join(value)
    else:
        text = json.dumps(value, ensure_ascii=False, indent=1, default=str)
    # Lone surrogates and undecodable bytes (non-UTF-8 traces) become U+FFFD, never a crash.
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")
    # Control characters go, and so do invisible format characters (zero-width spaces, bidi
    # overrides): they can hide a delimiter inside text that looks harmless.
    return "".join(ch for ch in text if (ch in "\n\t\r" or ch >= " ") and unicodedata.category(ch) != "Cf")


def truncate(text: str, budget: int) -> tuple[str, int]:
    """Head and tail kept around a visible marker; returns (text, characters cut)."""
    if len(text) <= budget:
        return text, 0
    cut = len(text) - budget
    head = budget * 2 // 3
    marker = f"\n[… {cut:,} characters truncated by tracejudge …]\n"
    return text[:head] + marker + text[len(text) - (budget - head):], cut


class HygieneMetadata(TypedDict):
    """``Hygiene.as_metadata``: what the score's metadata says about the text the judge saw."""

    truncated_chars: int
    neutralised_markers: int
    pii_redaction: bool
    pii_redacted: dict[str, int]
    pii_redacted_total: int
    output_chars: int


@dataclasses.dataclass
class Hygiene:
    truncated_chars: int = 0
    neutralised: int = 0
    redaction: bool = True
    pii: Counter[str] = dataclasses.field(default_factory=Counter)
    output_chars: int = 0  # the judged answer's length, for a score-vs-length check

    def as_metadata(self) -> HygieneMetadata:
        """What was done to the trace text before the judge saw it, for the score's metadata."""
        return {"truncated_chars": self.truncated_chars, "neutralised_markers": self.neutralised,
                "pii_redaction": self.redaction, "pii_redacted": dict(sorted(self.pii.items())),
                "pii_redacted_total": sum(self.pii.values()), "output_chars": self.output_chars}


def neutralise(text: str, tags: frozenset[str], hygiene: Hygiene) -> str:
    if tags:
        pattern = re.compile(_LESS_THAN + r"(\s*/?\s*(?:" + "|".join(map(re.escape, sorted(tags))) + r")\b)", re.I)
        text, n = pattern.subn(r"‹\1", text)
        hygiene.neutralised += n
    text, n = _ROLE_MARKERS.subn(lambda m: re.sub(r"\n(?=[A-Za-z]+:$)", "\n> ", m.group(0).translate(_DEFANG)), text)
    hygiene.neutralised += n
    return text


def template_tags(*templates: str | None) -> frozenset[str]:
    """Tag names the templates use as delimiters, e.g. <answer>...</answer>."""
    return frozenset(
        tag.lower() for t in templates if t for tag in re.findall(r"</?([A-Za-z_][\w-]*)[^>]*>", t)
    )


def observation_names(rubric: Rubric) -> tuple[str, ...]:
    """The observation names a rubric reads or requires: what the trace reader fetches beside the root."""
    named = [v.observation for v in rubric.variables if v.source == "observation" and v.observation]
    return tuple(dict.fromkeys([*rubric.applies_to.observations, *named]))


def raw_value(trace: Trace, var: Variable) -> Any:
    """``trace`` is the subject's view (session_view.view_for): for an observation rubric,
    input, output and metadata are the judged observation's; root, parent its context."""
    own = trace.subject  # an observation rubric's judged observation
    if var.source in ("input", "output", "metadata") and own is not None:
        base = own.get(var.source)
    elif var.source == "input":
        base = trace.input
    elif var.source == "output":
        base = trace.output
    elif var.source == "metadata":
        base = trace.metadata
    elif var.source == "trace":
        base = {"id": trace.id, "name": trace.name, "environment": trace.environment,
                "tags": trace.tags, "metadata": trace.metadata}
    elif var.source == "root":
        base = {"input": trace.input, "output": trace.output, "metadata": trace.metadata, "name": trace.name}.get(var.field)
    elif var.source == "parent":
        base = trace.parent.get(var.field) if trace.parent else None
    elif var.source == "conversation":
        base = conversation(trace) if trace.turns else None
    elif var.source == "session":
        base = session_facts(trace)
    else:
        obs = trace.observation(var.observation) if var.observation else own
        base = obs.get(var.field) if obs else None
    if base is None:
        return _MISSING
    if isinstance(base, str):
        return base  # paths address structured values; plain text is the value itself
    for path in var.paths:
        value = select(base, path)
        if value is not _MISSING and value != []:
            return value
    return _MISSING


def _cut_at_read(trace: Trace, var: Variable) -> int:
    if var.source in ("input", "output") and trace.subject is not None:
        cuts: dict[str, int] = trace.subject.get(CUT_KEY) or {}
        return cuts.get(var.source, 0)
    if var.source in ("input", "output"):
        return trace.cut_chars.get(var.source, 0)
    if var.source == "observation":
        return trace.cut_chars.get(f"{var.observation}.{var.field}", 0)
    return 0


def map_variables(trace: Trace, rubric: Rubric, budget: int, *,
                  redact: bool = True) -> tuple[dict[str, str], Hygiene]:
    """Each variable: selected, as text, redacted (when on), truncated, then neutralised."""
    tags = template_tags(rubric.system_template, rubric.user_template)
    trace = view_for(trace, rubric)
    hygiene = Hygiene(redaction=redact)
    redactor = Redactor() if redact else None
    out: dict[str, str] = {}
    answer_seen = False
    for var in rubric.variables:
        value = raw_value(trace, var)
        if value is _MISSING or value == [] or (isinstance(value, str) and not value.strip()):
            if var.required:
                reason = "no_output" if var.source == "output" else "not_applicable"
                raise Unscored(reason, f"variable {var.name!r} ({var.source} {' | '.join(var.paths)}) is empty")
            out[var.name] = ""
            continue
        text = as_text(value)
        cut_at_read = _cut_at_read(trace, var)  # what the trace reader did not keep counts as truncated
        if var.source == "output":
            hygiene.output_chars += len(text) + cut_at_read
            answer_seen = True
        if redactor is not None:
            text = redactor.redact(text)
        text, cut = truncate(text, budget)
        hygiene.truncated_chars += cut + cut_at_read
        out[var.name] = neutralise(text, tags, hygiene)
    if not answer_seen and trace.output is not None:
        # the rubric reads no output: the whole one
        hygiene.output_chars = len(as_text(trace.output)) + trace.cut_chars.get("output", 0)
    if redactor is not None:
        hygiene.pii = redactor.counts
    return out, hygiene
