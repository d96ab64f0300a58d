"""``visionllm2 eval``: score a model on held-out ShapesWorld through the Session, route by route.

Every number comes from the same calls a user makes (the Session's verbs ``detect``, ``segment``,
``ground``, ``pose``, ``ask``, ``generate``, ``edit``, run over the samples by ``BatchPredictor``),
one fresh conversation per sample, so it measures the product, not a training shortcut:

- detection / segmentation: COCO bbox and mask AP (pycocotools) over the asked classes, ranking every
  detection above 0.01 as COCO does (the session's display threshold is restored after);
- grounding: accuracy of the returned box at IoU ≥ 0.5;
- interactive segmentation: mean mask IoU of the answer to each visual prompt, overall and per
  kind of prompt (``point_mIoU``…);
- pose: COCO keypoint AP (OKS) per figure kind;
- VQA: exact match of the normalised answer, overall and per kind of question (``count_exact_match``…);
- generation / editing: a classical checker of the asked colour, shape and place (an edit is judged
  on the object it names, found near that object's place in the truth).

Each headline metric comes with its standard error (``<metric>_stderr``), so a change can be told
from the draw: over 100 samples a 0.85 accuracy is ± 0.07 (95 %). Means (accuracies, mIoU) use the
spread of their per-sample values; AP, which is not a mean, the spread of its values on
:data:`FOLDS` disjoint folds of the samples (sd / √folds, a whole-set error estimate). That is AP's
noise at a given count, not its dependence on the count: COCO AP reads higher on fewer pictures
(the shipped model: bbox AP50 0.785 over 300 held-out samples, 0.82–0.84 over each fifth of them),
so compare AP only at equal counts.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from visionllm2.model.data.checker import check_picture
from visionllm2.model.data.samples import TASK_DECODERS, Sample
from visionllm2.model.data.tasks import ShapesWorld
from visionllm2.model.decoders.detection_eval import CocoEvaluator
from visionllm2.model.decoders.pose_eval import PoseEvaluator
from visionllm2.model.errors import is_integer
from visionllm2.sdk import Mask, Masks, Session
from visionllm2.sdk.batch import BatchPredictor
from visionllm2.sdk.results._interop import supervision

FOLDS = 5  # disjoint folds whose AP spread gives an AP's standard error
MIN_FOLDED = 2 * FOLDS  # fewer samples: no AP error (a fold of one picture tells nothing)
EVAL_SCORE_THRESHOLD = 0.01  # detections kept for AP (the session's default display threshold is higher)
ROUTE_TASKS = ("detect", "segment", "ground", "interactive", "pose", "chat", "generate", "edit")
#: The metric each task reports in the summary table, and the target the shipped model aims at.
HEADLINE: dict[str, tuple[str, float]] = {
    "detect": ("bbox_AP50", 0.90), "segment": ("segm_AP50", 0.80), "ground": ("accuracy@0.5", 0.90),
    "interactive": ("mIoU", 0.75), "pose": ("keypoints_AP50", 0.80), "chat": ("exact_match", 0.90),
    "generate": ("checker_accuracy", 0.80), "edit": ("checker_accuracy", 0.80),
}


@dataclass
class Evaluation:
    """Metrics per task (``{"detect": {"bbox_AP50": …}, …}``), samples scored, seconds spent."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def headline(self) -> dict[str, float]:
        return {task: self.metrics[task][HEADLINE[task][0]] for task in self.metrics}

    def stderr(self, task: str) -> float | None:
        """The standard error of ``task``'s headline metric; ``None`` when too few samples give one."""
        return self.metrics[task].get(f"{HEADLINE[task][0]}_stderr")


def mean_with_stderr(name: str, values: Sequence[float]) -> dict[str, float]:
    """``{name: mean, name_stderr: sd / √n}`` of per-sample values (no error below two samples)."""
    values = np.asarray(values, np.float64)
    metrics = {name: float(values.mean())}
    if len(values) >= 2:
        metrics[f"{name}_stderr"] = float(values.std(ddof=1) / np.sqrt(len(values)))
    return metrics


