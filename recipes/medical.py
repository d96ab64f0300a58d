"""Medical images: segment named structures and lesions, measure them, and say plainly what this is not.

    report = measure_structures(session, "slices/", ["liver", "kidney", "lesion"], pixel_spacing=0.7)
    report.items[0].findings[0].area_mm2, report.counts()
    report.write("medical_out")              # medical.json, medical.csv (the disclaimer in both)

Input: grayscale or RGB images; 16-bit (``"I;16"``) or float scans are shown to the model through a
percentile window to 8 bits (:func:`.measure.window_to_8bit`, default 0.5–99.5 %), 8-bit input as
is. Per image, one ``segment(structures)`` turn in a fresh conversation. Each finding carries its
mask area in pixels and mm² (``pixel_spacing`` in mm per pixel, DICOM's PixelSpacing order ``(row,
column)`` or one number) and its equivalent diameter (of the disc of equal area) in pixels and mm.

The report measures what the model segmented. It never names a disease or a diagnosis: every
report carries :data:`DISCLAIMER`.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from visionllm2.model.data.domains import DOMAINS
from visionllm2.model.images import ImageLike
from visionllm2.sdk.results import Masks, Turn

from ._common import (
    Failure,
    RecipeModel,
    as_inputs,
    check_count,
    check_fraction,
    check_names,
    fresh_session,
    open_image,
    run_in_batches,
)
from .measure import area_mm2, as_pixel_size, check_window, equivalent_diameter, window_to_8bit

VOCABULARY: tuple[str, ...] = DOMAINS["medical"]

DISCLAIMER = (
    "Research output, not a medical device. These measurements come from VisionLLM v2, a general-purpose "
    "vision-language model that outlines image regions matching the names it was given. It has not been "
    "clinically validated, it does not diagnose, grade or rule out any condition, and its outlines and areas "
    "can be wrong or missing. A qualified clinician must review the original images before any use in care."
)


class Finding(RecipeModel):
    """One segmented structure: ``label``, ``score``, ``xyxy`` box (pixel corners), mask area in
    pixels and mm², equivalent diameter in pixels and mm."""

    label: str
    score: float
    xyxy: tuple[float, float, float, float]
    area_px: int
    area_mm2: float
    diameter_px: float
    diameter_mm: float


class MedicalItem(RecipeModel):
    """One image: its name, size ``(width, height)``, the window used (``(low, high)`` input values
    mapped to 0 and 255; ``None`` for 8-bit input), the segment turn, its masks and the findings."""

    source: str
    image_size: tuple[int, int]
    window: tuple[float, float] | None
    turn: Turn
    masks: Masks
    findings: list[Finding]

    @property
    def turns(self) -> list[Turn]:
        return [self.turn]

    def counts(self) -> dict[str, int]:
        """Findings per asked structure (0 for those not found)."""
        found = Counter(f.label for f in self.findings)
        return {name: found[name] for name in self.masks.asked}


class MedicalReport(RecipeModel):
    """A batch: the structures asked, the spacing (mm per pixel), the window percentiles, every item,
    every failure, and the fixed :data:`DISCLAIMER`."""

    structures: list[str]
    pixel_spacing: tuple[float, float]
    window_percentiles: tuple[float, float]
    items: list[MedicalItem]
    failures: list[Failure]
    disclaimer: str = DISCLAIMER

    def counts(self) -> dict[str, dict[str, int]]:
        """Per image: findings per structure."""
        return {item.source: item.counts() for item in self.items}

    def write_csv(self, path: str | Path) -> Path:
        """One row per finding; the disclaimer is the first line (``#`` comment)."""
        path = Path(path)
        with path.open("w", newline="") as handle:
            handle.write(f"# {self.disclaimer}\n")
            writer = csv.writer(handle)
            writer.writerow(["image", "label", "score", "x1", "y1", "x2", "y2", "area_px", "area_mm2",
                             "diameter_px", "diameter_mm"])
            for item in self.items:
                for f in item.findings:
                    writer.writerow([item.source, f.label, f"{f.score:.4f}", *(f"{v:.1f}" for v in f.xyxy), f.area_px,
                                     f"{f.area_mm2:.6g}", f"{f.diameter_px:.4g}", f"{f.diameter_mm:.4g}"])
        return path

    def write(self, directory: str | Path) -> list[Path]:
        """``medical.json`` (this report) and ``medical.csv`` in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        report = directory / "medical.json"
        report.write_text(self.to_json(indent=1))
        return [report, self.write_csv(directory / "medical.csv")]


def check_inputs(structures: object, pixel_spacing: object, window: object = (0.5, 99.5),
                 vocabulary: Sequence[str] | None = VOCABULARY, min_score: object = None
                 ) -> tuple[list[str], tuple[float, float], tuple[float, float]]:
    """Validate before any model work: structures (non-empty, known unless ``vocabulary`` is None),
    spacing (> 0 mm), window percentiles. Returns ``(structures, spacing, window)``."""
    names = check_names(structures, "structures", vocabulary)
    spacing = as_pixel_size(pixel_spacing, "pixel_spacing")
    check_fraction(min_score, "min_score")
    return names, spacing, check_window(window)


def _windowed(image: ImageLike, window: tuple[float, float]) -> tuple[Image.Image, tuple[float, float]]:
    """The 8-bit picture the model is shown, and the window's values in the file's own units."""
    return window_to_8bit(open_image(image), window)


def _item(source: str, windowed: tuple[Image.Image, tuple[float, float]], turn: Turn, names: list[str],
          spacing: tuple[float, float], min_score: float | None) -> MedicalItem:
    picture, used = windowed
    masks = turn.masks if turn.masks is not None else Masks.empty(picture.size, asked=names, turn=turn.index)
    if min_score is not None:
        masks = masks.filter(min_score=min_score)
    findings = []
    for label, score, box, area in zip(masks.labels, masks.scores.tolist(), masks.boxes.tolist(), masks.area.tolist()):
        mm2 = float(area_mm2(area, spacing))
        findings.append(Finding(label=label, score=float(score), xyxy=tuple(float(v) for v in box), area_px=int(area),
                                area_mm2=mm2, diameter_px=float(equivalent_diameter(area)),
                                diameter_mm=float(equivalent_diameter(mm2))))
    return MedicalItem(source=source, image_size=picture.size, window=used, turn=turn, masks=masks, findings=findings)


def measure_structure(session: Any, image: ImageLike, structures: Sequence[str], pixel_spacing: float | tuple[float, float],
                      *, window: tuple[float, float] = (0.5, 99.5), min_score: float | None = None,
                      vocabulary: Sequence[str] | None = VOCABULARY, source: str = "image0") -> MedicalItem:
    """One image; errors raise. See :func:`measure_structures` for the arguments."""
    names, spacing, window = check_inputs(structures, pixel_spacing, window, vocabulary, min_score)
    windowed = _windowed(image, window)
    return _item(source, windowed, fresh_session(session).segment(names, image=windowed[0]), names, spacing, min_score)


def measure_structures(session: Any, images: ImageLike | Sequence[ImageLike], structures: Sequence[str],
                       pixel_spacing: float | tuple[float, float], *, window: tuple[float, float] = (0.5, 99.5),
                       min_score: float | None = None, vocabulary: Sequence[str] | None = VOCABULARY,
                       on_done: Callable[[str], None] | None = None, batch_size: int = 8) -> MedicalReport:
    """Segment and measure ``structures`` on each image.

    Args:
        session: a :class:`~visionllm2.sdk.Session` (each image runs in a fresh conversation on its model).
        images: one image or a list; a path may be a folder or a glob. 16-bit files stay 16-bit until windowed.
        structures: e.g. ``["liver", "kidney", "lesion"]``.
        pixel_spacing: mm per pixel (> 0), one number or ``(row, column)``.
        window: ``(low, high)`` percentiles for high-depth input.
        min_score: drop findings scored below this. vocabulary: allowed names (``None``: any).
        on_done: called with each image's name when it is done.
        batch_size: images segmented together, each still its own conversation with the answer it
            would get alone (:class:`~visionllm2.sdk.batch.BatchPredictor`).
    """
    names, spacing, window = check_inputs(structures, pixel_spacing, window, vocabulary, min_score)
    check_count(batch_size, "batch_size")
    done, failures = run_in_batches(session, as_inputs(images), lambda image: _windowed(image, window),
                                    lambda predictor, pictures: predictor.segment(names, images=pictures), batch_size,
                                    picture_of=lambda windowed: windowed[0], on_done=on_done)
    items = [_item(source, windowed, turn, names, spacing, min_score) for source, windowed, turn in done]
    return MedicalReport(structures=names, pixel_spacing=spacing, window_percentiles=window, items=items,
                         failures=failures)


def display_image(image: ImageLike, window: tuple[float, float] = (0.5, 99.5)) -> Image.Image:
    """The 8-bit RGB picture the model is shown for ``image`` (for drawing the masks on)."""
    return _windowed(image, check_window(window))[0]
