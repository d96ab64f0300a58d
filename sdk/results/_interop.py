"""Helpers for the outside formats the results speak: supervision, COCO JSON, and PIL drawing.

supervision is imported lazily: it pulls in scipy and takes close to a second, and most users of
``import visionllm2.sdk`` never draw or convert.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from visionllm2.model.errors import InvalidImageError, InvalidInputError, describe


@functools.cache
def supervision() -> ModuleType:
    """Import supervision on first use (cached: IoU helpers call this per pair, and changing the
    warning filters on every call is neither free nor thread-safe).

    Without OpenCV installed supervision warns once that it uses its NumPy fallback; this
    package does not depend on OpenCV on purpose, so that warning is noise to our users.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*OpenCV.*", category=UserWarning)
        import supervision as sv
    return sv


#: Labels below this text scale are unreadable; supervision's own rule gives 0.13 at 128².
MIN_TEXT_SCALE = 0.25


def box_annotator(image_size: tuple[int, int]) -> Any:
    """supervision's box annotator with lines sized to the picture: 1 px below 256 px a side, else
    supervision's optimal thickness (the default 2 px boxes swamp a 128² scene)."""
    sv = supervision()
    thickness = 1 if min(image_size) < 256 else sv.calculate_optimal_line_thickness(tuple(image_size))
    return sv.BoxAnnotator(thickness=thickness)


def label_annotator(image_size: tuple[int, int]) -> Any:
    """supervision's label annotator with text sized to the picture (its optimal scale, at least
    :data:`MIN_TEXT_SCALE`); the default scale 0.5 writes labels as wide as a 128² scene."""
    sv = supervision()
    scale = max(MIN_TEXT_SCALE, sv.calculate_optimal_text_scale(tuple(image_size)))
    return sv.LabelAnnotator(text_scale=scale, text_thickness=1, text_padding=max(2, round(10 * scale)))


# --------------------------------------------------------------------------------------------
# supervision: what its objects carry, read the same way for Boxes, Masks and Poses
# --------------------------------------------------------------------------------------------


def sv_confidence(detections: Any, n: int) -> np.ndarray:
    """Scores from ``confidence``; detections without one (ground truth) count as certain."""
    confidence = getattr(detections, "confidence", None)
    return np.ones(n, np.float32) if confidence is None else np.asarray(confidence, np.float32)


def sv_class_names(detections: Any, n: int) -> list[str]:
    names = (getattr(detections, "data", None) or {}).get("class_name")
    if names is not None:
        return [str(name) for name in names]
    class_id = getattr(detections, "class_id", None)
    if class_id is not None:
        return [str(int(c)) for c in class_id]
    if n:
        raise InvalidInputError(
            "from_supervision: expected data['class_name'] or class_id to name the objects, got neither"
        )
    return []


def sv_ids(detections: Any) -> list[str] | None:
    ids = (getattr(detections, "data", None) or {}).get("id")
    return None if ids is None else [str(i) for i in ids]


# --------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------


def xyxy_to_xywh(xyxy: np.ndarray) -> list[list[float]]:
    """COCO ``bbox`` is ``[x, y, width, height]`` in pixels; Python floats for plain JSON."""
    xywh = xyxy.astype(np.float64)
    xywh[:, 2:] -= xywh[:, :2]
    return xywh.tolist()


def xywh_to_xyxy(bboxes: Sequence[Sequence[float]]) -> np.ndarray:
    xyxy = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    xyxy[:, 2:] += xyxy[:, :2]
    return xyxy.astype(np.float32)


def category_table(
    labels: Sequence[str], asked: Sequence[str], category_ids: Mapping[str, int] | None
) -> dict[str, int]:
    """Label → COCO category id.

    Without ``category_ids`` the ids are 1.. over ``asked`` (in order) then any other label in
    order of first appearance, so the same question always gives the same ids.
    With ``category_ids`` every label must be in it: silently dropping a class would skew metrics.
    """
    if category_ids is None:
        names = list(dict.fromkeys([*asked, *labels]))
        return {name: i + 1 for i, name in enumerate(names)}
    missing = sorted(set(labels) - set(category_ids))
    if missing:
        raise InvalidInputError(
            f"to_coco: expected every label in category_ids, got labels {missing} missing "
            f"from category_ids with keys {sorted(category_ids)}"
        )
    return {str(name): int(i) for name, i in category_ids.items()}


