"""The vision path: CLIP ViT tower and the ``vl_bridge`` MLP into the LLM's width."""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from .config import VisionConfig
from .errors import CheckpointError


class ConvStem(nn.Sequential):
    """Early convolutions in place of CLIP's patch embedding, onto the same grid: ``(N, 3, S, S)`` →
    ``(N, width, S / patch, S / patch)``. A 3 × 3 stride-2 convolution, a 3 × 3 one, then one of half a
    patch's side and stride. A small ViT trained from scratch with the one-layer embedding never learns
    ShapesWorld's shapes, with this stem it does (``bench/tower_learning.py``; Xiao et al. 2021,
    "Early convolutions help transformers see better"). Keys ``patch_embedding.{0,2,4}.*``.
    """

    def __init__(self, width: int, patch: int) -> None:
        if patch % 2:
            raise CheckpointError(f"vision.patch_embedding 'conv_stem': expected an even patch_size, got {patch}")
        super().__init__(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GELU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.GELU(),
                         nn.Conv2d(64, width, patch // 2, stride=patch // 2))

    @property
    def weight(self) -> torch.Tensor:  # CLIP's embeddings cast the pixels to the patch embedding's weight dtype
        return self[-1].weight


def build_vision_tower(config: VisionConfig) -> CLIPVisionModel:
    """``CLIPVisionModel`` with the configured sizes (ViT-L/14-336 for ``7b``), random weights; its
    patch embedding a :class:`ConvStem` when ``config.patch_embedding`` says so."""
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
    tower = CLIPVisionModel(clip_config)
    if config.patch_embedding == "conv_stem":
        tower.embeddings.patch_embedding = ConvStem(config.hidden_size, config.patch_size)
    return tower


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