def fold_stderr(fold_values: Sequence[float]) -> float | None:
    """A whole-set metric's standard error from its values on k equal disjoint folds: a fold holds
    1/k of the samples, so its value spreads about √k times as much as the whole set's, and
    sd(folds) / √k estimates the whole set's error. ``None`` when a fold had nothing to score
    (pycocotools gives −1)."""
    values = np.asarray(fold_values, np.float64)
    if len(values) < 2 or (values < 0).any():
        return None
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes (supervision's)."""
    return float(supervision().box_iou_batch(np.asarray(a, np.float64)[None], np.asarray(b, np.float64)[None])[0, 0])


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool ``(H, W)`` masks (supervision's); 0 when both are empty."""
    if not (a.any() or b.any()):
        return 0.0
    return float(supervision().mask_iou_batch(np.asarray(a, bool)[None], np.asarray(b, bool)[None])[0, 0])


def normalise_answer(text: str) -> str:
    """Lower case, no punctuation or routing tokens, single spaces: "Two." → "two"."""
    text = re.sub(r"\[[A-Z0-9]+\]", " ", text.lower())
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text).split())


def _pictures_of(samples: Sequence[Sample]) -> list[Image.Image]:
    return [sample.images[0] for sample in samples]


def _detect(predictor: BatchPredictor, samples: Sequence[Sample], task: str) -> dict[str, float]:
    iou_types = ("bbox",) if task == "detect" else ("bbox", "segm")
    evaluator, folds = CocoEvaluator(iou_types), [CocoEvaluator(iou_types) for _ in range(FOLDS)]
    asked = [sample.meta["asked"] for sample in samples]
    verb = predictor.detect if task == "detect" else predictor.segment
    for index, (sample, turn) in enumerate(zip(samples, verb(asked, images=_pictures_of(samples)))):
        truth = sample.targets["gdino"]
        labels = [asked[index][i] for i in truth.labels.tolist()]
        size = sample.images[0].size
        if task == "detect":
            scored = (size, truth.boxes, labels, turn.boxes.xyxy, turn.boxes.scores, turn.boxes.labels)
        else:
            masks = turn.masks
            scored = (size, truth.boxes, labels, masks.boxes, masks.scores, masks.labels, truth.masks, masks.masks)
        for scorer in (evaluator, folds[index % FOLDS]):
            scorer.add(*scored)
    return with_fold_stderr(evaluator.compute(), [fold.compute() for fold in folds] if len(samples) >= MIN_FOLDED else [],
                            HEADLINE[task][0])


def with_fold_stderr(metrics: dict[str, float], per_fold: Sequence[dict[str, float]], name: str) -> dict[str, float]:
    """``metrics`` with ``name_stderr`` from the folds' values of ``name`` (:func:`fold_stderr`), if any."""
    error = fold_stderr([fold[name] for fold in per_fold])
    return metrics if error is None else {**metrics, f"{name}_stderr": error}


def _ground(predictor: BatchPredictor, samples: Sequence[Sample]) -> dict[str, float]:
    turns = predictor.ground([sample.meta["expression"] for sample in samples], images=_pictures_of(samples))
    hits = [len(t.boxes) > 0 and box_iou(t.boxes.xyxy[0], s.meta["box"]) >= 0.5 for s, t in zip(samples, turns)]
    return mean_with_stderr("accuracy@0.5", hits)


def marks_ious(masks: Masks, truth: np.ndarray) -> list[float]:
    """Each marked object's IoU with the answer's mask of the same index (mark k → mask k; 0 for a
    mark the answer left out): what interactive segmentation's mIoU averages."""
    return [mask_iou(masks.masks[index], truth[index]) if index < len(masks) else 0.0 for index in range(len(truth))]


