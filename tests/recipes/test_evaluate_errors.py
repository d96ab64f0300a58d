"""The standard errors `visionllm2 eval` prints beside each headline metric."""

from __future__ import annotations

import numpy as np
import pytest

from visionllm2.recipes.evaluate import FOLDS, fold_stderr, mean_with_stderr


def test_a_mean_carries_its_standard_error():
    metrics = mean_with_stderr("accuracy@0.5", [True, False, True, True])
    assert metrics["accuracy@0.5"] == 0.75
    assert metrics["accuracy@0.5_stderr"] == pytest.approx(0.5 / 2)  # sd (ddof 1) 0.5 over √4
    assert mean_with_stderr("mIoU", [0.7]) == {"mIoU": 0.7}  # one sample: no error to claim


def test_fold_errors_estimate_the_whole_sets_error():
    # A mean is the one metric whose whole-set error is known: the fold estimate must agree with it.
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(40):
        hits = rng.random(300) < 0.8
        folds = [hits[k::FOLDS].mean() for k in range(FOLDS)]
        ratios.append(fold_stderr(folds) / mean_with_stderr("x", hits)["x_stderr"])
    assert 0.8 <= float(np.mean(ratios)) <= 1.1  # unbiased up to sd's small-sample bias (≈ 0.94 for 5)


def test_no_fold_error_when_a_fold_had_nothing_to_score():
    assert fold_stderr([0.8, -1.0, 0.7, 0.9, 0.8]) is None  # pycocotools' −1: no ground truth in a fold
    assert fold_stderr([0.8]) is None
    assert fold_stderr([0.8, 0.8, 0.8, 0.8, 0.8]) == 0.0
