"""Small building blocks shared by the decoders."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``layers.0 … layers.{n-1}`` Linear layers with ReLU between (DETR's prediction head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.layers) - 1:
                x = F.relu(x)
        return x


class ConvNorm(nn.Conv2d):
    """A conv whose GroupNorm is a child named ``norm`` (detectron2's layout: keys ``weight``, ``norm.*``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(32 if out_channels % 32 == 0 else 8, out_channels)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(super().forward(x))
        return F.relu(x) if self.relu else x


def contrastive_logits(raw: torch.Tensor, d_model: int, scaled: bool, bias: torch.Tensor | None) -> torch.Tensor:
    """The class logit from a raw query·text dot product: the official ``q·t``, or ``q·t/√d + b``.

    Unscaled logits start huge when training from scratch (DESIGN §7: first loss ~260); the scaled
    form with a bias starting at −4.6 (prior 0.01) trains. Official weights use the raw form.
    """
    if scaled:
        raw = raw / d_model ** 0.5
    return raw if bias is None else raw + bias


class Float32DeformableSampling(nn.Module):
    """The sampling core of multi-scale deformable attention, computed in float32 whatever the dtype.

    Stands in for transformers' ``MultiScaleDeformableAttention`` (same arguments, no parameters) in
    Grounding DINO and UniPose. Why float32:

    - PyTorch's CPU ``grid_sample`` returns NaN and huge values for bfloat16 inputs with the strides
      these layers give it (torch 2.13), which left every bfloat16 detection on CPU empty;
    - the official Deformable-DETR / Grounding DINO CUDA op runs in float32 and casts half inputs up,
      so the bilinear weights and the sums over points and levels are float32 there too. (The
      locations arrive already rounded: transformers computes them in the model's dtype.)
    """

    def forward(self, value: torch.Tensor, value_spatial_shapes: torch.Tensor,
                value_spatial_shapes_list: list[tuple[int, int]], level_start_index: torch.Tensor,
                sampling_locations: torch.Tensor, attention_weights: torch.Tensor, im2col_step: int | None = None
                ) -> torch.Tensor:
        """value ``(B, S, heads, c)`` over all levels' pixels; sampling_locations
        ``(B, Q, heads, levels, points, 2)`` in [0, 1]; attention_weights ``(B, Q, heads, levels, points)``
        → ``(B, Q, heads·c)`` in ``value``'s dtype."""
        batch, _, heads, channels = value.shape
        _, queries, _, levels, points, _ = sampling_locations.shape
        grids = sampling_locations.float() * 2 - 1  # grid_sample's [-1, 1]
        sampled, start = [], 0
        for level, (height, width) in enumerate(value_spatial_shapes_list):
            level_value = value[:, start:start + height * width].float()  # (B, HW, heads, c)
            start += height * width
            level_value = level_value.permute(0, 2, 3, 1).reshape(batch * heads, channels, height, width).contiguous()
            level_grid = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, queries, points, 2)
            sampled.append(F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros",
                                         align_corners=False))  # (B·heads, c, Q, points)
        weights = attention_weights.float().transpose(1, 2).reshape(batch * heads, 1, queries, levels, points)
        mixed = (torch.stack(sampled, dim=3) * weights).sum((-1, -2))  # (B·heads, c, Q)
        return mixed.view(batch, heads * channels, queries).transpose(1, 2).to(value.dtype)


def sample_deformable_in_float32(module: nn.Module) -> nn.Module:
    """Give every deformable-attention layer inside ``module`` :class:`Float32DeformableSampling`."""
    from transformers.models.grounding_dino.modeling_grounding_dino import (
        GroundingDinoMultiscaleDeformableAttention,
    )

    for layer in module.modules():
        if isinstance(layer, GroundingDinoMultiscaleDeformableAttention):
            layer.attn = Float32DeformableSampling()
    return module
