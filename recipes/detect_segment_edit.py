"""Detect → segment → edit: change only the objects you name.

    result = detect_segment_edit(session, "street.jpg", ["car"], "make it red", edit_options={"seed": 0})
    result.after                   # the picture with edited pixels only inside the cars' masks
    result.overlay(), result.before_after()

Three turns in a fresh conversation on the session's model, with typed hand-offs:

1. ``detect(classes)`` → :class:`Boxes` (xyxy pixel corners);
2. ``segment(prompts=boxes)``: each box of turn 1 is a visual prompt → one mask per box;
3. ``edit(instruction)`` on the same image → an edited picture, resized to the original and composited
   back only inside the union of the masks: every pixel outside it equals the original.

A model without an edit decoder still gives detections and masks; the
edit is recorded as skipped with the reason, as it is when nothing was found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from visionllm2.model import tokens as T
from visionllm2.model.errors import describe
from visionllm2.model.images import ImageLike
from visionllm2.sdk.errors import InvalidImageError, InvalidPromptError
from visionllm2.sdk.results import Boxes, Images, Masks, Turn

from ._common import (
    Failure,
    Handoff,
    RecipeModel,
    as_inputs,
    check_count,
    check_fraction,
    check_names,
    detect_then_segment,
    detect_then_segment_batch,
    fresh_session,
    open_rgb,
    run_in_batches,
    side_by_side,
)

EDIT_OPTIONS = ("seed", "num_inference_steps", "guidance_scale", "image_guidance_scale", "scheduler")


class DetectSegmentEditResult(RecipeModel):
    """What :func:`detect_segment_edit` returns.

    Attributes:
        classes: what was asked; instruction: the edit (``None``: detect and segment only).
        detect, segment, edit: the turns (``segment`` is None when nothing was found, ``edit`` when
            it was skipped or not asked).
        boxes: the detections handed to the segment turn; masks: one per box, labelled by class.
        pictures: ``before`` and, when the edit ran, ``after`` (:class:`Images`, original size).
        edit_skipped: why the edit did not run, or ``None``.
    """

    classes: list[str]
    instruction: str | None
    detect: Turn
    segment: Turn | None
    edit: Turn | None
    boxes: Boxes
    masks: Masks
    pictures: Images
    edit_skipped: str | None

    @property
    def turns(self) -> list[Turn]:
        return [t for t in (self.detect, self.segment, self.edit) if t is not None]

    @property
    def before(self) -> Image.Image:
        return self.pictures.images[0]

    @property
    def after(self) -> Image.Image | None:
        return self.pictures.images[1] if len(self.pictures) > 1 else None

    @property
    def region(self) -> np.ndarray:
        """bool ``(H, W)``: the union of the masks, where the edit may change pixels."""
        return self.masks.masks.any(axis=0) if len(self.masks) else np.zeros(self.before.size[::-1], bool)

    def overlay(self) -> Image.Image:
        """The original with the masks and boxes drawn."""
        return self.boxes.annotate(self.masks.annotate(self.before, labels=False))

    def before_after(self) -> Image.Image:
        """Original, masks overlay and (when edited) the result, side by side."""
        return side_by_side([self.before, self.overlay(), *([self.after] if self.after is not None else [])])


def composite_inside(original: Image.Image, edited: Image.Image, region: np.ndarray) -> Image.Image:
    """``original`` with ``edited`` (resized to the original's size, bicubic) pasted only where the
    bool ``(H, W)`` ``region`` is True; every other pixel is the original's, exactly."""
    width, height = original.size
    if region.shape != (height, width):
        raise InvalidImageError(f"composite_inside: expected a region of shape {(height, width)} (the original's "
                                f"height, width), got {describe(region)}")
    base = np.asarray(original.convert("RGB"))
    new = np.asarray(edited.convert("RGB").resize((width, height), Image.BICUBIC))
    return Image.fromarray(np.where(region[..., None], new, base))


def check_inputs(classes: object, instruction: object = None, min_score: object = None, max_objects: object = 20,
                 edit_options: object = None) -> tuple[list[str], str | None]:
    """Validate before any model work: a non-empty class list, an optional non-empty instruction,
    ``min_score`` in [0, 1], ``max_objects`` ≥ 1 and only known edit options
    (:data:`EDIT_OPTIONS`). Returns ``(classes, instruction)``."""
    names = check_names(classes, "classes")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
        raise InvalidPromptError(f"instruction: expected a non-empty edit instruction such as 'make it red' or None, "
                                 f"got {instruction!r}")
    check_fraction(min_score, "min_score")
    check_count(max_objects, "max_objects")
    unknown = sorted(set(edit_options or {}) - set(EDIT_OPTIONS))
    if unknown:
        raise InvalidPromptError(f"edit_options: expected keys among {list(EDIT_OPTIONS)}, got unknown {unknown}")
    return names, instruction.strip() if instruction else None


def detect_segment_edit(session: Any, image: ImageLike, classes: Sequence[str], instruction: str | None = None, *,
                        min_score: float | None = None, max_objects: int = 20,
                        edit_options: Mapping[str, Any] | None = None) -> DetectSegmentEditResult:
    """Find ``classes``, segment each found object, and edit only those objects by ``instruction``.

    Args:
        session: a :class:`~visionllm2.sdk.Session`; the turns run in a fresh conversation on its model.
        image: path, PIL image or array (read as 8-bit RGB).
        classes: e.g. ``["car", "bus"]``; instruction: e.g. ``"make it red"`` (``None``: no edit).
        min_score: drop detections below it; max_objects: segment at most the best N.
        edit_options: ``seed``, ``num_inference_steps``, ``guidance_scale``, ``image_guidance_scale``.
    """
    names, instruction = check_inputs(classes, instruction, min_score, max_objects, edit_options)
    picture = open_rgb(image)
    conversation = fresh_session(session)
    handoff = detect_then_segment(conversation, names, picture, min_score, max_objects)
    edit, skipped = None, _why_no_edit(session, instruction, handoff, names)
    if skipped is None:
        edit = conversation.edit(instruction, **dict(edit_options or {}))  # the detect turn's image
    return _result(names, instruction, picture, handoff, edit, skipped)


def detect_segment_edit_many(session: Any, images: ImageLike | Sequence[ImageLike], classes: Sequence[str],
                             instruction: str | None = None, *, min_score: float | None = None, max_objects: int = 20,
                             edit_options: Mapping[str, Any] | None = None, batch_size: int = 8,
                             on_done: Callable[[str], None] | None = None
                             ) -> tuple[list[tuple[str, DetectSegmentEditResult]], list[Failure]]:
    """:func:`detect_segment_edit` on many images (a path may be a folder or a glob), ``batch_size``
    conversations per forward, each with the turns it would get alone (the same ``seed`` for every
    image, as one call each). An unreadable image, or one the model refuses, is a failure of its own.
    Returns ``([(name, result)], failures)``."""
    names, instruction = check_inputs(classes, instruction, min_score, max_objects, edit_options)
    check_count(batch_size, "batch_size")
    options = dict(edit_options or {})

    def three_turns(predictor: Any, pictures: list[Image.Image]) -> list[DetectSegmentEditResult]:
        conversations, handoffs = detect_then_segment_batch(session, predictor, pictures, names, min_score, max_objects)
        skipped = [_why_no_edit(session, instruction, handoff, names) for handoff in handoffs]
        edits: list[Turn | None] = [None] * len(pictures)
        chosen = [i for i, reason in enumerate(skipped) if reason is None]
        if chosen:
            seeds = [options["seed"]] * len(chosen) if "seed" in options else None
            turns = predictor.edit(instruction, sessions=[conversations[i] for i in chosen],
                                   **{**options, "seed": seeds} if seeds else options)
            for i, turn in zip(chosen, turns):
                edits[i] = turn
        return [_result(names, instruction, picture, handoff, edit, reason)
                for picture, handoff, edit, reason in zip(pictures, handoffs, edits, skipped)]

    done, failures = run_in_batches(session, as_inputs(images), open_rgb, three_turns, batch_size, on_done=on_done)
    return [(name, result) for name, _, result in done], failures


def _why_no_edit(session: Any, instruction: str | None, handoff: Handoff, names: list[str]) -> str | None:
    """Why the edit turn does not run (``None``: it runs)."""
    if instruction is None:
        return "no instruction given"
    if len(handoff[3]) == 0:
        return f"nothing to edit: no {', '.join(names)} found"
    if T.EDIT not in session.model.decoder_of_route:
        return f"this model cannot edit: it has no {T.EDIT} decoder (loaded: {sorted(session.model.decoder_of_route)})"
    return None


def _result(names: list[str], instruction: str | None, picture: Image.Image, handoff: Handoff, edit: Turn | None,
            skipped: str | None) -> DetectSegmentEditResult:
    detect, segment, boxes, masks = handoff
    pictures = [picture]
    if edit is not None:
        pictures.append(composite_inside(picture, edit.images.images[0], masks.masks.any(axis=0)))
    captions = ["before", *([f"after: {instruction}"] if len(pictures) > 1 else [])]
    return DetectSegmentEditResult(classes=names, instruction=instruction, detect=detect, segment=segment, edit=edit,
                                   boxes=boxes, masks=masks, pictures=Images(images=pictures, captions=captions),
                                   edit_skipped=skipped)
