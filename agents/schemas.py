"""Argument schemas of the vision tools: what an LLM sees when the tools are bound to it.

Images and results travel by id, never as pixels or long strings:

* an **image id** names a picture the session holds (``"image1"``, from ``load_image`` or
  ``Session.set_image``), or an ``Images`` result (``"turn3.images"``) to look at a generated or
  edited picture;
* a **result id** names a typed result: ``"turn<N>.<kind>"`` with kind ``boxes``, ``masks``,
  ``poses`` or ``images`` (``N`` is the turn index in the session), optionally one item of it:
  ``"turn0.boxes[2]"``.

The recipe tools' schemas (last in this module) take images by id or by a path inside the
allowed directories, and pixel sizes in millimetres per pixel (> 0).

Each schema's ``accepts`` maps the fields holding ids to the output kinds a plan may hand to
them (``image`` is a session image, the others result kinds); plans are checked against it
before they run.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

IMAGE_KINDS = ("image", "images")
REGION_KINDS = ("boxes", "masks", "poses")


_IMAGE_ID = ("Id of the image to look at: 'image1' (a loaded image) or 'turn3.images' (a generated or edited "
             "image). Leave out to use the image of the previous call.")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# A list of names; a lone string is taken as a one-name list (LLMs often send "person" for ["person"]).
Names = Annotated[list[str], BeforeValidator(_as_list)]


class ToolArgs(BaseModel):
    """Base of the argument schemas: unknown arguments are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")

    #: field → the output kinds a plan step may pass to it by reference.
    accepts: ClassVar[dict[str, tuple[str, ...]]] = {}


class DetectArgs(ToolArgs):
    classes: Names = Field(min_length=1, max_length=16, description=(
        "Object class names to find, singular and short, e.g. ['red circle', 'person']."))
    image_id: str | None = Field(None, description=_IMAGE_ID)

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_id": IMAGE_KINDS}


class GroundArgs(ToolArgs):
    expression: str = Field(min_length=1, max_length=200, description=(
        "A referring expression naming exactly one object, e.g. 'the red circle on the left'."))
    image_id: str | None = Field(None, description=_IMAGE_ID)

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_id": IMAGE_KINDS}


class SegmentArgs(ToolArgs):
    classes: Names | None = Field(None, min_length=1, max_length=16, description=(
        "Class names to segment every instance of, e.g. ['red circle']. Give classes or prompts, not both."))
    prompts: list[str | list[float]] | None = Field(None, min_length=1, max_length=32, description=(
        "Objects to segment, one mask each: result ids of earlier boxes/masks/poses ('turn0.boxes' for all "
        "of them, 'turn0.boxes[1]' for one), [x, y] points or [x1, y1, x2, y2] boxes in pixels."),
)
    image_id: str | None = Field(None, description=_IMAGE_ID)

    @field_validator("prompts")
    @classmethod
    def _coordinates(cls, prompts: list[str | list[float]] | None) -> list[str | list[float]] | None:
        for prompt in prompts or []:
            if isinstance(prompt, list) and len(prompt) not in (2, 4):
                raise ValueError(f"expected [x, y] or [x1, y1, x2, y2] pixels, got {len(prompt)} numbers {prompt}")
        return prompts

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.classes is None) == (self.prompts is None):
            raise ValueError("expected exactly one of 'classes' or 'prompts'")
        return self

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_id": IMAGE_KINDS, "prompts": REGION_KINDS}


class PoseArgs(ToolArgs):
    classes: Names = Field(["person"], min_length=1, max_length=8, description=(
        "Classes whose keypoints to find; default ['person'] (COCO's 17 keypoints)."))
    keypoints: list[str] | None = Field(None, min_length=1, max_length=68, description=(
        "Keypoint names; required for classes other than 'person', e.g. ['nose', 'tail']."))
    image_id: str | None = Field(None, description=_IMAGE_ID)

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_id": IMAGE_KINDS}


class GenerateArgs(ToolArgs):
    caption: str = Field(min_length=1, max_length=300, description="What the new image shows.")
    seed: int = Field(0, ge=0, description="Random seed; the same seed gives the same image.")
    steps: int | None = Field(None, ge=1, le=100, description="Diffusion steps; leave out for the default.")


class EditArgs(ToolArgs):
    instruction: str = Field(min_length=1, max_length=300, description=(
        "What to change, as an instruction: 'make the red circles green'."))
    image_id: str | None = Field(None, description=_IMAGE_ID)
    region_id: str | None = Field(None, description=(
        "Optional result id of masks or boxes ('turn1.masks'): only pixels inside them change."))
    seed: int = Field(0, ge=0, description="Random seed; the same seed gives the same edit.")
    steps: int | None = Field(None, ge=1, le=100, description="Diffusion steps; leave out for the default.")

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_id": IMAGE_KINDS, "region_id": REGION_KINDS}


