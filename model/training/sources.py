"""Where a training step's samples come from: ShapesWorld, or the user's COCO / LLaVA files.

A source answers ``batch(step, batch_size, rank, world_size)`` with the samples of one step, all
for the same decoder (the paper groups one decoder's tasks per step). The answer depends only on
the step and the seed, so a resumed run sees exactly the data an uninterrupted one would, and
every process of a distributed run gets its own disjoint share.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ..data.samples import Sample, group_of
from ..data.tasks import ShapesWorld
from ..errors import InvalidInputError
from ..processor import Processor


class SampleSource(Protocol):
    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[Sample]: ...


class ShapesSource:
    """An endless ShapesWorld stream; each step draws a decoder group, then its tasks by weight."""

    def __init__(self, processor: Processor, tasks: Mapping[str, float], domains: Sequence[str] | Mapping[str, float] = (),
                 seed: int = 0, image_size: int = 128, domain_rate: float = 0.25,
                 generate_history_rate: float = 0.0) -> None:
        packs = dict(domains) if isinstance(domains, Mapping) else tuple(domains)
        self.world = ShapesWorld(processor, "train", dict(tasks), packs, domain_rate, image_size,
                                 generate_history_rate)
        self.seed = seed
        weights: dict[str, float] = defaultdict(float)
        for task, weight in tasks.items():
            if weight > 0:
                weights[group_of(task)] += weight
        self.groups = sorted(weights)
        self.group_weights = np.array([weights[g] for g in self.groups]) / sum(weights.values())
        self.tasks = {g: [(t, w) for t, w in tasks.items() if w > 0 and group_of(t) == g] for g in self.groups}

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[Sample]:
        rng = np.random.default_rng([self.seed, step])
        group = self.groups[int(rng.choice(len(self.groups), p=self.group_weights))]
        names = [t for t, _ in self.tasks[group]]
        weights = np.array([w for _, w in self.tasks[group]]) / sum(w for _, w in self.tasks[group])
        first = ((self.seed * 1_000_003 + step) * world_size + rank) * batch_size
        return [self.world.sample(first + i, names[int(rng.choice(len(names), p=weights))]) for i in range(batch_size)]


class ListSource:
    """A finite list of samples (COCO / LLaVA files), drawn with replacement, grouped by decoder."""

    def __init__(self, samples: Sequence[Sample], seed: int = 0) -> None:
        if not samples:
            raise InvalidInputError("training data: expected at least one sample, got none")
        self.by_group: dict[str, list[Sample]] = defaultdict(list)
        for sample in samples:
            self.by_group[sample.group].append(sample)
        self.groups = sorted(self.by_group)
        sizes = np.array([len(self.by_group[g]) for g in self.groups], dtype=np.float64)
        self.group_weights = sizes / sizes.sum()
        self.seed = seed

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[Sample]:
        rng = np.random.default_rng([self.seed, step, rank])
        group = self.by_group[self.groups[int(rng.choice(len(self.groups), p=self.group_weights))]]
        return [group[int(i)] for i in rng.integers(0, len(group), batch_size)]


def build_source(data: Sequence[str], processor: Processor, tasks: Mapping[str, float],
                 domains: Sequence[str] | Mapping[str, float],
                 seed: int, image_root: str | None = None, domain_rate: float = 0.25,
                 generate_history_rate: float = 0.0) -> SampleSource:
    """``["shapes"]`` → ShapesWorld; otherwise COCO instance / keypoint JSON and LLaVA JSON files.

    A file is read as COCO when it has ``"annotations"`` and ``"images"`` (keypoints → pose samples,
    segmentations → segment samples, else detect), else as LLaVA conversations.
    """
    if list(data) == ["shapes"]:
        return ShapesSource(processor, tasks, domains, seed, domain_rate=domain_rate,
                            generate_history_rate=generate_history_rate)
    import json

    from ..data.coco import load_coco_samples, load_llava_samples

    samples: list[Sample] = []
    for item in data:
        path = Path(item)
        if not path.is_file():
            raise InvalidInputError(f"training data: expected 'shapes' or a COCO / LLaVA JSON file, got {item!r} "
                                    "(no such file)")
        root = image_root or str(path.parent)
        content = json.loads(path.read_text())
        if isinstance(content, dict) and "annotations" in content and "images" in content:
            annotations = content["annotations"]
            task = ("pose" if any("keypoints" in a for a in annotations)
                    else "segment" if any(a.get("segmentation") for a in annotations) else "detect")
            samples += load_coco_samples(path, root, task=task, seed=seed, processor=processor)
        else:
            samples += load_llava_samples(path, root)
    return ListSource(samples, seed)
