"""Where interactive segmentation goes wrong: the turn it is asked in, and marks that look alike.

On held-out ShapesWorld interactive samples (a point, box, scribble or mask on one or two objects):

1. **mIoU in a first turn and after a detection turn** on the same picture, the way the recipes
   hand boxes on (detect → ``segment(prompts=boxes)``). A model that reads its marks only as the
   first thing in a conversation loses them later.
2. **Two marks, one object.** With two marks on one picture, how often both groups return the same
   object, and how often the two marks' region embeddings are at cosine > 0.9 (a region encoder
   that embeds different marks alike).

Each is measured twice: with each group's answer chosen by the model's score alone, and by score ×
the share of the mark it covers (the detection config's ``mark_agreement``, on when shipped).

Run: ``python bench/interactive_probe.py [--model shapes] [--samples 40] [--first 0]``.
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from visionllm2.model.data.tasks import ShapesWorld
from visionllm2.recipes.evaluate import marks_ious, mask_iou
from visionllm2.sdk import Session
from visionllm2.sdk.prompts import Mask


@contextmanager
def mark_agreement(session: Session, on: bool):
    """The session's detector choosing each mark's answer by score × coverage (on) or score (off)."""
    config = session.model.decoders()["gdino"].config
    before, config.mark_agreement = config.mark_agreement, on
    try:
        yield
    finally:
        config.mark_agreement = before


def marks_miou(session: Session, samples, after_detect: bool) -> float:
    ious = []
    for sample in samples:
        session.reset()
        if after_detect:
            session.detect([sample.meta["objects"][0].name], image=sample.images[0])
        masks = session.segment(prompts=[Mask(m) for _, m in sample.regions],
                                image=None if after_detect else sample.images[0]).masks
        ious += marks_ious(masks, sample.targets["gdino"].masks)  # as `visionllm2 eval` scores them
    return float(np.mean(ious))


def two_marks(session: Session, samples) -> tuple[int, int, float]:
    """(pairs, pairs answered with one object twice, share of pairs whose two region embeddings are
    at cosine > 0.9: marks the LLM can hardly tell apart)."""
    captured = []
    encoder = session.model.region_encoder
    hook = encoder.register_forward_hook(lambda module, inputs, output: captured.append(output.detach()))
    same, cosines = 0, []
    try:
        for sample in samples:
            session.reset()
            captured.clear()
            masks = session.segment(prompts=[Mask(m) for _, m in sample.regions], image=sample.images[0]).masks
            same += len(masks) == 2 and mask_iou(masks.masks[0], masks.masks[1]) > 0.5
            regions = captured[0].float()  # (2, H): the first forward pass holds both marks
            cosines.append(float(torch.cosine_similarity(regions[0], regions[1], 0)))
    finally:
        hook.remove()
    return len(samples), same, float(np.mean(np.array(cosines) > 0.9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--first", type=int, default=0, help="first held-out index (eval scores from 0)")
    args = parser.parse_args()
    session = Session.from_pretrained(args.model)
    world = ShapesWorld(session.processor, "heldout")
    indices = range(args.first, args.first + args.samples)
    samples = [world.sample(index, "interactive") for index in indices]
    pairs = [s for s in (world.sample(index, "interactive") for index in range(args.first, args.first + 3 * args.samples))
             if len(s.regions) == 2][: args.samples]
    table = Table(title=f"interactive segmentation, held out from {args.first}: {args.model}")
    for column in ("measure", "by score alone", "score × mark coverage"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    rows: dict[str, list[str]] = {f"mIoU, first turn ({len(samples)} samples)": [], "mIoU, after a detection turn": [],
                                  f"two marks answered with one object (of {len(pairs)})": []}
    alike = 0.0
    for on in (False, True):
        with mark_agreement(session, on):
            values = [marks_miou(session, samples, False), marks_miou(session, samples, True)]
            _, same, alike = two_marks(session, pairs)
        for row, value in zip(rows.values(), [f"{values[0]:.3f}", f"{values[1]:.3f}", str(same)]):
            row.append(value)
    for name, values in rows.items():
        table.add_row(name, *values)
    table.add_row("two marks' region embeddings at cosine > 0.9", f"{alike:.2f}", f"{alike:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
