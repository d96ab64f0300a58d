"""Region encoder: a visual prompt (binary mask on the thumbnail) → one LLM embedding.

DESIGN §2. The CLIP-normalised thumbnail ``(3, S, S)`` and the mask ``(1, S, S)`` are stacked to 4
channels; a conv stem downsamples ×14 to the ViT's patch grid and width. For each of the ViT's
last three hidden states, the image feature map is added, up to ``max_points`` points inside the
mask are sampled with ``grid_sample`` and averaged, and ``up_dim`` projects to the LLM width. The
three levels are averaged: that vector replaces the ``<region>`` token's embedding. With
``relative_to_image`` (small from-scratch models) each level's map first loses its picture's mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import RegionConfig
from .errors import InvalidPromptError


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32 whatever the dtype: in float16 the squares overflow once |x - mean| > 256.
        wide = x.float()
        mean = wide.mean(1, keepdim=True)
        var = (wide - mean).pow(2).mean(1, keepdim=True)
        wide = (wide - mean) / torch.sqrt(var + self.eps)
        return (self.weight.float()[:, None, None] * wide + self.bias.float()[:, None, None]).to(x.dtype)


class RegionEncoder(nn.Module):
    """``mask_embedding`` (conv stem, keys 0/1/3/4/6) and ``up_dim``, as in the released checkpoint."""

    def __init__(self, config: RegionConfig, vision_width: int, llm_width: int) -> None:
        super().__init__()
        c1, c2 = config.stem_channels
        self.max_points = config.max_points
        self.num_levels = config.num_levels
        self.relative_to_image = config.relative_to_image
        self.mask_embedding = nn.Sequential(
            nn.Conv2d(4, c1, kernel_size=7, stride=7),   # ×7
            LayerNorm2d(c1),
            nn.GELU(),
            nn.Conv2d(c1, c2, kernel_size=2, stride=2),  # ×2 → ×14, the ViT's patch grid
            LayerNorm2d(c2),
            nn.GELU(),
            nn.Conv2d(c2, vision_width, kernel_size=1),
        )
        self.up_dim = nn.Linear(vision_width, llm_width)

    def forward(self, thumbnails: torch.Tensor, masks: torch.Tensor,
                vit_hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Embed ``R`` regions.

        thumbnails: ``(R, 3, S, S)`` CLIP-normalised thumbnail of each region's image.
        masks: ``(R, S, S)`` bool/float masks on the thumbnail.
        vit_hidden_states: the tower's hidden states for those thumbnails, each ``(R, 1 + P, C)``.
        Returns ``(R, llm_width)``.
        """
        masks = masks.to(thumbnails.dtype)
        areas = (masks > 0).flatten(1).sum(1)
        if bool((areas == 0).any()):
            empty = (areas == 0).nonzero().flatten().tolist()
            raise InvalidPromptError(
                f"region masks {empty} are empty after resizing to the {masks.shape[-1]}² thumbnail; "
                "expected at least one pixel inside each visual prompt (use a larger point radius or box)"
            )
        stem = self.mask_embedding(torch.cat([thumbnails, masks[:, None]], dim=1))  # (R, C, G, G)
        grid = stem.shape[-1]
        points = self._sample_points(masks)  # (R, K, 2) in [-1, 1], K ≤ max_points
        pooled = []
        for hidden in vit_hidden_states[-self.num_levels:]:
            features = hidden[:, 1:].transpose(1, 2).reshape(stem.shape[0], -1, grid, grid)  # (R, C, G, G)
            if self.relative_to_image:  # what sets this region apart from its picture
                features = features - features.mean((2, 3), keepdim=True)
            # Sampled in float32: in bfloat16 a pixel centre past 128 rounds to its neighbour's.
            sampled = F.grid_sample((stem + features).float(), points[:, :, None, :], align_corners=False)  # (R, C, K, 1)
            valid = (points[..., 0] > -2).float()  # padded points sit at -3 and are ignored
            mean = (sampled[..., 0] * valid[:, None]).sum(-1) / valid.sum(-1, keepdim=True)  # (R, C)
            pooled.append(self.up_dim(mean.to(stem.dtype)))
        return torch.stack(pooled).mean(0)  # (R, llm_width)

    def _sample_points(self, masks: torch.Tensor) -> torch.Tensor:
        """Pixel centres inside each mask as ``grid_sample`` coordinates, float32 ``(R, K, 2)``.

        At most ``max_points`` a mask: evenly strided in eval (deterministic), random in training.
        Masks with fewer points are padded with ``-3`` (outside the grid) and masked out.
        """
        size = masks.shape[-1]
        chosen = []
        for mask in masks:
            ys, xs = torch.nonzero(mask > 0, as_tuple=True)
            if len(xs) > self.max_points:
                if self.training:
                    keep = torch.randperm(len(xs), device=xs.device)[: self.max_points]
                else:
                    keep = torch.linspace(0, len(xs) - 1, self.max_points, device=xs.device).long()
                ys, xs = ys[keep], xs[keep]
            coords = torch.stack([xs, ys], dim=-1).float()
            chosen.append((coords + 0.5) / size * 2 - 1)
        count = max(len(c) for c in chosen)
        out = masks.new_full((len(chosen), count, 2), -3.0, dtype=torch.float32)
        for index, coords in enumerate(chosen):
            out[index, : len(coords)] = coords
        return out
