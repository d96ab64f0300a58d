"""Industrial inspection: find named defects on part images, measure them, and pass or fail each part.

    report = inspect_parts(session, "parts/*.png", ["scratch", "dent", "crack"], pixel_size=0.05,
                           thresholds=Thresholds(max_count=2, max_area_mm2=1.5,
                                                 per_class={"crack": Limits(max_count=0)}))
    report.write("inspection_out")          # inspection.json, inspection.csv, defects.csv

Per part, two turns in a fresh conversation: ``detect(defects)`` → the boxes become the visual
prompts of ``segment(prompts=boxes)`` → one mask per defect. Areas are mask pixel counts and
``pixels × pixel_size²`` mm² (``pixel_size`` in millimetres per pixel, see :mod:`.measure`). Boxes are
xyxy pixel corners of the part image. A part that cannot be read is listed in ``report.failures``
and the others are still inspected.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from pydantic import Field, field_validator

from visionllm2.model.data.domains import DOMAINS
from visionllm2.model.images import ImageLike
from visionllm2.sdk.errors import InvalidInputError
from visionllm2.sdk.results import Boxes, Masks, Turn

from ._common import (
    Failure,
    Handoff,
    RecipeModel,
    as_inputs,
    check_count,
    check_fraction,
    check_names,
    detect_then_segment,
    detect_then_segment_in_batches,
    fresh_session,
    open_rgb,
)
from .measure import area_mm2, as_pixel_size

VOCABULARY: tuple[str, ...] = DOMAINS["industrial"]


class Limits(RecipeModel):
    """Pass limits; ``None`` means no limit.

    Attributes:
        max_count: the most defects allowed (on the whole part, or of one class in ``per_class``).
        max_area_mm2: the largest area any single defect may have, in mm².
    """

    max_count: int | None = None
    max_area_mm2: float | None = None

    @field_validator("max_count", "max_area_mm2")
    @classmethod
    def _not_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError("expected a limit >= 0 or None (no limit)")
        return value


class Thresholds(Limits):
    """Limits for the whole part plus optional per-class ones, all checked.

    The default, ``max_count=0``, fails a part with any defect. To allow some, raise it (or set it
    to None) and limit classes one by one, e.g. ``Thresholds(max_count=None,
    per_class={"dent": Limits(max_count=2), "crack": Limits(max_count=0)})``.
    """

    max_count: int | None = 0
    per_class: dict[str, Limits] = Field(default_factory=dict)


class Defect(RecipeModel):
    """One defect: ``label``, detection ``score``, ``xyxy`` box (pixel corners), mask area in
    pixels and mm²."""

    label: str
    score: float
    xyxy: tuple[float, float, float, float]
    area_px: int
    area_mm2: float


def verdict(defects: Sequence[Defect], thresholds: Thresholds) -> tuple[bool, list[str]]:
    """``(passed, reasons it failed)`` for a part with these defects. Pure: no model involved."""
    reasons = []

    def check(found: Sequence[Defect], limits: Limits, what: str) -> None:
        if limits.max_count is not None and len(found) > limits.max_count:
            reasons.append(f"{len(found)} {what} defects > max {limits.max_count}")
        if limits.max_area_mm2 is not None:
            for defect in found:
                if defect.area_mm2 > limits.max_area_mm2:
                    reasons.append(f"{defect.label} of {defect.area_mm2:.3g} mm² > max {limits.max_area_mm2:g} mm²")

    check(defects, thresholds, "part")
    for name, limits in thresholds.per_class.items():
        check([d for d in defects if d.label == name], limits, name)
    return not reasons, list(dict.fromkeys(reasons))


class PartResult(RecipeModel):
    """One inspected part.

    Attributes:
        source: the part's file name (or ``part{k}``); image_size: ``(width, height)``.
        detect, segment: the two turns (``segment`` is None when nothing was detected).
        boxes: the detections handed to the segment turn; masks: one mask per detection.
        defects: the measurements, in the order of ``boxes``; passed / reasons: the verdict.
    """

    source: str
    image_size: tuple[int, int]
    detect: Turn
    segment: Turn | None
    boxes: Boxes
    masks: Masks
    defects: list[Defect]
    passed: bool
    reasons: list[str]

    @property
    def turns(self) -> list[Turn]:
        return [t for t in (self.detect, self.segment) if t is not None]

    def annotate(self, image: Image.Image) -> Image.Image:
        """``image`` (the part, RGB, of ``image_size``) with masks, boxes and a PASS / FAIL banner."""
        picture = self.boxes.annotate(self.masks.annotate(image, labels=False))
        draw = ImageDraw.Draw(picture)
        text = "PASS" if self.passed else "FAIL"
        draw.rectangle((0, 0, 8 * len(text) + 6, 14), fill=(0, 150, 60) if self.passed else (200, 30, 30))
        draw.text((3, 2), text, fill=(255, 255, 255))
        return picture


class InspectionReport(RecipeModel):
    """A batch: what was asked, the settings, every part and every input that failed."""

    defects: list[str]
    pixel_size: tuple[float, float]
    thresholds: Thresholds
    parts: list[PartResult]
    failures: list[Failure]

    @property
    def passed(self) -> list[str]:
        return [p.source for p in self.parts if p.passed]

    @property
    def failed(self) -> list[str]:
        return [p.source for p in self.parts if not p.passed]

    def write_csv(self, path: str | Path) -> Path:
        """One row per part: verdict, counts per class, total and largest area (mm²), reasons."""
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["part", "verdict", "defects", *(f"count_{d}" for d in self.defects),
                             "total_area_mm2", "max_area_mm2", "reasons"])
            for part in self.parts:
                counts = Counter(d.label for d in part.defects)
                areas = [d.area_mm2 for d in part.defects]
                writer.writerow([part.source, "pass" if part.passed else "fail", len(part.defects),
                                 *(counts[d] for d in self.defects), f"{sum(areas):.6g}",
                                 f"{max(areas, default=0.0):.6g}", "; ".join(part.reasons)])
            for failure in self.failures:
                writer.writerow([failure.source, "error", "", *([""] * len(self.defects)), "", "", failure.message])
        return path

    def write_defects_csv(self, path: str | Path) -> Path:
        """One row per defect: part, index, label, score, box corners (px), area px and mm²."""
        path = Path(path)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["part", "index", "label", "score", "x1", "y1", "x2", "y2", "area_px", "area_mm2"])
            for part in self.parts:
                for k, d in enumerate(part.defects):
                    writer.writerow([part.source, k, d.label, f"{d.score:.4f}", *(f"{v:.1f}" for v in d.xyxy),
                                     d.area_px, f"{d.area_mm2:.6g}"])
        return path

    def write(self, directory: str | Path) -> list[Path]:
        """``inspection.json`` (this report), ``inspection.csv`` and ``defects.csv`` in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        report = directory / "inspection.json"
        report.write_text(self.to_json(indent=1))
        return [report, self.write_csv(directory / "inspection.csv"), self.write_defects_csv(directory / "defects.csv")]


