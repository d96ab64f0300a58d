"""Images: what the generation / editing decoder returns for ``[GEN]`` and ``[EDIT]``."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import numpy as np
from PIL import Image, PngImagePlugin
from pydantic import Field, PlainSerializer, field_validator, model_validator

from visionllm2.model.errors import InvalidImageError, InvalidInputError, describe

from ._base import Indexable, Result, to_numpy


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # lossless, so JSON round trips are pixel exact
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _as_pil(value: object, where: str) -> Image.Image:
    """A PIL image from a PIL image, an (H, W[, C]) uint8 array/tensor, or base64 PNG text."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, str):
        try:
            image = Image.open(io.BytesIO(base64.b64decode(value, validate=True)))
            image.load()
            return image
        except (ValueError, OSError):
            raise InvalidImageError(
                f"{where}: expected base64-encoded PNG text, got {describe(value)}"
            ) from None
    array = to_numpy(value)
    if isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.ndim in (2, 3):
        try:
            return Image.fromarray(array)
        except (TypeError, ValueError):
            pass
    raise InvalidImageError(
        f"{where}: expected a PIL image or an (H, W, 3) uint8 array, got {describe(value)}"
    )


PILImages = Annotated[
    list[Image.Image], PlainSerializer(lambda images: [_png_base64(i) for i in images], when_used="json")
]


class Images(Indexable, Result):
    """N generated or edited images with what produced them.

    Attributes:
        images: ``N`` PIL images, all of size ``image_size`` (width, height).
        captions: ``N`` texts (the prompt each image was made from); ``""`` when unknown.
        seeds: ``N`` random seeds, ``None`` when not fixed.
        settings: free-form generation settings, e.g. ``{"scheduler": "ddim", "steps": 30,
            "guidance": 7.5}``; must be JSON-serialisable.

    ``image_size`` may be left out; it is then the size of the first image.
    """

    kind: Literal["images"] = "images"
    images: PILImages
    captions: list[str] = Field(default_factory=list)
    seeds: list[int | None] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)

    _item_fields: ClassVar[tuple[str, ...]] = ("images", "captions", "seeds")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Fill ``image_size`` from the first image, and blank captions / seeds per image."""
        if not isinstance(data, dict) or not isinstance(data.get("images"), (list, tuple)):
            return data
        images = [_as_pil(image, f"{cls.__name__}.images[{k}]") for k, image in enumerate(data["images"])]
        data = {**data, "images": images}
        if data.get("image_size") is None and images:
            data["image_size"] = images[0].size
        if not data.get("captions"):
            data["captions"] = [""] * len(images)
        if not data.get("seeds"):
            data["seeds"] = [None] * len(images)
        return data

    @field_validator("settings")
    @classmethod
    def _check_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"{cls.__name__}.settings: expected JSON-serialisable values, got {describe(value)}"
            ) from None
        return value

    @model_validator(mode="after")
    def _check_per_image(self) -> Self:
        for name, value in (("captions", self.captions), ("seeds", self.seeds)):
            if len(value) != len(self.images):
                raise InvalidInputError(
                    f"{type(self).__name__}: expected {name} of length {len(self.images)} (one per image), "
                    f"got {describe(value)}"
                )
        for k, image in enumerate(self.images):
            if image.size != self.image_size:
                raise InvalidImageError(
                    f"{type(self).__name__}.images[{k}]: expected size (width, height) {self.image_size}, "
                    f"got {image.size}"
                )
        return self

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        extra = f", route={self.route!r}" if self.route else ""
        return f"Images(n={len(self)}, image_size={self.image_size}, settings={self.settings}{extra})"

    __str__ = __repr__

    def save(self, directory: str | Path, stem: str = "image") -> list[Path]:
        """Write ``{stem}_{k}.png`` files (caption, seed and settings in PNG text chunks).

        Returns the paths written; the directory is created if needed.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, (image, caption, seed) in enumerate(zip(self.images, self.captions, self.seeds)):
            meta = PngImagePlugin.PngInfo()
            meta.add_text("caption", caption)
            meta.add_text("seed", "" if seed is None else str(seed))
            meta.add_text("settings", json.dumps(self.settings))
            path = directory / f"{stem}_{k}.png"
            image.save(path, format="PNG", pnginfo=meta)
            paths.append(path)
        return paths
