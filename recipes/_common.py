"""What every recipe shares: input gathering and validation, batch failures, typed outputs, and files.

Coordinates follow the SDK: pixels of the original image, ``(0, 0)`` the top-left corner, boxes
``xyxy``, masks bool ``(H, W)``. Recipes never touch the caller's conversation: each image is worked
on in a session of its own (:func:`fresh_session`) that shares the caller's model and settings.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, ValidationError

from visionllm2.model.errors import describe
from visionllm2.model.images import ImageLike, load_image
from visionllm2.sdk.errors import InvalidImageError, InvalidInputError, InvalidPromptError, VisionLLMError
from visionllm2.sdk.results import Boxes, Masks, Turn
from visionllm2.sdk.results._interop import supervision

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_PIXELS = 2**30  # the recipes read large (tiled) images themselves; beyond this is a decompression bomb

T = TypeVar("T")


class RecipeModel(BaseModel):
    """Base of the recipes' typed outputs: frozen pydantic models that serialise to JSON.

    Results inside (``Turn``, ``Boxes``, ``Masks``, ``Images``) serialise as the SDK writes them
    (masks as RLE, images as PNG), so a report read back with ``model_validate_json`` is lossless.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:  # a typed error that says where, not pydantic's
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "input"
            raise InvalidInputError(f"{type(self).__name__}.{where}: {first['msg']}; got "
                                    f"{describe(first.get('input'))}") from None

    def to_json(self, indent: int | None = None) -> str:
        return self.model_dump_json(indent=indent)


class Failure(RecipeModel):
    """One input a batch could not process: which, the error's type and its message."""

    source: str
    error: str
    message: str

    @classmethod
    def of(cls, source: object, error: BaseException) -> Failure:
        return cls(source=str(source), error=type(error).__name__, message=str(error))


# --------------------------------------------------------------------------------------- sessions
def fresh_session(session: Any) -> Any:
    """A new conversation on ``session``'s model, processor and ``max_new_tokens``.

    Each image (or tile) gets one, so the caller's history is left as it was and long batches
    never run out of context.
    """
    return type(session)(session.model, processor=session.processor, max_new_tokens=session.max_new_tokens)


# --------------------------------------------------------------------------------------- checks
def check_names(names: object, what: str, vocabulary: Sequence[str] | None = None) -> list[str]:
    """A clean list of class names: strings, stripped, non-empty, no repeats, and (when a
    ``vocabulary`` is given) each one of its words. Raises :class:`InvalidPromptError`."""
    if isinstance(names, str):
        names = [part for part in names.split(",")]
    if not isinstance(names, Iterable):
        raise InvalidPromptError(f"{what}: expected a list of class names, got {describe(names)}")
    names = list(names)
    if not names:
        raise InvalidPromptError(f"{what}: expected at least one class name, got an empty list")
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise InvalidPromptError(f"{what}: expected non-empty strings, got {names!r}")
    clean = [n.strip() for n in names]
    repeated = sorted({n for n in clean if clean.count(n) > 1})
    if repeated:
        raise InvalidPromptError(f"{what}: expected each class once, got {repeated} more than once in {clean}")
    if vocabulary is not None:
        unknown = [n for n in clean if n not in vocabulary]
        if unknown:
            raise InvalidPromptError(
                f"{what}: expected classes among {list(vocabulary)}, got unknown {unknown}; pass vocabulary=None "
                "(--any-class on the command line) for a model that knows other words"
            )
    return clean