def _interactive(predictor: BatchPredictor, samples: Sequence[Sample]) -> dict[str, float]:
    ious, by_prompt = [], defaultdict(list)
    prompts = [[Mask(m) for _, m in sample.regions] for sample in samples]
    for sample, turn in zip(samples, predictor.segment(images=_pictures_of(samples), prompts=prompts)):
        ious += marks_ious(turn.masks, sample.targets["gdino"].masks)
        by_prompt[sample.meta["prompt"]] += ious[-len(sample.regions):]
    per_prompt = {f"{kind}_mIoU": float(np.mean(values)) for kind, values in sorted(by_prompt.items())}
    return {**mean_with_stderr("mIoU", ious), **per_prompt}


def _pose(predictor: BatchPredictor, samples: Sequence[Sample]) -> dict[str, float]:
    by_kind: dict[str, PoseEvaluator] = {}  # AP is per figure kind (each has its own keypoints)
    folds: list[dict[str, PoseEvaluator]] = [{} for _ in range(FOLDS)]
    turns = predictor.pose([[sample.meta["kind"]] for sample in samples], images=_pictures_of(samples),
                           keypoints=[sample.meta["keypoint_names"] for sample in samples])
    for index, (sample, turn) in enumerate(zip(samples, turns)):
        kind, names, truth, poses = sample.meta["kind"], sample.meta["keypoint_names"], sample.targets["unipose"], turn.poses
        for scorers in (by_kind, folds[index % FOLDS]):
            scorers.setdefault(kind, PoseEvaluator(names)).add(
                sample.images[0].size, truth.boxes, truth.keypoints, [kind] * len(truth.boxes),
                poses.boxes, poses.keypoints, poses.scores, [kind] * len(poses))
    per_kind = {kind: evaluator.compute() for kind, evaluator in by_kind.items()}
    metrics = {f"{kind}_AP50": values["keypoints_AP50"] for kind, values in per_kind.items()}
    metrics["keypoints_AP50"] = float(np.mean([v["keypoints_AP50"] for v in per_kind.values()]))
    metrics["keypoints_AP"] = float(np.mean([v["keypoints_AP"] for v in per_kind.values()]))
    per_fold = [{"keypoints_AP50": float(np.mean([e.compute()["keypoints_AP50"] for e in fold.values()]))}
                for fold in folds if fold] if len(samples) >= MIN_FOLDED else []
    return with_fold_stderr(metrics, per_fold, "keypoints_AP50")


def vqa_answers(predictor: BatchPredictor, samples: Sequence[Sample]) -> list[str]:
    """The normalised answers to chat samples' last questions, each asked on its picture in a fresh
    conversation (as ``eval`` scores them)."""
    questions = []
    for sample in samples:
        turns = [m for m in sample.messages if m.role == "user"]
        questions.append(next(s for s in turns[-1].segments if isinstance(s, str) and s.strip()))
    return [normalise_answer(turn.text) for turn in predictor.ask(questions, images=_pictures_of(samples), max_new_tokens=8)]


def _chat(predictor: BatchPredictor, samples: Sequence[Sample]) -> dict[str, float]:
    hits, by_form = [], defaultdict(list)
    for sample, answer in zip(samples, vqa_answers(predictor, samples)):
        hits.append(answer == normalise_answer(sample.meta["answer"]))
        by_form[sample.meta.get("form", "other")].append(hits[-1])
    per_form = {f"{form}_exact_match": float(np.mean(values)) for form, values in sorted(by_form.items())}
    return {**mean_with_stderr("exact_match", hits), **per_form}


