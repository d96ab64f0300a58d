"""Fixtures of the SDK tests: a session on the tiny preset, and a real photograph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionllm2.sdk import Session


@pytest.fixture()
def session() -> Session:
    torch.manual_seed(0)
    return Session.from_pretrained("tiny", max_new_tokens=8)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()[::4, ::4]  # (128, 128, 3), a real photograph shipped with scikit-image