def check_fraction(value: float | None, what: str) -> float | None:
    """``None``, or a number in [0, 1] (scores, IoU thresholds)."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInputError(f"{what}: expected a number in [0, 1], got {describe(value)}")
    return float(value)


def dedupe(masks: Masks, threshold: float, metric: str = "iou") -> Masks:
    """Mask NMS (supervision's), per label: of two masks whose overlap exceeds ``threshold``, the
    lower-scored is dropped; order is kept. ``metric`` is ``"iou"`` (intersection over union) or
    ``"ios"`` (intersection over the smaller mask: a fragment lying on a better mask counts as its
    duplicate, however small it is)."""
    if metric not in ("iou", "ios"):
        raise InvalidInputError(f"dedupe: expected metric 'iou' or 'ios', got {describe(metric)}")
    if len(masks) < 2:
        return masks
    sv = supervision()
    names = sorted(set(masks.labels))
    classes = np.array([[names.index(label)] for label in masks.labels], np.float64)
    table = np.concatenate([masks.boxes, masks.scores[:, None], classes], axis=1).astype(np.float64)
    keep = sv.mask_non_max_suppression(table, masks.masks, iou_threshold=threshold,
                                       overlap_metric=sv.OverlapMetric(metric.upper()))
    return masks[np.flatnonzero(keep)]


# --------------------------------------------------------------------------------------- inputs
def gather_images(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files from a file, a folder (its image files, sorted, not recursive), a glob pattern
    (``"parts/*.png"``) or a list of any of these.

    Raises :class:`InvalidInputError` when a path does not exist or nothing matches; files that
    exist but cannot be decoded are found later, per file (see :func:`run_batch`).
    """
    if isinstance(source, (list, tuple)):
        found = [path for item in source for path in gather_images(item)]
        if not found:
            raise InvalidInputError("images: expected at least one image, got an empty list")
        return found
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InvalidInputError(
                f"images: expected image files ({', '.join(IMAGE_SUFFIXES)}) in the folder {text!r}, got none"
            )
        return files
    if path.is_file():
        return [path]
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        if not files:
            raise InvalidInputError(f"images: expected the pattern {text!r} to match image files, got no match")
        return files
    raise InvalidInputError(f"images: expected an image file, a folder or a glob pattern, got {text!r}, "
                            "which does not exist")


def open_image(image: ImageLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A PIL image in its own mode (16-bit ``"I;16"`` scans stay 16-bit), EXIF orientation applied.

    Paths and bytes are decoded here, so an unreadable file raises :class:`InvalidImageError`
    before any model work; arrays and tensors go through the SDK's ``load_image`` (RGB).
    """
    if isinstance(image, Image.Image):
        return image
    if not isinstance(image, (str, Path)):
        return load_image(image, max_pixels)
    path = Path(image)
    if not path.is_file():
        raise InvalidImageError(f"image: expected an existing image file, got {str(path)!r}")
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise InvalidImageError(f"image {path}: {width}×{height} pixels exceeds the limit of {max_pixels:,}")
            opened.load()
            picture = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidImageError(f"image {path}: not a readable image ({error})") from error
    if picture.size[0] == 0 or picture.size[1] == 0:
        raise InvalidImageError(f"image {path}: expected a non-empty image, got size {picture.size}")
    return picture


def open_rgb(image: ImageLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """:func:`open_image`, converted to 8-bit RGB (what the model reads)."""
    picture = open_image(image, max_pixels)
    if picture.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return load_image(np.asarray(picture), max_pixels)  # stretch the used range, not clip
    return picture.convert("RGB")


def source_name(image: object, index: int) -> str:
    """A readable name for an input: its path, else ``image{index}``."""
    return str(image) if isinstance(image, (str, Path)) else f"image{index}"


def as_inputs(images: object) -> list[tuple[str, Any]]:
    """``(name, image)`` pairs from one image or a list of them; a path string may also be a folder
    or a glob pattern (see :func:`gather_images`). Nothing is decoded yet."""
    if isinstance(images, (str, Path)):
        return [(str(p), p) for p in gather_images(images)]
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidInputError("images: expected at least one image, got an empty list")
        pairs = []
        for k, image in enumerate(images):
            expand = isinstance(image, (str, Path)) and (Path(image).is_dir() or glob.has_magic(str(image)))
            # A listed file that is missing or corrupt fails on its own later; the rest still run.
            pairs += as_inputs(image) if expand else [(source_name(image, k), image)]
        return pairs
    return [(source_name(images, 0), images)]


def run_batch(items: Sequence[T], work: Callable[[T], Any], sources: Sequence[str] | None = None,
              on_done: Callable[[str], None] | None = None) -> tuple[list[Any], list[Failure]]:
    """``work(item)`` for every item; one that raises a :class:`VisionLLMError` (an unreadable image,
    an image the model refuses) or an ``OSError`` becomes a :class:`Failure` and the rest go on.

    Returns ``(results of the items that worked, failures)``; ``on_done(source)`` after each item.
    """
    results, failures = [], []
    for index, item in enumerate(items):
        source = sources[index] if sources is not None else source_name(item, index)
        try:
            results.append(work(item))
        except (VisionLLMError, OSError) as error:
            failures.append(Failure.of(source, error))
        if on_done is not None:
            on_done(source)
    return results, failures


def run_in_batches(session: Any, items: Sequence[tuple[str, Any]], prepare: Callable[[Any], Any],
                   verb: Callable[[Any, list[Image.Image]], list[Any]], batch_size: int = 8,
                   picture_of: Callable[[Any], Image.Image] = lambda prepared: prepared,
                   on_done: Callable[[str], None] | None = None) -> tuple[list[tuple[str, Any, Any]], list[Failure]]:
    """One-turn requests over many inputs, ``batch_size`` pictures per forward, each its own
    conversation on ``session``'s model (:class:`~visionllm2.sdk.batch.BatchPredictor`).

    Every ``(name, image)`` is first ``prepare``-d (read, windowed …; ``picture_of`` gives the
    picture the model sees): an unreadable one is a :class:`Failure` of its own, not a lost batch.
    Then ``verb(predictor, pictures)`` runs batch by batch and gives one outcome per picture (its
    turn, or the turns of a hand-off); a batch the model refuses runs picture by picture, so only the
    refused picture fails. Returns ``([(name, prepared, outcome)], failures)``.
    """
    from visionllm2.sdk.batch import BatchPredictor  # torch: loaded when a recipe runs, not on import

    predictor = BatchPredictor(session.model, check_count(batch_size, "batch_size"), session.processor,
                               session.max_new_tokens)
    prepared, failures = run_batch(items, lambda item: (item[0], prepare(item[1])), [name for name, _ in items])
    for failure in failures if on_done is not None else ():
        on_done(failure.source)
    done: list[tuple[str, Any, Any]] = []
    for start in range(0, len(prepared), batch_size):
        chunk = prepared[start:start + batch_size]
        try:
            turns = verb(predictor, [picture_of(p) for _, p in chunk])
        except VisionLLMError:  # one picture the model refuses: run them one by one to tell which
            turns, chunk = _one_by_one(predictor, verb, chunk, picture_of, failures)
        for (name, value), turn in zip(chunk, turns):
            done.append((name, value, turn))
            if on_done is not None:
                on_done(name)
    return done, failures


def _one_by_one(predictor: Any, verb: Callable, chunk: list[tuple[str, Any]], picture_of: Callable,
                failures: list[Failure]) -> tuple[list[Any], list[tuple[str, Any]]]:
    turns, kept = [], []
    for name, value in chunk:
        try:
            turns += verb(predictor, [picture_of(value)])
            kept.append((name, value))
        except VisionLLMError as error:
            failures.append(Failure.of(name, error))
    return turns, kept


# --------------------------------------------------------------------------------------- outputs
def relabel(result: Boxes | Masks, labels: Sequence[str], asked: Sequence[str]) -> Boxes | Masks:
    """``result`` with one new label per item (e.g. the class a box prompt came from)."""
    return result.model_copy(update={"labels": list(labels), "asked": list(asked)})


def side_by_side(pictures: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    """The pictures in one row on white, top-aligned, ``gap`` pixels apart."""
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    height = max(p.height for p in pictures)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    x = 0
    for picture in pictures:
        canvas.paste(picture.convert("RGB"), (x, 0))
        x += picture.width + gap
    return canvas


def contact_sheet(pictures: Sequence[tuple[str, Image.Image]], thumb: int = 256, columns: int = 4) -> Image.Image:
    """A grid of ``(caption, picture)`` thumbnails (each scaled to a longer side of ``thumb`` pixels) with captions."""
    if not pictures:
        return Image.new("RGB", (thumb, thumb + 16), (255, 255, 255))
    columns = max(1, min(columns, len(pictures)))
    rows = math.ceil(len(pictures) / columns)
    cell_w, cell_h = thumb + 8, thumb + 24
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (caption, picture) in enumerate(pictures):
        scale = thumb / max(picture.size)  # small pictures grow (crisp pixels), large ones shrink (smoothly)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        small = picture.convert("RGB").resize(size, Image.NEAREST if scale > 1 else Image.LANCZOS)
        x, y = (k % columns) * cell_w + 4, (k // columns) * cell_h + 4
        sheet.paste(small, (x, y))
        draw.text((x, y + thumb + 4), caption[-40:], fill=(0, 0, 0))
    return sheet


def merge_coco(entries: Sequence[tuple[str, Boxes | Masks]], classes: Sequence[str]) -> dict[str, Any]:
    """One COCO document for a batch: ``(file name, result)`` per image, image ids 1.., annotation
    ids unique across images, one category table (``classes`` first, then any other label)."""
    names = list(dict.fromkeys([*classes, *(label for _, result in entries for label in result.labels)]))
    table = {name: k + 1 for k, name in enumerate(names)}
    document: dict[str, Any] = {"info": {"description": "visionllm2 recipe output"}, "images": [],
                                "annotations": [], "categories": [{"id": i, "name": n} for n, i in table.items()]}
    next_id = 1
    for image_id, (file_name, result) in enumerate(entries, start=1):
        coco = result.to_coco(image_id=image_id, category_ids=table, start_id=next_id)
        document["images"].append({**coco["images"][0], "file_name": file_name})
        document["annotations"] += coco["annotations"]
        next_id += len(coco["annotations"])
    return document


def transcript(recipe: str, items: Iterable[tuple[str, Sequence[Turn]]], failures: Sequence[Failure],
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-ready record of a run: every turn of every input (results included) and the failures."""
    return {
        "recipe": recipe,
        **(extra or {}),
        "items": [{"source": source, "turns": [json.loads(t.to_json()) for t in turns]} for source, turns in items],
        "failures": [f.model_dump() for f in failures],
    }


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=_json_default))
    return path


