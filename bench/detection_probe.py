"""What soft suppression of repeats does to detection and pose: COCO AP and what a user sees, per decay.

The detector (DINO-style, one score per query and class) may say one object twice: the same box
under two classes ("green hexagon" and "green triangle"), or two queries on one object. COCO AP
counts every repeat as a false positive of its class. The detection config's ``duplicate_decay``
keeps that share of a repeat's score (:func:`~visionllm2.model.decoders.detection_post.soften_duplicates`:
class-agnostic, box IoU above ``duplicate_iou``). This probe detects each held-out sample once,
with nothing softened, then softens the same detections at each decay and prints:

- bbox AP50 and AP (pycocotools, every detection above 0.01, as ``visionllm2 eval`` ranks them);
- detections per picture above the model's display threshold, and how many of those are repeats
  (a box at IoU > 0.5 with a higher-scoring one): what ``session.detect`` shows.

The pose decoder (UniPose-style) repeats figures the same way; a second table gives its OKS AP50,
figures shown and repeats per decay (its config's own ``duplicate_decay``). A third asks how far
grounding is from right: how often the true box (IoU ≥ 0.5) is the
``[GRD]`` group's best query, as ``session.ground`` answers, or among its best 2, 3 or 5.

Run: ``python bench/detection_probe.py [--model shapes] [--samples 300] [--first 1000] [--decay 1,0.5,0]
[--pose-samples 200] [--ground-samples 300]``.
``visionllm2 eval`` scores held-out indices from 0, so pick a decay on others and confirm it there.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from visionllm2.model.data.tasks import ShapesWorld
from visionllm2.model.decoders.detection_eval import CocoEvaluator
from visionllm2.model.decoders.detection_post import boxes_to_pixels, soften_duplicates
from visionllm2.model.decoders.pose_eval import PoseEvaluator
from visionllm2.recipes.evaluate import all_detections, box_iou
from visionllm2.sdk import Session


@contextmanager
def nothing_softened(model):
    """The detection and pose decoders returning every instance ≥ 0.01 (as `eval` ranks them), none softened."""
    configs = [c for c in (model.config.detection, model.config.pose) if c is not None]
    saved = [c.duplicate_decay for c in configs]
    for config in configs:
        config.duplicate_decay = 1.0
    try:
        with all_detections(model):
            yield
    finally:
        for config, decay in zip(configs, saved):
            config.duplicate_decay = decay


def detect_once(session: Session, samples) -> list[tuple]:
    """Each sample's (picture size, true boxes, true labels, boxes, scores, labels), nothing softened."""
    rows = []
    with nothing_softened(session.model):
        for sample in samples:
            session.reset()
            asked, truth = sample.meta["asked"], sample.targets["gdino"]
            boxes = session.detect(asked, image=sample.images[0]).boxes
            rows.append((sample.images[0].size, truth.boxes, [asked[i] for i in truth.labels.tolist()],
                         boxes.xyxy, boxes.scores, list(boxes.labels)))
    return rows


def shown_and_repeats(xyxy: np.ndarray, scores: np.ndarray, shown: float) -> tuple[int, int]:
    """Boxes at or above the display threshold ``shown``, and how many of them overlap a higher-scoring
    shown one at IoU > 0.5."""
    order = np.argsort(-scores, kind="stable")
    visible = xyxy[order[: int((scores >= shown).sum())]]
    return len(visible), sum(any(box_iou(visible[k], visible[j]) > 0.5 for j in range(k)) for k in range(1, len(visible)))


def softened(rows: list[tuple], decay: float, iou: float, shown: float) -> dict[str, float]:
    evaluator, per_picture, repeated = CocoEvaluator(("bbox",)), [], []
    for size, true_boxes, true_labels, xyxy, scores, labels in rows:
        new = soften_duplicates(torch.from_numpy(xyxy), torch.from_numpy(scores), iou, decay).numpy()
        order = np.argsort(-new, kind="stable")
        xyxy, new, labels = xyxy[order], new[order], [labels[k] for k in order]
        evaluator.add(size, true_boxes, true_labels, xyxy, new, labels)
        count, repeat = shown_and_repeats(xyxy, new, shown)
        per_picture.append(count)
        repeated.append(repeat)
    metrics = evaluator.compute()
    return {"AP50": metrics["bbox_AP50"], "AP": metrics["bbox_AP"], "shown": float(np.mean(per_picture)),
            "repeats": float(np.mean(repeated))}


def pose_once(session: Session, samples) -> list[tuple]:
    """Each figure scene's (sample, boxes, keypoints, scores), nothing softened, every instance ≥ 0.01."""
    rows = []
    with nothing_softened(session.model):
        for sample in samples:
            session.reset()
            poses = session.pose([sample.meta["kind"]], keypoints=sample.meta["keypoint_names"], image=sample.images[0]).poses
            rows.append((sample, poses.boxes, poses.keypoints, poses.scores))
    return rows


