"""Stage 0's vision-tower pre-training: the tower learns to count what is in a picture, without the LLM.

Not in the official recipe, whose CLIP tower comes pre-trained. A small tower trained from scratch
through the LM loss alone (one answer word a sample) learns colour but not shape, so the ``shapes``
model's VQA answered from priors. Told directly how many of each shape, colour and coloured shape a
picture holds (``count`` samples, :data:`~visionllm2.model.data.tasks.COUNTED`), a tower with a conv
stem learns them in minutes (``bench/tower_learning.py``). The :class:`CountHead` exists only for
training: the stage saves the tower, and stage 1 or 2 teaches the bridge and the LLM to read it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.samples import Sample
from ..data.shapes import COLOURS, SHAPES
from ..data.tasks import COUNTED, MOST_COUNTED
from ..processor import Processor
from ..vision import patch_features, run_vision_tower
from ..visionllm import VisionLLMv2


class CountHead(nn.Module):
    """One learned query per counted thing attends over the tower's patch features and reads its
    count class: ``(N, P, C)`` → logits ``(N, things, MOST_COUNTED + 1)``."""

    def __init__(self, width: int, things: int = len(COUNTED), heads: int = 4) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(things, width) * 0.02)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.classify = nn.Linear(width, MOST_COUNTED + 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        queries = self.queries.to(tokens.dtype).expand(len(tokens), -1, -1)  # (N, things, C)
        read, _ = self.attention(queries, tokens, tokens)
        return self.classify(self.norm(read))


def tower_tiles(processor: Processor, samples: Sequence[Sample]) -> torch.Tensor:
    """Each sample's picture as the tower sees it when there is one tile: its whole-image tile ``(N, 3, S, S)``."""
    return torch.stack([processor.process_image(sample.images[0]).pixel_values[-1] for sample in samples])


def count_logits(model: VisionLLMv2, head: CountHead, tiles: torch.Tensor) -> torch.Tensor:
    """The head's count logits over the tower's features of the bridge's layer: ``(N, things, classes)``."""
    features = patch_features(run_vision_tower(model.vis_encoder, tiles), model.config.vision.select_layer)
    return head(features)


#: The counted things by kind, as slices of :data:`COUNTED`: the log's accuracy per kind (a pair is
#: mostly absent, so the share of all counts read right says little about the shapes).
COUNTED_KINDS = {"shapes": slice(0, len(SHAPES)), "colours": slice(len(SHAPES), len(SHAPES) + len(COLOURS)),
                 "pairs": slice(len(SHAPES) + len(COLOURS), len(COUNTED))}


def count_loss(model: VisionLLMv2, head: CountHead, processor: Processor, samples: Sequence[Sample]
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of every counted thing of every sample, and the share read right of each kind
    of :data:`COUNTED_KINDS` (``"shapes"``: each shape's count) and of all (``"all"``)."""
    device = head.queries.device
    tiles = tower_tiles(processor, samples).to(device)
    truth = torch.tensor([sample.targets["tower"] for sample in samples], device=device)  # (N, things)
    logits = count_logits(model, head, tiles)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), truth.flatten())
    right = (logits.argmax(-1) == truth).float()  # (N, things)
    accuracy = {kind: right[:, part].mean().item() for kind, part in COUNTED_KINDS.items()}
    return loss, {"all": right.mean().item(), **accuracy}