def _json_default(value: object) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {describe(value)}")


# --------------------------------------------------------------------------------------- turns
Handoff = tuple[Turn, "Turn | None", Boxes, Masks]  # detect turn, segment turn (None: nothing found), boxes, masks


def detect_then_segment(conversation: Any, classes: Sequence[str], picture: Image.Image, min_score: float | None,
                        max_objects: int) -> Handoff:
    """Two turns with a typed hand-off: ``detect(classes)``, then ``segment(prompts=boxes)`` with
    the detect turn's boxes (best ``max_objects``, scores ≥ ``min_score``) as the visual prompts.

    Returns ``(detect turn, segment turn or None when nothing was found, boxes, masks)``: one mask
    per box, in the same order, labelled with the box's class.
    """
    detect = conversation.detect(list(classes), image=picture)
    boxes = _prompt_boxes(detect, picture, classes, min_score, max_objects)
    segment = conversation.segment(prompts=list(boxes)) if len(boxes) else None
    return _handoff(detect, segment, boxes, picture, classes)


def detect_then_segment_in_batches(session: Any, items: Sequence[tuple[str, Any]], classes: Sequence[str],
                                   min_score: float | None, max_objects: int, batch_size: int = 8,
                                   on_done: Callable[[str], None] | None = None
                                   ) -> tuple[list[tuple[str, Image.Image, Handoff]], list[Failure]]:
    """:func:`detect_then_segment` on many pictures, each in a conversation of its own on
    ``session``'s model, ``batch_size`` conversations per forward (the same turns as one at a time;
    unreadable pictures and refused ones fail alone, as in :func:`run_in_batches`)."""
    def both_turns(predictor: Any, pictures: list[Image.Image]) -> list[Handoff]:
        return detect_then_segment_batch(session, predictor, pictures, classes, min_score, max_objects)[1]

    return run_in_batches(session, items, open_rgb, both_turns, batch_size, on_done=on_done)