class ChatArgs(ToolArgs):
    question: str = Field(min_length=1, max_length=1000, description="A question about the image, or any message.")
    image_id: str | None = Field(None, description=_IMAGE_ID)

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_id": IMAGE_KINDS}


class LoadImageArgs(ToolArgs):
    path: str = Field(min_length=1, max_length=1000, description=(
        "Path of an image file inside the allowed directories (relative paths start in the first one)."))


class SaveResultArgs(ToolArgs):
    result_id: str = Field(description=(
        "What to save: a result id ('turn0.boxes', 'turn2.images') or an image id ('image1')."))
    path: str = Field(min_length=1, max_length=1000, description=(
        "Where, inside the allowed directories: '.png'/'.jpg' draws boxes, masks or poses on their image "
        "(or writes the image itself); '.json' writes the result as lossless JSON."))

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"result_id": ("image", *REGION_KINDS, "images")}


# ------------------------------------------------------------------------------------------- recipes
MAX_IMAGES = 16  # images one recipe call works on

_PATH = ("A file inside the allowed directories (relative paths start in the first one), instead of image_id; it is "
         "loaded into the session as load_image does.")
_IMAGE_IDS = ("Ids of the images to work on ('image1', 'turn3.images'); a lone id is one image. Leave out, with "
              "paths, to use the image of the previous call.")
_PATHS = "Files inside the allowed directories to work on, instead of or beside image_ids; each is loaded into the session."
_MIN_SCORE = "Drop results scored below this (0 to 1); leave out to keep all."


def _pixel_size(value: float | list[float] | None) -> float | list[float] | None:
    sizes = value if isinstance(value, list) else [value]
    if value is not None and (len(sizes) != 2 and isinstance(value, list)
                              or not all(math.isfinite(v) and v > 0 for v in sizes)):
        raise ValueError("expected millimetres per pixel > 0, one number (e.g. 0.05) or a pair [x, y]")
    return value


# Millimetres per pixel: a positive number or a pair of them; None: unknown (areas stay in pixels).
PixelSize = Annotated[float | list[float] | None, AfterValidator(_pixel_size)]


def _one_image(args: Any, id_field: str = "image_id", path_field: str = "path") -> None:
    if getattr(args, id_field) is not None and getattr(args, path_field) is not None:
        raise ValueError(f"expected {id_field} or {path_field}, not both")


def _few_images(args: Any, ids_field: str = "image_ids", paths_field: str = "paths") -> None:
    count = len(getattr(args, ids_field) or []) + len(getattr(args, paths_field) or [])
    if count > MAX_IMAGES:
        raise ValueError(f"expected at most {MAX_IMAGES} images in {ids_field} and {paths_field} together, got {count}")


class DetectSegmentEditArgs(ToolArgs):
    classes: Names = Field(min_length=1, max_length=16, description=(
        "Class names of the objects to change, singular and short, e.g. ['car']; every instance is found and outlined."))
    instruction: str | None = Field(None, min_length=1, max_length=300, description=(
        "The edit, e.g. 'make it red'; only pixels inside the objects' masks change. Leave out to only find and "
        "outline them."))
    image_id: str | None = Field(None, description=_IMAGE_ID)
    path: str | None = Field(None, min_length=1, max_length=1000, description=_PATH)
    min_score: float | None = Field(None, ge=0, le=1, description=_MIN_SCORE)
    max_objects: int = Field(20, ge=1, le=64, description="Outline at most this many objects (the best-scoring).")
    seed: int = Field(0, ge=0, description="Random seed of the edit; the same seed gives the same edit.")
    steps: int | None = Field(None, ge=1, le=100, description="Diffusion steps; leave out for the default.")

    @model_validator(mode="after")
    def _source(self) -> Self:
        _one_image(self)
        return self

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_id": IMAGE_KINDS}