def pose_softened(rows: list[tuple], decay: float, iou: float, shown: float) -> dict[str, float]:
    by_kind: dict[str, PoseEvaluator] = {}  # OKS AP is per figure kind, as `visionllm2 eval` scores it
    per_picture, repeated = [], []
    for sample, boxes, keypoints, scores in rows:
        new = soften_duplicates(torch.from_numpy(boxes), torch.from_numpy(scores), iou, decay).numpy()
        kind, truth = sample.meta["kind"], sample.targets["unipose"]
        by_kind.setdefault(kind, PoseEvaluator(sample.meta["keypoint_names"])).add(
            sample.images[0].size, truth.boxes, truth.keypoints, [kind] * len(truth.boxes),
            boxes, keypoints, new, [kind] * len(boxes))
        count, repeat = shown_and_repeats(boxes, new, shown)
        per_picture.append(count)
        repeated.append(repeat)
    return {"AP50": float(np.mean([e.compute()["keypoints_AP50"] for e in by_kind.values()])),
            "shown": float(np.mean(per_picture)), "repeats": float(np.mean(repeated))}


def grounding_ranks(session: Session, samples, ranks: Sequence[int]) -> dict[int, float]:
    """Share of expressions whose true box is among the ``[GRD]`` group's best k queries, per k."""
    decoder, captured = session.model.decoders()["gdino"], []
    run = decoder.run

    def recording(inputs, text, group_mask):  # the raw per-query outputs the prediction is cut from
        raw = run(inputs, text, group_mask)
        captured.append((raw, inputs))
        return raw

    decoder.run = recording
    found = dict.fromkeys(ranks, 0)
    try:
        for sample in samples:
            session.reset()
            captured.clear()
            session.ground(sample.meta["expression"], image=sample.images[0])
            raw, inputs = captured[-1]
            order = raw.logits[-1, 0, :, 0].argsort(descending=True)  # one group: the expression
            boxes = boxes_to_pixels(raw.boxes[-1, 0].float(), inputs.original[0])[order].cpu().numpy()
            hits = [box_iou(box, sample.meta["box"]) >= 0.5 for box in boxes[: max(ranks)]]
            for k in ranks:
                found[k] += any(hits[:k])
    finally:
        decoder.run = run
    return {k: found[k] / max(len(samples), 1) for k in ranks}


def decays(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected decays between 0 and 1, comma-separated; got {text!r}")
    return values


def decay_table(title: str, columns: Sequence[str], decays: Sequence[float],
                row: Callable[[float], list[str]]) -> Table:
    """One row per duplicate decay: the decay, then ``row(decay)`` under ``columns``."""
    table = Table(title=title)
    for column in ("decay", *columns):
        table.add_column(column, justify="right")
    for decay in decays:
        table.add_row(f"{decay:g}", *row(decay))
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--first", type=int, default=0,
                        help="first held-out index (eval scores 0 onward: pick settings on others, e.g. 1000)")
    parser.add_argument("--decay", type=decays, default=[1.0, 0.7, 0.5, 0.3, 0.0],
                        help="duplicate decays to compare, comma-separated (1: off, 0: plain NMS)")
    parser.add_argument("--pose-samples", type=int, default=200, help="figure scenes for the pose table (0: none)")
    parser.add_argument("--ground-samples", type=int, default=300, help="grounding samples for the rank table (0: none)")
    args = parser.parse_args(argv)
    session = Session.from_pretrained(args.model)
    config = session.model.config.detection
    world = ShapesWorld(session.processor, "heldout")
    rows = detect_once(session, world.samples_of("detect", args.first, args.samples))
    def detection_row(decay: float) -> list[str]:
        result = softened(rows, decay, config.duplicate_iou, config.score_threshold)
        return [f"{result['AP50']:.3f}", f"{result['AP']:.3f}", f"{result['shown']:.2f}", f"{result['repeats']:.2f}"]

    Console().print(decay_table(
        f"detection, {len(rows)} held-out samples from {args.first}: {args.model} "
        f"(duplicates at box IoU > {config.duplicate_iou}; shipped decay {config.duplicate_decay})",
        ("bbox AP50", "bbox AP", f"shown per picture (≥ {config.score_threshold})", "of them repeats"),
        args.decay, detection_row))
    if args.pose_samples > 0:
        pose = session.model.config.pose
        rows = pose_once(session, world.samples_of("pose", args.first, args.pose_samples))
        figures = np.mean([len(sample.targets["unipose"].boxes) for sample, *_ in rows])

        def pose_row(decay: float) -> list[str]:
            result = pose_softened(rows, decay, pose.duplicate_iou, pose.score_threshold)
            return [f"{result['AP50']:.3f}", f"{result['shown']:.2f}", f"{result['repeats']:.2f}", f"{figures:.2f}"]

        Console().print(decay_table(
            f"pose, {len(rows)} held-out figure scenes from {args.first} (shipped decay {pose.duplicate_decay})",
            ("OKS AP50", f"shown per picture (≥ {pose.score_threshold})", "of them repeats", "true figures per picture"),
            args.decay, pose_row))
    if args.ground_samples > 0:
        grounding = world.samples_of("ground", args.first, args.ground_samples)
        ranks = grounding_ranks(session, grounding, (1, 2, 3, 5))
        table = Table(title=f"grounding, {len(grounding)} held-out expressions from {args.first}: the true box among "
                            "the [GRD] group's best k queries")
        for k in ranks:
            table.add_column(f"k = {k}" + (" (the answer)" if k == 1 else ""), justify="right")
        table.add_row(*(f"{share:.3f}" for share in ranks.values()))
        Console().print(table)


if __name__ == "__main__":
    main()
