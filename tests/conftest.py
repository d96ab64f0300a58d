"""Shared fixtures: the tiny preset, its tokenizer and processor, and small images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionllm2.model.config import VisionLLMv2Config
from visionllm2.model.processor import Processor
from visionllm2.model.tokenizer import Tokenizer
from visionllm2.model.visionllm import VisionLLMv2

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_config() -> VisionLLMv2Config:
    return VisionLLMv2Config.preset("tiny")


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.builtin()


@pytest.fixture(scope="session")
def processor(tiny_config, tokenizer) -> Processor:
    return Processor(tiny_config, tokenizer)


@pytest.fixture()
def tiny_model(tiny_config, tokenizer) -> VisionLLMv2:
    torch.manual_seed(0)
    return VisionLLMv2.from_config(tiny_config, decoders={}, tokenizer=tokenizer).eval()


@pytest.fixture(scope="session")
def rgb_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(90, 140, 3), dtype=np.uint8)