class InContextSegmentArgs(ToolArgs):
    examples: list[str | list[float]] = Field(min_length=1, max_length=32, description=(
        "What to look for, marked by example: ids of objects found before ('turn0.boxes[1]', 'recipe0.masks[0]'; "
        "'turn0.boxes' for each of them; their own image is the reference), or [x1, y1, x2, y2] boxes / [x, y] "
        "points in pixels of reference_id. At most 8 are used (the best-scoring)."))
    reference_id: str | None = Field(None, description=(
        "Image the coordinate examples are on ('image1'); leave out for the image of the previous call."))
    reference_path: str | None = Field(None, min_length=1, max_length=1000, description=(
        "A file inside the allowed directories the coordinate examples are on, instead of reference_id."))
    target_ids: Names | None = Field(None, min_length=1, max_length=MAX_IMAGES, description=(
        "Images to search ('image2'); leave out, with target_paths, for the image of the previous call."))
    target_paths: Names | None = Field(None, min_length=1, max_length=MAX_IMAGES, description=(
        "Files inside the allowed directories to search, instead of or beside target_ids."))
    label: str = Field("object", min_length=1, max_length=60, description=(
        "Name for what the examples show, e.g. 'washer'; the masks found get it."))
    min_score: float | None = Field(None, ge=0, le=1, description=_MIN_SCORE)

    @field_validator("examples")
    @classmethod
    def _coordinates(cls, examples: list[str | list[float]]) -> list[str | list[float]]:
        for example in examples:
            if isinstance(example, list) and len(example) not in (2, 4):
                raise ValueError(f"expected [x, y] or [x1, y1, x2, y2] pixels, got {len(example)} numbers {example}")
        return examples

    @model_validator(mode="after")
    def _sources(self) -> Self:
        _one_image(self, "reference_id", "reference_path")
        _few_images(self, "target_ids", "target_paths")
        return self

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {
        "examples": ("boxes", "masks"), "reference_id": IMAGE_KINDS, "target_ids": IMAGE_KINDS}


class InspectPartsArgs(ToolArgs):
    defects: Names | None = Field(None, min_length=1, max_length=8, description=(
        "Defect classes to look for, singular, e.g. ['scratch', 'dent']; leave out for every defect class known."))
    image_ids: Names | None = Field(None, min_length=1, max_length=MAX_IMAGES, description=_IMAGE_IDS)
    paths: Names | None = Field(None, min_length=1, max_length=MAX_IMAGES, description=_PATHS)
    pixel_size: PixelSize = Field(None, description=(
        "Millimetres per pixel (> 0), one number or [x, y], e.g. 0.05: areas are then in mm². Leave out when "
        "unknown: areas stay in pixels."))
    max_defects: int | None = Field(0, ge=0, description=(
        "The most defects a part may have and still pass; default 0 (any defect fails), null for no limit."))
    max_area_mm2: float | None = Field(None, ge=0, description=(
        "The largest area in mm² one defect may have and the part still pass (needs pixel_size)."))
    min_score: float | None = Field(None, ge=0, le=1, description=_MIN_SCORE)
    max_objects: int = Field(50, ge=1, le=100, description="Keep at most this many defects per part (the best-scoring).")

    @model_validator(mode="after")
    def _settings(self) -> Self:
        _few_images(self)
        if self.max_area_mm2 is not None and self.pixel_size is None:
            raise ValueError("max_area_mm2 needs pixel_size (millimetres per pixel) to turn pixels into mm²")
        return self

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_ids": IMAGE_KINDS}


class MeasureStructuresArgs(ToolArgs):
    structures: Names | None = Field(None, min_length=1, max_length=8, description=(
        "Structures or lesions to outline and measure, singular, e.g. ['lesion']; leave out for every one known."))
    image_ids: Names | None = Field(None, min_length=1, max_length=MAX_IMAGES, description=_IMAGE_IDS)
    paths: Names | None = Field(None, min_length=1, max_length=MAX_IMAGES, description=(
        _PATHS + " 16-bit scans are windowed to 8 bits (0.5-99.5 percentiles)."))
    pixel_spacing: PixelSize = Field(None, description=(
        "Millimetres per pixel (> 0), one number or [row, column] (DICOM PixelSpacing): areas in mm², diameters "
        "in mm. Leave out when unknown: pixels."))
    min_score: float | None = Field(None, ge=0, le=1, description=_MIN_SCORE)

    @model_validator(mode="after")
    def _sources(self) -> Self:
        _few_images(self)
        return self

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_ids": IMAGE_KINDS}


class MapObjectsArgs(ToolArgs):
    classes: Names | None = Field(None, min_length=1, max_length=8, description=(
        "What to map, singular, e.g. ['building', 'road']; leave out for every class known."))
    image_id: str | None = Field(None, description=_IMAGE_ID)
    path: str | None = Field(None, min_length=1, max_length=1000, description=_PATH)
    tile_size: int = Field(256, ge=16, le=4096, description="Side in pixels of the tiles the image is read in.")
    overlap: int = Field(64, ge=0, description=(
        "Pixels neighbouring tiles share (less than tile_size); more than the largest object a seam may cut."))

    @model_validator(mode="after")
    def _settings(self) -> Self:
        _one_image(self)
        if self.overlap >= self.tile_size:
            raise ValueError(f"expected overlap < tile_size ({self.tile_size}), got {self.overlap}; a quarter of "
                             f"the tile ({self.tile_size // 4}) is typical")
        return self

    accepts: ClassVar[dict[str, tuple[str, ...]]] = {"image_id": IMAGE_KINDS}
