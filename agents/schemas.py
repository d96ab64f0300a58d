"""Argument schemas of the vision tools: what an LLM sees when the tools are bound to it.

Images and results travel by id, never as pixels or long strings:

* an **image id** names a picture the session holds (``"image1"``, from ``load_image`` or
  ``Session.set_image``), or an ``Images`` result (``"turn3.images"``) to look at a generated or
  edited picture;
* a **result id** names a typed result: ``"turn<N>.<kind>"`` with kind ``boxes``, ``masks``,
  ``poses`` or ``images`` (``N`` is the turn index in the session), optionally one item of it:
  ``"turn0.boxes[2]"``.

Each schema's ``accepts`` maps the fields holding ids to the output kinds a plan may hand to
them (``image`` is a session image, the others result kinds); plans are checked against it
before they run.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

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