def check_inputs(defects: object, pixel_size: object, thresholds: object = None,
                 vocabulary: Sequence[str] | None = VOCABULARY, min_score: object = None, max_objects: object = 50
                 ) -> tuple[list[str], tuple[float, float], Thresholds]:
    """Validate before any model work. Returns ``(defect classes, (mm/px, mm/px), thresholds)``.

    Raises :class:`InvalidPromptError` for an empty / repeated / unknown class list,
    :class:`InvalidInputError` for a zero, negative or missing pixel size, bad thresholds, or
    per-class limits on classes that were not asked.
    """
    names = check_names(defects, "defects", vocabulary)
    size = as_pixel_size(pixel_size, "pixel_size")
    if thresholds is None:
        thresholds = Thresholds()
    elif isinstance(thresholds, dict):
        thresholds = Thresholds(**thresholds)
    elif not isinstance(thresholds, Thresholds):
        raise InvalidInputError(f"thresholds: expected Thresholds or a dict of its fields, got {type(thresholds).__name__}")
    stray = sorted(set(thresholds.per_class) - set(names))
    if stray:
        raise InvalidInputError(f"thresholds.per_class: expected limits for asked classes {names}, got {stray}")
    check_fraction(min_score, "min_score")
    check_count(max_objects, "max_objects")
    return names, size, thresholds


