"""What a Session stores — its images and its exchanges — and a turn planned but not yet run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from visionllm2.model.processor import Segment


@dataclass(frozen=True)
class ImageRef:
    """A session image in a stored message; becomes an ``ImageSlot`` when the conversation is built."""

    image_id: str


@dataclass
class SessionImage:
    """An image the session holds: the picture, its tiles, and (once encoded) its bridged features."""

    image_id: str
    picture: Any
    tiles: Any
    features: torch.Tensor | None = None


@dataclass
class Exchange:
    """One stored turn: the user's segments, its visual prompts, and the answer's token ids."""

    user: list[Segment | ImageRef]
    regions: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (image id, bool mask H×W)
    answer: tuple[int, ...] = ()


@dataclass
class PlannedTurn:
    """A turn checked and built but not yet run (``Session._plan``): the conversation with it, its
    features, and what reading the answer needs. ``answer_given``: a verb's (one prefill) or the
    model's to generate."""

    text: str
    exchange: Exchange
    staged: dict[str, SessionImage]
    image_id: str | None
    picture: Any
    chat: Any
    features: torch.Tensor | None
    answer_given: bool
    labels: list[str] | None
    marks: np.ndarray | None
    shows_image: bool
    timings: dict[str, float]
    options: dict[str, Any]
    interactive: bool