def checker_scores(pictures: Sequence[Image.Image], metas: Sequence[dict]) -> dict[str, float]:
    """Checker accuracy of pictures against their samples' ``meta`` (colour, kind, place, and an
    edit's ``box``): ``colour_accuracy``, ``kind_accuracy``, ``place_accuracy``, ``all_accuracy``
    and ``checker_accuracy`` (= all)."""
    checks = defaultdict(list)
    for picture, meta in zip(pictures, metas):
        verdict = check_picture(picture, meta["colour"], meta["kind"], meta["place"], near=meta.get("box"))
        for name, ok in verdict.items():
            checks[name].append(ok)
    metrics = {f"{name}_accuracy": float(np.mean(values)) for name, values in checks.items()}
    return {**metrics, **mean_with_stderr("checker_accuracy", checks["all"])}


def _pictures(predictor: BatchPredictor, samples: Sequence[Sample], task: str) -> dict[str, float]:
    captions = [sample.meta["caption"] for sample in samples]
    turns = (predictor.generate(captions, seed=0) if task == "generate"  # sample i: seed i
             else predictor.edit(captions, images=_pictures_of(samples), seed=0))
    return checker_scores([turn.images.images[0] for turn in turns], [sample.meta for sample in samples])


SCORERS: dict[str, Callable[[BatchPredictor, Sequence[Sample]], dict[str, float]]] = {
    "detect": lambda s, x: _detect(s, x, "detect"), "segment": lambda s, x: _detect(s, x, "segment"),
    "ground": _ground, "interactive": _interactive, "pose": _pose, "chat": _chat,
    "generate": lambda s, x: _pictures(s, x, "generate"), "edit": lambda s, x: _pictures(s, x, "edit"),
}


def evaluate(session: Session, tasks: Sequence[str] = ROUTE_TASKS, count: int = 50, domains: Sequence[str] = (),
             progress: Callable[[str], None] | None = None, batch_size: int = 8) -> Evaluation:
    """Score ``count`` held-out ShapesWorld samples per task; tasks the model has no decoder for are
    skipped. Samples run ``batch_size`` at a time (:class:`~visionllm2.sdk.batch.BatchPredictor`),
    each in its own fresh conversation: the figures are the ones one sample at a time gives."""
    unknown = sorted(set(tasks) - set(SCORERS))
    if unknown:
        from visionllm2.sdk import UnknownTaskError

        raise UnknownTaskError(f"eval tasks: unknown {unknown}; expected some of {list(SCORERS)}")
    if not is_integer(count) or count < 1:
        from visionllm2.sdk import InvalidInputError

        raise InvalidInputError(f"eval count: expected at least 1 sample per task, got {count!r}")
    predictor = BatchPredictor(session.model, batch_size, session.processor, session.max_new_tokens)
    world = ShapesWorld(session.processor, "heldout", domains=tuple(domains))
    result = Evaluation()
    loaded = set(session.model.decoders())
    with all_detections(session.model):
        _score_tasks(predictor, world, tasks, count, loaded, result, progress)
    return result


@contextmanager
def all_detections(model):
    """COCO AP ranks every detection: lower the decoders' display threshold while scoring."""
    configs = [c for c in (model.config.detection, model.config.pose) if c is not None]
    saved = [c.score_threshold for c in configs]
    for config in configs:
        config.score_threshold = EVAL_SCORE_THRESHOLD
    try:
        yield
    finally:
        for config, threshold in zip(configs, saved):
            config.score_threshold = threshold


def _score_tasks(predictor: BatchPredictor, world: ShapesWorld, tasks: Sequence[str], count: int, loaded: set[str],
                 result: Evaluation, progress: Callable[[str], None] | None) -> None:
    for task in tasks:
        decoder = TASK_DECODERS[task]
        if decoder is not None and decoder not in loaded:
            result.skipped[task] = f"the model has no {decoder} decoder"
            continue
        if progress:
            progress(task)
        samples = world.samples_of(task, 0, count)
        start = time.perf_counter()
        result.metrics[task] = SCORERS[task](predictor, samples)
        result.counts[task] = len(samples)
        result.seconds[task] = time.perf_counter() - start