def inspect_part(session: Any, image: ImageLike, defects: Sequence[str], pixel_size: float | tuple[float, float],
                 thresholds: Thresholds | None = None, *, source: str = "part0", min_score: float | None = None,
                 max_objects: int = 50, vocabulary: Sequence[str] | None = VOCABULARY) -> PartResult:
    """Inspect one part image; errors (an unreadable image, bad settings) raise."""
    names, size, limits = check_inputs(defects, pixel_size, thresholds, vocabulary, min_score, max_objects)
    return _inspect(session, open_rgb(image), source, names, size, limits, min_score, max_objects)


def _inspect(session: Any, picture: Image.Image, source: str, names: list[str], size: tuple[float, float],
             thresholds: Thresholds, min_score: float | None, max_objects: int) -> PartResult:
    handoff = detect_then_segment(fresh_session(session), names, picture, min_score, max_objects)
    return _part(source, picture, handoff, size, thresholds)


def _part(source: str, picture: Image.Image, handoff: Handoff, size: tuple[float, float],
          thresholds: Thresholds) -> PartResult:
    detect, segment, boxes, masks = handoff
    areas = masks.area.tolist()
    found = [Defect(label=label, score=float(score), xyxy=tuple(float(v) for v in box), area_px=int(area),
                    area_mm2=float(area_mm2(area, size)))
             for label, score, box, area in zip(boxes.labels, boxes.scores.tolist(), boxes.xyxy.tolist(), areas)]
    passed, reasons = verdict(found, thresholds)
    return PartResult(source=source, image_size=picture.size, detect=detect, segment=segment, boxes=boxes,
                      masks=masks, defects=found, passed=passed, reasons=reasons)


def inspect_parts(session: Any, parts: ImageLike | Sequence[ImageLike], defects: Sequence[str],
                  pixel_size: float | tuple[float, float], thresholds: Thresholds | None = None, *,
                  min_score: float | None = None, max_objects: int = 50,
                  vocabulary: Sequence[str] | None = VOCABULARY,
                  on_done: Callable[[str], None] | None = None, batch_size: int = 8) -> InspectionReport:
    """Inspect a batch of parts.

    Args:
        session: a :class:`~visionllm2.sdk.Session` (each part runs in a fresh conversation on its model).
        parts: one image or a list (paths, PIL images, arrays); a path may be a folder or a glob.
        defects: the defect classes to look for, e.g. ``["scratch", "dent"]``.
        pixel_size: millimetres per pixel (> 0), one number or ``(x, y)``.
        thresholds: pass limits (default: any defect fails).
        min_score: drop detections scored below this; max_objects: keep at most this many per part.
        vocabulary: allowed class names (``None``: any word).
        on_done: called with each part's name when it is done (progress bars).
        batch_size: parts inspected together, each still its own conversation with the turns it
            would get alone (:class:`~visionllm2.sdk.batch.BatchPredictor`).
    """
    names, size, limits = check_inputs(defects, pixel_size, thresholds, vocabulary, min_score, max_objects)
    check_count(batch_size, "batch_size")
    done, failures = detect_then_segment_in_batches(session, as_inputs(parts), names, min_score, max_objects,
                                                    batch_size, on_done)
    results = [_part(source, picture, handoff, size, limits) for source, picture, handoff in done]
    return InspectionReport(defects=names, pixel_size=size, thresholds=limits, parts=results, failures=failures)
