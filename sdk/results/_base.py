"""Pieces shared by every result type: the base model, array coercion, JSON encoding, indexing.

Conventions used by all results:

* ``image_size`` is ``(width, height)`` of the *original* image, in pixels (PIL order).
* Coordinates are continuous pixel coordinates of the original image: pixel ``(row i, column j)``
  covers ``[j, j + 1) x [i, i + 1)``, so a box ``(0, 0, W, H)`` covers the whole image.
* Arrays are numpy with fixed dtypes (float32 for coordinates and scores, bool for masks), so a
  result is cheap to index and exact to serialise.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar, Self

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, ValidationError, field_validator

from visionllm2.model.errors import InvalidInputError, describe

# Marker key of an encoded array in JSON; unlikely to collide with a user's dict keys.
_ARRAY_KEY = "__ndarray__"


# --------------------------------------------------------------------------------------------
# Arrays: coercion from lists / tensors, and a lossless JSON form
# --------------------------------------------------------------------------------------------


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """JSON form of an array: dtype, shape and the raw little-endian bytes in base64.

    Raw bytes, not decimal text, make the round trip bit-exact for float32.
    """
    array = np.ascontiguousarray(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {
        _ARRAY_KEY: base64.b64encode(little.tobytes()).decode("ascii"),
        "dtype": array.dtype.str.lstrip("<>|="),
        "shape": list(array.shape),
    }


def decode_array(data: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`."""
    dtype = np.dtype(data["dtype"]).newbyteorder("<")
    raw = base64.b64decode(data[_ARRAY_KEY])
    return np.frombuffer(raw, dtype=dtype).reshape(data["shape"]).astype(dtype.newbyteorder("="))


def is_encoded_array(value: object) -> bool:
    return isinstance(value, dict) and _ARRAY_KEY in value


def to_numpy(value: object) -> object:
    """Turn torch tensors (without importing torch) and encoded dicts into numpy arrays."""
    if is_encoded_array(value):
        return decode_array(value)  # type: ignore[arg-type]
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor, duck-typed
        value = value.detach().cpu()  # type: ignore[union-attr]
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):  # numpy has no bfloat16
            value = value.float()
        return value.numpy()
    return value


def as_array(value: object, dtype: type | np.dtype, where: str, shape: str) -> np.ndarray:
    """Coerce ``value`` (list, tuple, ndarray, tensor, encoded dict) to an array of ``dtype``.

    ``shape`` is only used in the message when the value cannot be converted at all.
    """
    value = to_numpy(value)
    try:
        array = np.asarray(value)
        if dtype is bool and array.dtype != bool:
            # Integer masks (0/1, or 0/255 from PIL and OpenCV) are common: nonzero is inside.
            # Float masks are refused: they are usually probabilities that need a threshold.
            if not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
                raise TypeError
            return array != 0
        return np.array(array, dtype=dtype, copy=None)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{where}: expected an array of shape {shape} convertible to {np.dtype(dtype).name}, "
            f"got {describe(value)}"
        ) from None


def check_shape(array: np.ndarray, expected: tuple[int | None, ...], where: str, shape: str) -> None:
    """Raise unless ``array.shape`` matches ``expected`` (``None`` matches any size)."""
    ok = array.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, array.shape))
    if not ok:
        raise InvalidInputError(f"{where}: expected shape {shape}, got {describe(array)}")


