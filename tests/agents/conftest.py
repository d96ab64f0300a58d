"""Fixtures for the agents tests: a tiny random model with every decoder, scenes, and a scripted chat model."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from pydantic import Field

from visionllm2.agents import VisionToolkit
from visionllm2.model.config import GenerationConfig, VisionLLMv2Config
from visionllm2.model.data.shapes import render_scene
from visionllm2.model.decoders import build_decoders
from visionllm2.model.tokenizer import Tokenizer
from visionllm2.model.visionllm import VisionLLMv2
from visionllm2.sdk import Session

FAST_DIFFUSION = {"num_inference_steps": 2}


class ScriptedChatModel(FakeMessagesListChatModel):
    """langchain-core's fake chat model, replaying scripted AIMessages, with tools bound and inputs recorded.

    ``bind_tools`` returns the model itself (the fake has no tool-calling API to configure); ``bound``
    holds the tools and ``seen`` the messages of every call, so tests can check what the model was fed.
    """

    bound: list[Any] = Field(default_factory=list)
    seen: list[list[Any]] = Field(default_factory=list)

    def bind_tools(self, tools, **kwargs):
        self.bound = list(tools)
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


@pytest.fixture(scope="session")
def full_model() -> VisionLLMv2:
    """The tiny preset with [GEN] and [EDIT] decoders; detections kept at any score (random weights
    score ~0.01), at most 3, so that every detect hands boxes on to the next step."""
    torch.manual_seed(0)
    config = VisionLLMv2Config.preset("tiny")
    config = replace(config, detection=replace(config.detection, score_threshold=0.0, max_detections=3),
                     generation=GenerationConfig.tiny(), editing=GenerationConfig.tiny(edit=True))
    return VisionLLMv2.from_config(config, build_decoders(config), Tokenizer.from_spec(config.llm.tokenizer)).eval()


@pytest.fixture()
def session(full_model) -> Session:
    return Session(full_model, max_new_tokens=8)


@pytest.fixture(scope="session")
def scene():
    return render_scene(3)  # a seeded ShapesWorld picture, 128×128


@pytest.fixture()
def workdir(tmp_path, scene):
    """An allowed directory holding scene.png."""
    folder = tmp_path / "work"
    folder.mkdir()
    scene.image.save(folder / "scene.png")
    return folder


@pytest.fixture()
def toolkit(session, workdir) -> VisionToolkit:
    return VisionToolkit(session, allowed_dirs=[workdir], diffusion=FAST_DIFFUSION)


@pytest.fixture()
def scripted() -> type[ScriptedChatModel]:
    return ScriptedChatModel
