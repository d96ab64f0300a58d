import sys
from pathlib import Path

# Lets tests import the small shared fixtures module beside them (shapes_fixture).
sys.path.insert(0, str(Path(__file__).parent))


import pytest
import torch

from visionllm2.model.training.trainer import denormals_flushed


@pytest.fixture(autouse=True)
def flush_denormals():
    """Freshly initialised detectors produce denormal floats that slow CPU kernels up to 60×
    (measured: 15 s training steps become 0.25 s), in the model tests' forward passes too. Flushing
    them to zero changes no result that matters; it is undone after each test because hypothesis
    refuses to run with it set."""
    with denormals_flushed(torch.device("cpu")):
        yield


@pytest.fixture(scope="session")
def official(tmp_path_factory) -> Path:
    """A folder holding the official 7B manifests as plain JSON (see official_manifests)."""
    from official_manifests import official_folder

    return official_folder(tmp_path_factory.mktemp("official"))