def check_finite(array: np.ndarray, where: str) -> None:
    if array.size and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise InvalidInputError(
            f"{where}: expected finite values, got {array[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        )


def check_xyxy(xyxy: np.ndarray, where: str) -> None:
    """(N, 4) boxes must be finite with x2 >= x1 and y2 >= y1."""
    check_finite(xyxy, where)
    bad = np.flatnonzero((xyxy[:, 2] < xyxy[:, 0]) | (xyxy[:, 3] < xyxy[:, 1]))
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(
            f"{where}: expected x2 >= x1 and y2 >= y1 (xyxy pixel corners), got {xyxy[i].tolist()} at index {i}"
        )


def as_xyxy(value: object, where: str) -> np.ndarray:
    """float32 ``(N, 4)`` boxes from anything array-like; ``[]`` means no boxes."""
    xyxy = as_array(value, np.float32, where, "(N, 4)")
    if xyxy.size == 0 and xyxy.ndim == 1:
        xyxy = xyxy.reshape(0, 4)
    check_shape(xyxy, (None, 4), where, "(N, 4)")
    check_xyxy(xyxy, where)
    return xyxy


def values_equal(a: object, b: object) -> bool:
    """Equality that compares arrays and images by value and recurses into containers."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        )
    if isinstance(a, Image.Image) or isinstance(b, Image.Image):
        # PIL's own == also compares ``info``, which a PNG round trip changes; pixels are what count.
        return (
            isinstance(a, Image.Image)
            and isinstance(b, Image.Image)
            and (a.mode, a.size) == (b.mode, b.size)
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return bool(a == b)


# An ndarray field: kept as numpy in Python, written with encode_array in JSON.
Array = Annotated[np.ndarray, PlainSerializer(encode_array, when_used="json")]


# --------------------------------------------------------------------------------------------
# Base model
# --------------------------------------------------------------------------------------------


def _as_input_error(model: type[Model], error: ValidationError) -> InvalidInputError:
    """Turn pydantic's ValidationError into the model's typed error, keeping our own message.

    Our validators raise InvalidInputError (a ValueError), which pydantic wraps; unwrap it, and
    narrow it to the model's error class (e.g. InvalidPromptError for prompts).
    """
    kind = model._error
    for item in error.errors():
        original = (item.get("ctx") or {}).get("error")
        if isinstance(original, kind):
            return original
        if isinstance(original, InvalidInputError):
            return kind(str(original))
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "input"
    if first["type"] == "missing":
        return kind(f"{model.__name__}.{where}: expected a value (required field), got none")
    return kind(f"{model.__name__}.{where}: {first['msg']}; got {describe(first.get('input'))}")


class Model(BaseModel):
    """Base of every SDK model: numpy-aware equality, typed errors instead of ValidationError."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    #: The error raised for bad input to this model.
    _error: ClassVar[type[InvalidInputError]] = InvalidInputError

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise _as_input_error(type(self), error) from None

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            values_equal(getattr(self, name), getattr(other, name)) for name in type(self).model_fields
        )

    def to_json(self, indent: int | None = None) -> str:
        """Lossless JSON: arrays as base64 raw bytes, masks as RLE, images as PNG."""
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Inverse of :meth:`to_json`."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            raise _as_input_error(cls, error) from None


