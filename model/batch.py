"""Collating :class:`ChatInput` conversations into padded tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import InvalidInputError
from .processor import IGNORE_INDEX, ChatInput


@dataclass
class Batch:
    """A padded batch.

    input_ids / attention_mask / labels: ``(B, T)``; ``labels`` is ``None`` for generation.
    answer_start: ``(B,)`` index of each sample's last answer (labels are found from here back).
    pixel_values: ``(ΣN, 3, S, S)`` every tile of every image, image after image, or ``None``.
    tiles_per_image: tiles of each image in that order (thumbnail last within an image).
    region_masks: ``(R, S, S)`` visual prompts on thumbnails; ``region_image``: ``(R,)`` the global
    image index each one is drawn on.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    answer_start: torch.Tensor
    pixel_values: torch.Tensor | None
    tiles_per_image: list[int]
    region_masks: torch.Tensor | None
    region_image: torch.Tensor | None

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device)
        return Batch(
            move(self.input_ids), move(self.attention_mask), move(self.labels), move(self.answer_start),
            move(self.pixel_values), self.tiles_per_image, move(self.region_masks), move(self.region_image),
        )


def collate(inputs: Sequence[ChatInput], pad_id: int, padding_side: str = "right") -> Batch:
    """Pad conversations to one length (right for training, left for generation)."""
    if not inputs:
        raise InvalidInputError("collate: expected at least one conversation, got none")
    if padding_side not in ("left", "right"):
        raise InvalidInputError(f"padding_side: expected 'left' or 'right', got {padding_side!r}")
    length = max(len(x.input_ids) for x in inputs)
    with_labels = all(x.labels is not None for x in inputs)
    ids, mask, labels, starts = [], [], [], []
    for x in inputs:
        pad = length - len(x.input_ids)
        left = pad if padding_side == "left" else 0
        right = pad - left
        ids.append([pad_id] * left + x.input_ids + [pad_id] * right)
        mask.append([0] * left + [1] * len(x.input_ids) + [0] * right)
        if with_labels:
            labels.append([IGNORE_INDEX] * left + list(x.labels) + [IGNORE_INDEX] * right)
        starts.append(x.answer_start + left)
    tiles, counts, region_masks, region_image = [], [], [], []
    for x in inputs:
        offset = len(counts)
        for image in x.images:
            tiles.append(image.pixel_values)
            counts.append(image.pixel_values.shape[0])
        for region in x.regions:
            region_masks.append(region.mask)
            region_image.append(offset + region.image_index)
    return Batch(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long) if with_labels else None,
        answer_start=torch.tensor(starts, dtype=torch.long),
        pixel_values=torch.cat(tiles) if tiles else None,
        tiles_per_image=counts,
        region_masks=torch.stack(region_masks) if region_masks else None,
        region_image=torch.tensor(region_image, dtype=torch.long) if region_image else None,
    )
