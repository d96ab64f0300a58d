"""In-context visual prompting: mark a few examples on reference images, find the same kind of thing
in target images.

    examples = [("ref.png", Box(30, 40, 90, 100)), ("ref2.png", Point(x=64, y=50))]
    result = in_context(session, examples, ["a.png", "b.png"], label="washer")
    result.items[0].masks                    # Masks on a.png, labelled "washer"

An example is ``(reference image, prompt)``; the prompt is anything
:func:`~visionllm2.sdk.as_visual_prompt` takes: :class:`Point`, :class:`Box`, :class:`Scribble`,
:class:`Mask`, a single-item ``Boxes``/``Masks`` from an earlier turn, ``(x, y)``, ``(x1, y1, x2, y2)``
(pixels of the reference image) or a bool ``(H, W)`` array. Several examples may share one image.

Per target, one ``segment(examples=[...], image=target)`` turn in a fresh conversation: the model
answers with one group per example, so a target gets at most one mask per example; the masks are
relabelled ``label``, filtered by ``min_score`` and de-duplicated by mask NMS (supervision's), since
two examples of one kind often point at the same target object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from visionllm2.model.errors import describe
from visionllm2.model.images import ImageLike
from visionllm2.sdk.errors import InvalidPromptError
from visionllm2.sdk.prompts import VisualPrompt, as_visual_prompt
from visionllm2.sdk.results import Boxes, Masks, Turn
from visionllm2.sdk.results.masks import tight_boxes

from ._common import (
    Failure,
    RecipeModel,
    as_inputs,
    check_count,
    check_fraction,
    check_names,
    dedupe,
    open_rgb,
    run_in_batches,
)

MAX_EXAMPLES = 8  # each example brings its image into the prompt; more rarely help and soon overflow the context


class ExampleMark(RecipeModel):
    """A reference example as the model saw it: the image's name and ``(width, height)``, the prompt's
    type (``"Box"``, ``"Point"`` …), and the rasterised region's box (xyxy pixel corners) and area."""

    source: str
    image_size: tuple[int, int]
    prompt: str
    xyxy: tuple[float, float, float, float]
    area_px: int


class InContextItem(RecipeModel):
    """One target: name, ``(width, height)``, the segment turn, and the kept masks (labelled
    ``label``, de-duplicated)."""

    source: str
    image_size: tuple[int, int]
    turn: Turn
    masks: Masks

    @property
    def turns(self) -> list[Turn]:
        return [self.turn]

    @property
    def boxes(self) -> Boxes:
        return Boxes(xyxy=self.masks.boxes, scores=self.masks.scores, labels=self.masks.labels,
                     image_size=self.image_size, asked=self.masks.asked, turn=self.masks.turn, route=self.masks.route)

    def annotate(self, image: Image.Image) -> Image.Image:
        return self.masks.annotate(image)


class InContextResult(RecipeModel):
    """The examples, the label, every target's item and every target that failed."""

    label: str
    examples: list[ExampleMark]
    items: list[InContextItem]
    failures: list[Failure]


def check_inputs(examples: object, label: object = "object", min_score: object = None, nms_iou: object = 0.5
                 ) -> tuple[list[tuple[Image.Image, VisualPrompt]], list[ExampleMark], str]:
    """Read the reference images and rasterise every prompt on its image, before any model work.

    Raises :class:`InvalidPromptError` for no examples, more than :data:`MAX_EXAMPLES`, a pair that
    is not ``(image, prompt)``, or a prompt outside its image; :class:`InvalidImageError` for an
    unreadable reference. Returns ``(examples as (RGB image, prompt), their marks, label)``.
    """
    if not isinstance(examples, (list, tuple)) or not examples:
        raise InvalidPromptError(f"examples: expected a non-empty list of (reference image, prompt) pairs, "
                                 f"got {describe(examples)}")
    if len(examples) > MAX_EXAMPLES:
        raise InvalidPromptError(f"examples: expected at most {MAX_EXAMPLES} examples, got {len(examples)}")
    name = check_names([label], "label")[0]
    check_fraction(min_score, "min_score")
    check_fraction(nms_iou, "nms_iou")
    pairs, marks, opened = [], [], {}
    for k, example in enumerate(examples):
        if not isinstance(example, (list, tuple)) or len(example) != 2:
            raise InvalidPromptError(f"examples[{k}]: expected a (reference image, prompt) pair, got {describe(example)}")
        image, prompt = example
        key = str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else id(image)
        if key not in opened:  # one reference image with several marks is read once
            shown = str(image) if isinstance(image, str) or hasattr(image, "__fspath__") else f"reference{len(opened)}"
            opened[key] = (shown, open_rgb(image))
        source, picture = opened[key]
        visual = as_visual_prompt(prompt)
        mask = visual.to_mask(picture.size)  # raises InvalidPromptError when outside the image
        marks.append(ExampleMark(source=source, image_size=picture.size, prompt=type(visual).__name__,
                                 xyxy=tuple(float(v) for v in tight_boxes(mask[None])[0]), area_px=int(mask.sum())))
        pairs.append((picture, visual))
    return pairs, marks, name


def _item(source: str, picture: Image.Image, turn: Turn, label: str, min_score: float | None,
          nms_iou: float) -> InContextItem:
    masks = turn.masks if turn.masks is not None else Masks.empty(picture.size, turn=turn.index)
    masks = masks.model_copy(update={"labels": [label] * len(masks), "asked": [label]})
    if min_score is not None:
        masks = masks.filter(min_score=min_score)
    return InContextItem(source=source, image_size=picture.size, turn=turn, masks=dedupe(masks, nms_iou))


def in_context(session: Any, examples: Sequence[tuple[ImageLike, Any]], targets: ImageLike | Sequence[ImageLike], *,
               label: str = "object", min_score: float | None = None, nms_iou: float = 0.5,
               on_done: Callable[[str], None] | None = None, batch_size: int = 8) -> InContextResult:
    """Segment in each target what the examples mark.

    Args:
        session: a :class:`~visionllm2.sdk.Session` (each target runs in a fresh conversation on its model).
        examples: ``(reference image, prompt)`` pairs (1 to :data:`MAX_EXAMPLES`).
        targets: one image or a list; a path may be a folder or a glob. An unreadable target is
            listed in ``failures`` and the others are still processed; an unreadable reference raises.
        label: the name the found objects get; min_score: drop masks below it; nms_iou: de-duplication.
        on_done: called with each target's name when it is done.
        batch_size: targets searched together, each still its own conversation with the answer it
            would get alone; the references are encoded once (:class:`~visionllm2.sdk.batch.BatchPredictor`).
    """
    pairs, marks, name = check_inputs(examples, label, min_score, nms_iou)
    check_count(batch_size, "batch_size")
    done, failures = run_in_batches(session, as_inputs(targets), open_rgb,
                                    lambda predictor, pictures: predictor.segment(images=pictures, examples=pairs),
                                    batch_size, on_done=on_done)
    items = [_item(source, picture, turn, name, min_score, nms_iou) for source, picture, turn in done]
    return InContextResult(label=name, examples=marks, items=items, failures=failures)