class Result(Model):
    """Fields every result carries: the image it refers to and where it came from.

    Attributes:
        image_size: ``(width, height)`` of the original image in pixels.
        turn: index of the chat turn that produced the result, if known.
        route: the routing token that produced it, e.g. ``"[DET]"``, ``"[SEG]"``, ``"[POSE]"``.
        asked: the classes / expressions that were asked, so an empty result still says what
            was looked for.
    """

    image_size: tuple[int, int]
    turn: int | None = None
    route: str | None = None
    asked: list[str] = Field(default_factory=list)

    @field_validator("image_size", mode="before")
    @classmethod
    def _check_image_size(cls, value: object) -> tuple[int, int]:
        value = to_numpy(value)
        try:
            width, height = (int(v) for v in value)  # type: ignore[union-attr]
            ok = width > 0 and height > 0 and all(float(v) == int(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InvalidInputError(
                f"{cls.__name__}.image_size: expected (width, height) of two positive ints, got {describe(value)}"
            )
        return width, height

    @field_validator("asked", mode="before")
    @classmethod
    def _check_asked(cls, value: object) -> list[str]:
        return as_str_list(value, f"{cls.__name__}.asked")

    @property
    def width(self) -> int:
        return self.image_size[0]

    @property
    def height(self) -> int:
        return self.image_size[1]


def as_str_list(value: object, where: str) -> list[str]:
    """A list of strings from a list / tuple / 1-D array of strings."""
    value = to_numpy(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if (
        isinstance(value, str)
        or not isinstance(value, (list, tuple))
        or not all(isinstance(v, str) for v in value)
    ):
        raise InvalidInputError(f"{where}: expected a list of str, got {describe(value)}")
    return list(value)


# --------------------------------------------------------------------------------------------
# Indexing shared by Boxes, Masks, Poses and Images
# --------------------------------------------------------------------------------------------

Index = int | slice | Sequence[int] | Sequence[bool] | np.ndarray


def normalise_index(index: object, length: int, where: str) -> np.ndarray:
    """Any supported index as an int64 array of positions in ``[0, length)``.

    Supported: int (negative counts from the end), slice, bool mask of length N, int array/list.
    """
    if isinstance(index, (bool, np.bool_)):
        raise InvalidInputError(
            f"{where}[...]: expected int, slice, bool mask or int array, got {describe(index)}"
        )
    if isinstance(index, (int, np.integer)):
        i = int(index)
        if not -length <= i < length:
            raise IndexError(f"{where}[{i}]: index out of range for {length} items")
        return np.array([i % length], dtype=np.int64)
    if isinstance(index, slice):
        return np.arange(length, dtype=np.int64)[index]
    array = np.asarray(to_numpy(index))
    if array.dtype == bool:
        if array.shape != (length,):
            raise InvalidInputError(
                f"{where}[mask]: expected a bool mask of shape ({length},), got {describe(array)}"
            )
        return np.flatnonzero(array)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InvalidInputError(
            f"{where}[...]: expected int, slice, bool mask or 1-D int array, got {describe(array)}"
        )
    if ((array < -length) | (array >= length)).any():
        raise IndexError(f"{where}[...]: indices {array.tolist()} out of range for {length} items")
    return array.astype(np.int64) % max(length, 1)


class Indexable:
    """``len``, ``iter`` and ``[]`` for a model whose per-item fields are listed in ``_item_fields``.

    Each per-item field is an array whose first axis is the item axis, a list, or ``None``.
    Indexing always returns the same type (a single-item result for an int), so
    ``turn.boxes[2]`` can be annotated, exported or used as a visual prompt like any result.
    """

    _item_fields: ClassVar[tuple[str, ...]] = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: Index) -> Self:
        positions = normalise_index(index, len(self), type(self).__name__)
        return self._take(positions)

    def __iter__(self) -> Iterator[Self]:  # type: ignore[override]  # BaseModel iterates fields
        for i in range(len(self)):
            yield self._take(np.array([i]))

    def _take(self, positions: np.ndarray) -> Self:
        fields = {name: getattr(self, name) for name in type(self).model_fields}  # type: ignore[attr-defined]
        for name in self._item_fields:
            value = fields[name]
            if isinstance(value, np.ndarray):
                fields[name] = value[positions]
            elif isinstance(value, list):
                fields[name] = [value[i] for i in positions]
        return type(self)(**fields)


class Instances(Indexable, Result):
    """Per-instance results (Boxes, Masks, Poses): ``labels``, ``scores``, ``filter``, ``empty``."""

    labels: list[str]
    scores: Array

    @field_validator("labels", mode="before")
    @classmethod
    def _coerce_labels(cls, value: object) -> list[str]:
        return as_str_list(value, f"{cls.__name__}.labels")

    @field_validator("scores", mode="before")
    @classmethod
    def _coerce_scores(cls, value: object) -> np.ndarray:
        where = f"{cls.__name__}.scores"
        scores = as_array(value, np.float32, where, "(N,)")
        if scores.ndim == 0 or (scores.size == 0 and scores.ndim != 1):
            scores = scores.reshape(-1)  # a scalar for one item, or [] for none
        check_shape(scores, (None,), where, "(N,)")
        check_finite(scores, where)
        return scores

    def __len__(self) -> int:
        return len(self.labels)

    def filter(self, min_score: float | None = None, labels: str | Sequence[str] | None = None) -> Self:
        """Keep instances with ``score >= min_score`` and whose label is in ``labels``."""
        keep = np.ones(len(self), dtype=bool)
        if min_score is not None:
            keep &= self.scores >= np.float32(min_score)
        if labels is not None:
            wanted = {labels} if isinstance(labels, str) else set(labels)
            keep &= np.array([label in wanted for label in self.labels], dtype=bool)
        return self._take(np.flatnonzero(keep))

    @classmethod
    def empty(cls, image_size: tuple[int, int], asked: Sequence[str] = (), **fields: Any) -> Self:
        """A result with no instances that still records ``asked`` and the image size."""
        return cls(image_size=image_size, asked=list(asked), **cls._empty_fields(image_size, **fields))

    @classmethod
    def _empty_fields(cls, image_size: tuple[int, int], **fields: Any) -> dict[str, Any]:
        return {"labels": [], "scores": np.zeros(0, np.float32), **fields}

    def __repr__(self) -> str:
        names = sorted(set(self.labels))
        shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        extra = f", route={self.route!r}" if self.route else ""
        return f"{type(self).__name__}(n={len(self)}, labels=[{shown}], image_size={self.image_size}{extra})"

    __str__ = __repr__

    def _check_lengths(self, what: str, **fields: object) -> None:
        """Every per-item field has one entry per item; ``what`` names the item (e.g. "box")."""
        n = len(self)
        for name, value in fields.items():
            if value is not None and len(value) != n:  # type: ignore[arg-type]
                raise InvalidInputError(
                    f"{type(self).__name__}: expected {name} of length {n} (one per {what}), "
                    f"got {describe(value)}"
                )

    @staticmethod
    def _class_ids(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Class ids as positions in the sorted unique labels (what supervision expects)."""
        names = sorted(set(labels))
        lookup = {name: i for i, name in enumerate(names)}
        return np.array([lookup[label] for label in labels], dtype=int), names
