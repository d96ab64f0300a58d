"""Training: the paper's three stages on ShapesWorld or the user's own COCO / LLaVA data.

``visionllm2 train --preset shapes --stage 1|2|3`` runs :class:`Trainer` with a
:class:`TrainConfig`, as a plain process on a CPU or under ``accelerate launch`` on GPUs.
"""

from .config import TrainConfig
from .trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "train"]