def coco_document(
    result: Any,
    image_id: int,
    table: Mapping[str, int],
    annotations: list[dict[str, Any]],
    category_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A COCO dataset dict for one image; ``info`` keeps the provenance for a lossless return.

    ``category_extra`` goes into every category and into ``info`` too, so it survives a result
    with no categories at all (nothing asked, nothing found).
    """
    categories = [{"id": i, "name": name, **(category_extra or {})} for name, i in table.items()]
    return {
        "info": {
            "asked": list(result.asked),
            "turn": result.turn,
            "route": result.route,
            **(category_extra or {}),
        },
        "images": [{"id": image_id, "width": result.image_size[0], "height": result.image_size[1]}],
        "annotations": annotations,
        "categories": categories,
    }


def coco_image(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    image_id: int | None,
    image_size: tuple[int, int] | None,
) -> tuple[int | None, tuple[int, int]]:
    """The image id and (width, height) to read from a COCO dict or a bare annotation list.

    Without ``image_id`` the data must refer to a single image; with several, say which one.
    """
    images = list(data.get("images") or []) if isinstance(data, Mapping) else []
    if image_id is None:
        annotations = data if not isinstance(data, Mapping) else data.get("annotations") or []
        ids = {im["id"] for im in images} | {a["image_id"] for a in annotations if "image_id" in a}
        if len(ids) > 1:
            raise InvalidInputError(
                f"from_coco: expected data for one image or image_id=, got {len(ids)} image ids "
                f"{sorted(ids, key=str)[:10]}"
            )
        image_id = next(iter(ids), None)
    if image_size is None:
        entry = next((im for im in images if image_id is None or im["id"] == image_id), None)
        if entry is None:
            raise InvalidInputError(
                f"from_coco: expected an 'images' entry for image_id {image_id} or image_size=, got "
                f"{len(images)} images"
            )
        image_size = (int(entry["width"]), int(entry["height"]))
    return image_id, image_size


def coco_annotations(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]], image_id: int | None
) -> list[dict[str, Any]]:
    """The annotations of one image, from a COCO dict or a bare list (as ``loadRes`` takes)."""
    annotations = data if isinstance(data, Sequence) else data.get("annotations", [])
    return [dict(a) for a in annotations if image_id is None or a.get("image_id", image_id) == image_id]


def coco_labels(data: Mapping[str, Any], annotations: Sequence[Mapping[str, Any]]) -> list[str]:
    names = (
        {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
        if isinstance(data, Mapping)
        else {}
    )
    return [names.get(int(a["category_id"]), str(a["category_id"])) for a in annotations]


def coco_provenance(data: Any, image_size: tuple[int, int]) -> dict[str, Any]:
    info = (data.get("info") or {}) if isinstance(data, Mapping) else {}
    return {
        "image_size": image_size,
        "asked": list(info.get("asked") or []),
        "turn": info.get("turn"),
        "route": info.get("route"),
    }


def coco_ids(annotations: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """Our string instance ids travel as ``instance_id`` (COCO's own ``id`` must be an int)."""
    ids = [a.get("instance_id") for a in annotations]
    return [str(i) for i in ids] if ids and all(i is not None for i in ids) else None


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def scene(image: object, image_size: tuple[int, int], where: str) -> Image.Image:
    """An RGB copy of ``image`` (PIL or HxWx3 uint8 array) checked against the result's size."""
    if isinstance(image, np.ndarray):
        try:
            image = Image.fromarray(image)
        except (TypeError, ValueError):
            raise InvalidImageError(
                f"{where}: expected a PIL image or an (H, W, 3) uint8 array, got {describe(image)}"
            ) from None
    if not isinstance(image, Image.Image):
        raise InvalidImageError(
            f"{where}: expected a PIL image or an (H, W, 3) uint8 array, got {describe(image)}"
        )
    if image.size != tuple(image_size):
        raise InvalidImageError(
            f"{where}: expected an image of size (width, height) {tuple(image_size)} (the image the "
            f"result refers to), got {image.size}"
        )
    # The annotators draw in place; never touch the caller's picture.
    return image.convert("RGB").copy()


def label_texts(labels: Sequence[str], scores: np.ndarray) -> list[str]:
    return [f"{label} {score:.2f}" for label, score in zip(labels, scores)]
