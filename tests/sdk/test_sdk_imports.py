"""The public surface of ``visionllm2.sdk``, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

from visionllm2 import sdk
from visionllm2.model import errors


def test_public_names() -> None:
    for name in (
        "Boxes",
        "Masks",
        "Poses",
        "Images",
        "Turn",
        "Point",
        "Box",
        "Scribble",
        "Mask",
        "as_visual_prompt",
    ):
        assert name in sdk.__all__ and hasattr(sdk, name)
    for name in ("VisionLLMError", "InvalidInputError", "InvalidImageError", "InvalidPromptError"):
        assert getattr(sdk, name) is getattr(errors, name)


def test_import_does_not_load_torch_or_supervision() -> None:
    code = "import sys, visionllm2.sdk; print('torch' in sys.modules, 'supervision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_importing_the_recipes_and_measuring_iou_prints_no_opencv_warning() -> None:
    """supervision warns once when OpenCV is absent; we do not depend on OpenCV, so users must not
    see that warning from any of our modules (it once leaked through ``recipes.evaluate``)."""
    code = ("import numpy as np, visionllm2.recipes.cli, visionllm2.recipes.evaluate as e; "
            "print(e.box_iou(np.array([0, 0, 2, 2]), np.array([0, 0, 2, 2])))")
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1.0"] and "OpenCV" not in done.stderr, done.stderr
