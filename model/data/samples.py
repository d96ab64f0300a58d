"""One training example, whatever its source: a conversation, its images, visual prompts and targets.

ShapesWorld's task generator, the COCO loader and the LLaVA loader all produce :class:`Sample`;
the trainer groups samples by :attr:`Sample.decoder` (one decoder's tasks per step, as in the
paper) and turns each into model inputs with the processor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..processor import Message

#: The tasks a sample can teach, and the decoder each one trains (``None``: the LM alone).
TASK_DECODERS: dict[str, str | None] = {
    "chat": None, "detect": "gdino", "ground": "gdino", "segment": "gdino", "interactive": "gdino",
    "pose": "unipose", "generate": "sd", "edit": "ip2p", "count": None,
}
#: Tasks that train the vision tower alone (stage 0, no LLM): their batches form the ``"tower"`` group.
TOWER_TASKS = frozenset({"count"})


@dataclass
class Sample:
    """One conversation to train on.

    messages: Vicuna turns of processor segments (``str`` / ``Special`` / ``ImageSlot`` / ``RegionSlot``);
    the last assistant message is the one whose super-link groups reach the decoder.
    images: RGB pictures the ``ImageSlot`` s point at. regions: ``(image index, bool mask (H, W))`` on
    that image's original pixels, in the order of the ``RegionSlot`` s. targets: decoder name → that
    decoder's target for this sample (``DetectionTarget``, ``PoseTarget``, ``DiffusionTarget``).
    meta: anything the evaluator needs to score an answer (truth boxes, the expected words …).
    """

    task: str
    messages: list[Message]
    images: list[Image.Image] = field(default_factory=list)
    regions: list[tuple[int, np.ndarray]] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASK_DECODERS:
            raise ValueError(f"sample task: expected one of {sorted(TASK_DECODERS)}, got {self.task!r}")

    @property
    def decoder(self) -> str | None:
        """The decoder this sample trains; batches hold one decoder's samples."""
        return TASK_DECODERS[self.task]

    @property
    def group(self) -> str:
        """The trainer's batch group: the decoder's name, ``"lm"`` for text-only samples, ``"tower"``
        for the vision tower's own pre-training (:data:`TOWER_TASKS`)."""
        return group_of(self.task)


def group_of(task: str) -> str:
    return "tower" if task in TOWER_TASKS else TASK_DECODERS[task] or "lm"
