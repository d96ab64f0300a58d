"""The vision path: CLIP ViT tower and the ``vl_bridge`` MLP into the LLM's width."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from .config import VisionConfig


def build_vision_tower(config: VisionConfig) -> CLIPVisionModel:
    """``CLIPVisionModel`` with the configured sizes (ViT-L/14-336 for ``7b``), random weights."""
    clip_config = CLIPVisionConfig(
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
    )
    return CLIPVisionModel(clip_config)


def build_bridge(vision_width: int, llm_width: int) -> nn.Sequential:
    """``vl_bridge``: Linear(vision→LLM), GELU, Linear(LLM→LLM). Keys ``vl_bridge.0`` and ``vl_bridge.2``."""
    return nn.Sequential(nn.Linear(vision_width, llm_width), nn.GELU(), nn.Linear(llm_width, llm_width))


def run_vision_tower(tower: CLIPVisionModel, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All hidden states of the tower for tiles ``(N, 3, S, S)``: a tuple of ``(N, 1 + P, C)``."""
    dtype = next(tower.parameters()).dtype
    output = tower(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
    return output.hidden_states


def patch_features(hidden_states: tuple[torch.Tensor, ...], select_layer: int) -> torch.Tensor:
    """Features of layer ``select_layer`` with the CLS token dropped: ``(N, P, C)``."""
    return hidden_states[select_layer][:, 1:]
