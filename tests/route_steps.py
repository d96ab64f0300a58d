"""Small shared pieces for tests that exercise every route: the tiny preset with both denoisers, and
one training step of each route on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from visionllm2.model.config import GenerationConfig, VisionLLMv2Config
from visionllm2.model.data.tasks import ShapesWorld
from visionllm2.model.processor import Processor
from visionllm2.model.training.trainer import samples_to_inputs

ROUTE_TASKS = ("detect", "segment", "ground", "interactive", "pose", "chat", "generate", "edit")


def tiny_config_with_denoisers(latent_generation: bool = False, latent_editing: bool = False) -> VisionLLMv2Config:
    """The tiny preset with a ``[GEN]`` and an ``[EDIT]`` denoiser (in latent space: a real VAE too)."""
    config = VisionLLMv2Config.preset("tiny")
    config.generation = GenerationConfig.tiny(latent=latent_generation)
    config.editing = GenerationConfig.tiny(edit=True, latent=latent_editing)
    return config


def each_route_step(model: Any, place: Callable[[Any, dict], tuple[Any, dict]] = lambda b, t: (b, t)
                    ) -> Iterator[tuple[str, Any]]:
    """Forward and backward on two ShapesWorld samples of each route; yields ``(task, output)`` with the
    gradients still set, then clears them. ``place`` moves a batch and its targets where the model is."""
    processor = Processor(model.config, model.tokenizer)
    for task in ROUTE_TASKS:
        world = ShapesWorld(processor, tasks={task: 1.0})
        batch, images, targets = samples_to_inputs(processor, [world.sample(i) for i in range(2)], model.tokenizer.pad_id)
        batch, targets = place(batch, targets)
        output = model(batch, images, targets)
        output.loss.backward()
        yield task, output
        model.zero_grad(set_to_none=True)


def finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())
