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
