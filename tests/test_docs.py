"""The documentation stays short where it must, and its links, commands and lists stay true:
README.md fits in a ten-minute read, every relative link (and its #anchor) resolves, the README
starts with the two commands, every setting is documented, the layout in docs/architecture.md
names every package, and rubrics/README.md lists every shipped rubric. Fast: files only."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 220

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) or [text](target "title"); images too. Not inside inline code (stripped first).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")


def documents() -> list[Path]:
    return [README, REPO / "rubrics" / "README.md", *sorted(DOCS.glob("*.md"))]


def prose_lines(path: Path) -> list[str]:
    """The lines of ``path`` outside fenced code blocks."""
    out, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lower-cased, everything but word
    characters, hyphens and spaces dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*|(?<!\w)_|_(?!\w))", "", text)  # emphasis markers
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            links.append(target)
    return links


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_a_file_and_anchor_that_exist(path):
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        where = path if not file_part else (path.parent / file_part).resolve()
        if not where.exists():
            problems.append(f"{target}: no file {where}")
            continue
        if anchor and where.suffix == ".md" and anchor not in anchors(where):
            problems.append(f"{target}: no heading with the anchor #{anchor} in {where.name}")
    assert not problems, "\n".join(problems)


def test_the_docs_folder_has_its_pages():
    for name in ("README.md", "architecture.md", "sizing.md", "benchmarks.md", "operations.md",
                 "configuration.md"):
        assert (DOCS / name).is_file(), name


def test_the_readme_is_a_ten_minute_read():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def fenced_shell_commands(path: Path) -> list[str]:
    """The commands of the shell code blocks, in order, without comments."""
    commands, lang = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        fence = FENCE.match(line)
        if fence:
            lang = None if lang is not None else (line.strip().lstrip("`~").strip() or "")
            continue
        if lang in ("bash", "sh", "shell", "console") and line.strip() and not line.strip().startswith("#"):
            commands.append(re.sub(r"\s+#.*$", "", line.strip()).lstrip("$ ").strip())
    return commands


def test_the_readme_starts_with_the_demo_and_the_test_commands():
    # CI runs `./dev test` (.ci/run); a reader runs the README's first two commands.
    assert fenced_shell_commands(README)[:2] == ["./dev demo", "./dev test"]


def test_every_setting_is_documented():
    settings = (REPO / "worker" / "settings.py").read_text(encoding="utf-8")
    names = sorted(set(re.findall(r"TRACEJUDGE_[A-Z0-9_]+", settings)))
    assert len(names) > 20, names  # the grep found the settings
    text = README.read_text(encoding="utf-8") + "".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.md"))
    missing = [name for name in names if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"not in README.md or docs/: {missing}"


def layout_block() -> str:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    match = re.search(r"^## Layout\s*\n+```[^\n]*\n(.*?)^```", text, re.M | re.S)
    assert match, "docs/architecture.md has a '## Layout' section with a code block"
    return match.group(1)


def test_the_layout_names_every_package_and_module_of_the_core():
    block = layout_block()
    worker = REPO / "worker"
    packages = sorted(p.name for p in worker.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.name for p in worker.glob("*.py") if p.name != "__init__.py")
    samplers = sorted(p.name for p in (REPO / "samplers").glob("*.py") if p.name != "__init__.py")
    missing = ([f"worker/{p}/" for p in packages if not re.search(rf"^\s+{re.escape(p)}/", block, re.M)]
               + [f"worker/{m}" for m in modules if m not in block]
               + [f"samplers/{m}" for m in samplers if m not in block])
    assert not missing, f"add {missing} to the '## Layout' block of docs/architecture.md"


def test_the_rubrics_readme_lists_every_shipped_rubric():
    text = (REPO / "rubrics" / "README.md").read_text(encoding="utf-8")
    shipped = sorted(p.name for p in (REPO / "rubrics").iterdir() if p.is_dir() and any(p.glob("v*/rubric.yaml")))
    assert len(shipped) >= 6, shipped
    missing = [name for name in shipped if not re.search(rf"^\| `{name}` \|", text, re.M)]
    assert not missing, f"rubrics/README.md's starter table does not list {missing}"
