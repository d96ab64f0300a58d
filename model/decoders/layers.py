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
