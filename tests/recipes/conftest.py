"""Sessions and inputs for the recipe tests: the tiny preset (random weights, typed results)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from visionllm2.model.config import GenerationConfig, VisionLLMv2Config
from visionllm2.model.data.domains import render_domain
from visionllm2.model.decoders import build_decoders
from visionllm2.model.tokenizer import Tokenizer
from visionllm2.model.visionllm import VisionLLMv2
from visionllm2.sdk import Session


def _model(edit: bool) -> VisionLLMv2:
    """The tiny preset keeping its best 3 detections at any score (random weights score ~0.03), so
    that every detect hands boxes on to the next turn; with an [EDIT] decoder when ``edit``."""
    torch.manual_seed(0)
    config = VisionLLMv2Config.preset("tiny")
    config = replace(config, detection=replace(config.detection, score_threshold=0.0, max_detections=3))
    if edit:
        config.editing = GenerationConfig.tiny(edit=True)
    return VisionLLMv2.from_config(config, build_decoders(config), Tokenizer.from_spec(config.llm.tokenizer)).eval()


@pytest.fixture(scope="session")
def tiny_session() -> Session:
    """``Session.from_pretrained("tiny")`` as users get it: detections below 0.3 are dropped."""
    torch.manual_seed(0)
    return Session.from_pretrained("tiny", max_new_tokens=8)


@pytest.fixture(scope="session")
def eager_session() -> Session:
    """Detects 3 objects an image; no edit decoder."""
    return Session(_model(edit=False), max_new_tokens=8)


@pytest.fixture(scope="session")
def edit_session() -> Session:
    """Detects 3 objects an image, and can edit."""
    return Session(_model(edit=True), max_new_tokens=8)


@pytest.fixture()
def parts_dir(tmp_path) -> Path:
    """Two industrial part images and one file that is not an image."""
    folder = tmp_path / "parts"
    folder.mkdir()
    for seed in (1, 2):
        render_domain("industrial", seed).image.save(folder / f"part{seed}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


@pytest.fixture()
def scans_dir(tmp_path) -> Path:
    """A 16-bit scan, an 8-bit RGB scan and a broken file."""
    folder = tmp_path / "scans"
    folder.mkdir()
    render_domain("medical", 1, bit_depth=16).image.save(folder / "slice16.png")
    render_domain("medical", 2).image.save(folder / "slice8.png")
    (folder / "zz_broken.png").write_bytes(b"")
    return folder