def detect_then_segment_batch(session: Any, predictor: Any, pictures: list[Image.Image], classes: Sequence[str],
                              min_score: float | None, max_objects: int) -> tuple[list[Any], list[Handoff]]:
    """One batch of :func:`detect_then_segment` hand-offs through a ``BatchPredictor``: the fresh
    conversations (to go on with) and each picture's hand-off. The segment turn runs only where the
    detect turn found something, as one at a time."""
    classes = list(classes)
    conversations = [fresh_session(session) for _ in pictures]
    detects = predictor.detect(classes, images=pictures, sessions=conversations)
    chosen = [_prompt_boxes(d, p, classes, min_score, max_objects) for d, p in zip(detects, pictures)]
    found = [i for i, boxes in enumerate(chosen) if len(boxes)]
    segments: list[Turn | None] = [None] * len(pictures)
    if found:
        turns = predictor.segment(prompts=[list(chosen[i]) for i in found], sessions=[conversations[i] for i in found])
        for i, turn in zip(found, turns):
            segments[i] = turn
    return conversations, [_handoff(d, s, b, p, classes) for d, s, b, p in zip(detects, segments, chosen, pictures)]


def _prompt_boxes(detect: Turn, picture: Image.Image, classes: Sequence[str], min_score: float | None,
                  max_objects: int) -> Boxes:
    """The detect turn's boxes that become visual prompts: scores ≥ ``min_score``, the best ``max_objects``."""
    boxes = detect.boxes if detect.boxes is not None else Boxes.empty(picture.size, asked=list(classes))
    if min_score is not None:
        boxes = boxes.filter(min_score=min_score)
    if len(boxes) > max_objects:
        boxes = boxes[np.sort(np.argsort(-boxes.scores, kind="stable")[:max_objects])]
    return boxes


def _handoff(detect: Turn, segment: Turn | None, boxes: Boxes, picture: Image.Image, classes: Sequence[str]) -> Handoff:
    if segment is None:
        return detect, None, boxes, Masks.empty(picture.size, asked=list(classes), turn=detect.index)
    return detect, segment, boxes, relabel(segment.masks, boxes.labels, classes)


def check_count(value: object, what: str, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidInputError(f"{what}: expected an int >= {minimum}, got {describe(value)}")
    return value
