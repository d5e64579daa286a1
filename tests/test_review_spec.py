"""The optional ``review:`` and ``calibration:`` sections of rubric.yaml: parsed when present,
nothing when absent (the shipped versions' hashes stay those in the lock), and every malformed
field fails ``rubrics lint`` with a message naming it, at its line."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from tests.helpers import REPO
from worker.cli.main import main
from worker.rubrics.review_spec import CalibrationSpec, DatasetSpec, FeedbackSpec, ReviewSpec
from worker.rubrics.rubric import SHARED_PROMPTS, load_rubrics, version_sha256

REVIEW = """review:
  queue: helpfulness-review
  bottom_per_week: 5
  calibration_share: 0.02
  boundary: true
  dataset:
    below: 3
    user_feedback: {name: user_feedback, below: 0}
calibration:
  min_kappa: 0.6
  min_pairs: 25
"""


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "rubrics"
    for name in ("helpfulness", "safety"):
        shutil.copytree(REPO / "rubrics" / name, root / name)
    for shared in SHARED_PROMPTS:
        shutil.copy(REPO / "rubrics" / shared, root / shared)
    return root


def _lint(root):
    result = CliRunner().invoke(main, ["rubrics", "lint", "--dir", str(root)])
    return result.exit_code, result.output


def test_absent_sections_mean_no_review_and_the_released_hashes_are_unchanged(root):
    lock = json.loads((REPO / "rubrics" / "rubrics.lock").read_text())
    for key, rubric in load_rubrics(REPO / "rubrics").items():
        assert rubric.review is None and rubric.calibration is None
        assert version_sha256(rubric.path) == rubric.sha256 == (lock[key]["sha256"] if isinstance(lock[key], dict)
                                                                else lock[key])


def test_a_review_section_parses_with_its_values_on_the_scale(root):
    meta = root / "helpfulness" / "v1" / "rubric.yaml"
    meta.write_text(meta.read_text() + REVIEW)
    rubric = load_rubrics(root)["helpfulness@v1"]
    assert rubric.review == ReviewSpec(queue="helpfulness-review", bottom_per_week=5, calibration_share=0.02,
                                       boundary=(1.0, 5.0), dataset=DatasetSpec(None, 3, FeedbackSpec("user_feedback", 0.0)))
    assert rubric.calibration == CalibrationSpec(min_kappa=0.6, min_pairs=25, window_days=28)
    code, out = _lint(root)
    assert code == 0, out


@pytest.mark.parametrize("old, new, message", [
    ("bottom_per_week: 5", "bottom_per_week: 50", "review.bottom_per_week must be a whole number in 0..20"),
    ("calibration_share: 0.02", "calibration_share: 2", "review.calibration_share must be a number within 0..1"),
    ("boundary: true", "boundary: [0, 5]", "review.boundary.0 must be a number on the scale"),
    ("below: 3", "below: good", "review.dataset.below must be a number on the scale"),
    ("user_feedback: {name: user_feedback, below: 0}", "user_feedback: {below: 0}",
     "review.dataset.user_feedback needs 'name'"),
    ("min_kappa: 0.6", "min_kappa: high", "calibration.min_kappa must be a number within -1..1"),
    ("min_pairs: 25", "min_pairs: 1", "calibration.min_pairs must be a whole number of at least 2"),
    ("queue: helpfulness-review", "queue: ''", "review.queue must be a non-empty name"),
])
def test_a_malformed_field_fails_lint_naming_it_at_its_line(root, old, new, message):
    meta = root / "helpfulness" / "v1" / "rubric.yaml"
    text = meta.read_text() + REVIEW.replace(old, new)
    meta.write_text(text)
    line = text[:text.index(new)].count("\n") + 1
    code, out = _lint(root)
    assert code == 1
    assert f"{meta}:{line}: {message}" in out, out


def test_boundary_true_on_a_boolean_scale_is_refused_and_an_unknown_key_warns(root):
    meta = root / "safety" / "v1" / "rubric.yaml"
    meta.write_text(meta.read_text() + "review:\n  boundary: true\n  bottom_per_weak: 3\n")
    code, out = _lint(root)
    assert code == 1
    assert "review.boundary: true on a two-valued scale would send every verdict to review" in out
    assert "warning" in out and "unknown key 'review.bottom_per_weak' is ignored" in out
    meta.write_text(meta.read_text().replace("boundary: true", "boundary: [false]"))
    assert load_rubrics(root)["safety@v1"].review.boundary == (False,)
