"""COCO and LLaVA files in and out: the project's scenes written as COCO, any local COCO detection /
segmentation / keypoint file or LLaVA conversation file read back as training :class:`Sample` s.

Coordinates follow COCO on disk (``bbox`` xywh pixels, RLE or polygon segmentations, keypoints as
flat ``x, y, v`` triples) and the package's convention in memory (boxes xyxy float32 pixels, masks
bool ``(N, H, W)``, keypoints ``(N, J, 3)``). Answers are the trained templates of
:mod:`visionllm2.model.templates`, with each route's query tokens taken from the ``Processor``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from .. import templates
from .. import tokens as T
from ..decoders.detection_loss import DetectionTarget
from ..decoders.pose_loss import PoseTarget
from ..errors import DatasetError, UnknownTaskError
from ..processor import ImageSlot, Message, Processor, Segment
from .figures import FIGURE_KEYPOINTS, FIGURE_SKELETONS, FigureScene
from .samples import Sample
from .shapes import Scene

COCO_TASKS = ("detect", "segment", "pose")


# ---------------------------------------------------------------------------------- writing
def _category_name(scene: Scene | FigureScene, item: Any) -> str:
    """ShapesWorld's classes are "colour kind" ("red circle"); domain objects and figures: the kind."""
    return item.kind if isinstance(scene, FigureScene) else item.name


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def scenes_to_coco(scenes: Sequence[Scene | FigureScene], image_dir: str | Path, file_prefix: str = "img") -> dict:
    """Write each scene's image as ``{file_prefix}{index:06d}.png`` under ``image_dir`` and return the
    COCO dict: images, annotations (``bbox`` xywh, ``area`` = mask pixels, ``iscrowd`` 0, RLE
    ``segmentation`` with str counts; figures add ``keypoints`` and ``num_keypoints``) and categories
    (ids 1… in name order; figure kinds carry ``keypoints`` and a 1-based ``skeleton``)."""
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    names = sorted({_category_name(scene, item) for scene in scenes
                    for item in (scene.figures if isinstance(scene, FigureScene) else scene.objects)})
    category_ids = {name: index + 1 for index, name in enumerate(names)}
    images, annotations = [], []
    for index, scene in enumerate(scenes):
        file_name = f"{file_prefix}{index:06d}.png"
        scene.image.save(image_dir / file_name)
        width, height = scene.image.size
        images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
        items = scene.figures if isinstance(scene, FigureScene) else scene.objects
        for item in items:
            x0, y0, x1, y1 = (float(v) for v in item.box)
            annotation = {"id": len(annotations) + 1, "image_id": index + 1,
                          "category_id": category_ids[_category_name(scene, item)],
                          "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(item.mask.sum()), "iscrowd": 0,
                          "segmentation": _rle(item.mask)}
            if isinstance(scene, FigureScene):
                annotation["keypoints"] = [float(v) for v in item.keypoints.reshape(-1)]
                annotation["num_keypoints"] = int((item.keypoints[:, 2] > 0).sum())
            annotations.append(annotation)
    categories = []
    for name, category_id in category_ids.items():
        category: dict[str, Any] = {"id": category_id, "name": name, "supercategory": name.split()[-1]}
        if name in FIGURE_KEYPOINTS:
            category["keypoints"] = list(FIGURE_KEYPOINTS[name])
            category["skeleton"] = [[a + 1, b + 1] for a, b in FIGURE_SKELETONS[name]]
        categories.append(category)
    return {"info": {"description": "visionllm2 synthetic scenes"}, "images": images,
            "annotations": annotations, "categories": categories}


def save_coco(data: dict, path: str | Path) -> Path:
    """Write a COCO dict as JSON (creating the folder) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------- reading
def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what}: expected a JSON file, got {str(path)!r}, which does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{what} {str(path)!r} is not valid JSON: {error}") from error


def _load_image(path: Path, source: str) -> Image.Image:
    """An RGB picture; 16-bit and float grayscale are scaled by their maximum to 8 bits first."""
    if not path.is_file():
        raise DatasetError(f"{source} names the image {str(path)!r}, which does not exist; check the image root")
    try:
        with Image.open(path) as opened:
            if opened.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                values = np.asarray(opened, dtype=np.float64)
                peak = values.max() if values.size and values.max() > 0 else 1.0
                return Image.fromarray(np.round(np.clip(values / peak, 0, 1) * 255).astype(np.uint8)).convert("RGB")
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"{source}: the image {str(path)!r} cannot be read ({error})") from error


def _decode_mask(segmentation: Any, height: int, width: int, annotation_id: Any) -> np.ndarray:
    """Polygons, uncompressed RLE (list counts) or compressed RLE (str counts) → bool ``(H, W)``."""
    try:
        if isinstance(segmentation, list):
            if not segmentation:
                raise ValueError("no polygon")
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        elif isinstance(segmentation, dict):
            rle = segmentation
        else:
            raise TypeError(f"unknown format {type(segmentation).__name__}")
        mask = mask_utils.decode(rle).astype(bool)
    except (ValueError, TypeError, KeyError) as error:
        raise DatasetError(f"annotation {annotation_id}: segmentation cannot be decoded ({error}); expected "
                           "polygons or an RLE dict with 'size' and 'counts'") from error
    if mask.shape != (height, width):
        raise DatasetError(f"annotation {annotation_id}: mask of shape {mask.shape}, expected {(height, width)}")
    return mask


def _index_coco(data: Any, path: str | Path) -> tuple[list[dict], dict[int, dict], dict[Any, list[dict]]]:
    """Check a COCO dict's structure: images, categories by id, and non-empty annotations per image."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                    "categories")):
        raise DatasetError(f"COCO file {str(path)!r}: expected an object with 'images', 'annotations' and "
                           "'categories' lists")
    try:
        categories = {int(c["id"]): c for c in data["categories"]}
        image_ids = {im["id"] for im in data["images"]}
        by_image: dict[Any, list[dict]] = {}
        for annotation in data["annotations"]:
            if annotation["image_id"] not in image_ids or int(annotation["category_id"]) not in categories:
                raise DatasetError(f"COCO file {str(path)!r}: annotation {annotation.get('id')} names image "
                                   f"{annotation['image_id']} / category {annotation['category_id']}, not in the file")
            if len(annotation["bbox"]) != 4 or not all(isinstance(v, (int, float)) for v in annotation["bbox"]):
                raise ValueError(f"annotation {annotation.get('id')}: bbox {annotation['bbox']!r} is not 4 numbers")
            by_image.setdefault(annotation["image_id"], []).append(annotation)
        for image in data["images"]:
            if not isinstance(image["file_name"], str) or int(image["width"]) < 1 or int(image["height"]) < 1:
                raise ValueError(f"image {image.get('id')}: expected a file_name and a positive width and height")
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"COCO file {str(path)!r}: an entry lacks a field or has a bad value ({error!r})") from error
    return data["images"], categories, by_image


def _xyxy(annotation: dict) -> np.ndarray:
    x, y, w, h = (float(v) for v in annotation["bbox"])
    return np.array([x, y, x + w, y + h], np.float32)


def _user(question: str) -> Message:
    return Message("user", [ImageSlot(0), "\n" + question])


def load_coco_samples(annotation_json: str | Path, image_root: str | Path, task: str = "detect",
                      classes_per_sample: int | None = None, seed: int = 0, *, processor: Processor) -> list[Sample]:
    """Samples from a local COCO detection / segmentation / keypoint file, one an image (pose: one an
    image and keypoint category), in order of the file's images.

    detect / segment: the question asks the image's classes in a random order, plus a few absent
    ones (negatives: "no dog found" is a trained answer too); ``classes_per_sample`` fixes how many
    are asked (sampling among present ones when there are more). The answer names one ``[DET]``
    (detect) or ``[SEG]`` (segment) group per asked class; targets ``{"gdino": DetectionTarget}`` with
    boxes xyxy float32 ``(N, 4)``, labels = index into the asked classes, masks bool ``(N, H, W)`` for
    segment, None for detect. pose: the category and its keypoint names (underscores read as spaces)
    as ``[POSE]`` groups; ``{"unipose": PoseTarget(num_objects=1, boxes, labels, keypoints (N, J, 3))}``.
    Crowd regions and boxes without area are left out. ``seed`` makes class sampling repeatable.
    Every image is read into memory here (as RGB; 16-bit grayscale scaled by its maximum).
    """
    if task not in COCO_TASKS:
        raise UnknownTaskError(f"COCO task: expected one of {COCO_TASKS}, got {task!r}")
    if classes_per_sample is not None and classes_per_sample < 1:
        raise DatasetError(f"classes_per_sample: expected None or at least 1, got {classes_per_sample!r}")
    images, categories, by_image = _index_coco(_read_json(annotation_json, "COCO file"), annotation_json)
    names = {category_id: str(c["name"]) for category_id, c in categories.items()}
    if task == "pose" and not any(c.get("keypoints") for c in categories.values()):
        raise DatasetError(f"COCO file {str(annotation_json)!r}: task 'pose' needs categories with 'keypoints'")
    samples = []
    for index, image_info in enumerate(images):
        annotations = [a for a in by_image.get(image_info["id"], [])
                       if not a.get("iscrowd") and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        crowd_only = {names[int(a["category_id"])] for a in by_image.get(image_info["id"], [])} - {
            names[int(a["category_id"])] for a in annotations}
        if task == "pose" and not any(categories[int(a["category_id"])].get("keypoints") for a in annotations):
            continue
        source = f"COCO file {str(annotation_json)!r}, image {image_info['id']}"
        image = _load_image(Path(image_root) / image_info["file_name"], source)
        width, height = int(image_info["width"]), int(image_info["height"])
        if image.size != (width, height):
            raise DatasetError(f"{source}: the file says {width}×{height}, the picture is {image.size[0]}×{image.size[1]}")
        rng = np.random.default_rng((seed, index))
        meta = {"image_id": image_info["id"], "file_name": image_info["file_name"]}
        if task == "pose":
            samples += _pose_samples(annotations, categories, image, meta, processor)
            continue
        present = list(dict.fromkeys(names[int(a["category_id"])] for a in annotations))
        absent = [n for n in dict.fromkeys(names.values()) if n not in present and n not in crowd_only]
        asked = _ask(rng, present, absent, classes_per_sample)
        if not asked:
            continue
        kept = [a for a in annotations if names[int(a["category_id"])] in asked]
        masks = None
        if task == "segment":
            for a in kept:
                if "segmentation" not in a:
                    raise DatasetError(f"{source}: annotation {a.get('id')} has no segmentation; task 'segment' needs one")
            masks = np.stack([_decode_mask(a["segmentation"], height, width, a.get("id")) for a in kept]) if kept \
                else np.zeros((0, height, width), bool)
        target = DetectionTarget(
            boxes=np.stack([_xyxy(a) for a in kept]) if kept else np.zeros((0, 4), np.float32),
            labels=np.array([asked.index(names[int(a["category_id"])]) for a in kept], np.int64),
            masks=masks)
        route = T.DET if task == "detect" else T.SEG
        question = templates.detect_question(asked) if task == "detect" else templates.segment_question(asked)
        answer = templates.group_answer(processor, route, asked)
        samples.append(Sample(task, [_user(question), Message("assistant", answer)], [image],
                              targets={"gdino": target}, meta={**meta, "classes": asked}))
    return samples


def _ask(rng: np.random.Generator, present: list[str], absent: list[str], count: int | None) -> list[str]:
    """The classes one question asks, shuffled: present ones and a few absent ones."""
    if count is None:
        negatives = int(rng.integers(0 if present else 1, min(3, len(absent)) + 1)) if absent else 0
        chosen = present + [absent[i] for i in rng.permutation(len(absent))[:negatives]]
    elif len(present) >= count:
        chosen = [present[i] for i in rng.permutation(len(present))[:count]]
    else:
        chosen = present + [absent[i] for i in rng.permutation(len(absent))[:count - len(present)]]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _pose_samples(annotations: list[dict], categories: dict[int, dict], image: Image.Image, meta: dict,
                  processor: Processor) -> list[Sample]:
    """One ``[POSE]`` sample per keypoint category in the image: its class, then its keypoint names."""
    samples = []
    for category_id in dict.fromkeys(int(a["category_id"]) for a in annotations):
        category = categories[category_id]
        keypoint_names = [str(k).replace("_", " ") for k in category.get("keypoints") or []]
        if not keypoint_names:
            continue
        mine = [a for a in annotations if int(a["category_id"]) == category_id]
        joints = len(keypoint_names)
        keypoints = []
        for a in mine:
            flat = np.asarray(a.get("keypoints") or [0.0] * 3 * joints, np.float32)
            if flat.size != 3 * joints:
                raise DatasetError(f"annotation {a.get('id')}: {flat.size} keypoint values, expected 3 × {joints} "
                                   f"for category {category['name']!r}")
            keypoints.append(flat.reshape(joints, 3))
        target = PoseTarget(num_objects=1, boxes=np.stack([_xyxy(a) for a in mine]),
                            labels=np.zeros(len(mine), np.int64), keypoints=np.stack(keypoints))
        name = str(category["name"])
        answer = templates.group_answer(processor, T.POSE, [name, *keypoint_names])
        messages = [_user(templates.pose_question([name], keypoint_names)), Message("assistant", answer)]
        samples.append(Sample("pose", messages, [image], targets={"unipose": target},
                              meta={**meta, "classes": [name], "keypoint_names": keypoint_names}))
    return samples


# ---------------------------------------------------------------------------------- LLaVA
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
IMAGE_TAG = "<image>"


def load_llava_samples(json_path: str | Path, image_root: str | Path) -> list[Sample]:
    """``"chat"`` samples from a LLaVA conversation file: a list of ``{"image": path relative to
    image_root (or a list of them, or absent), "conversations": [{"from": "human" | "gpt", "value":
    text}, …]}``. Each ``<image>`` in the text becomes ``ImageSlot(i)`` for the i-th image; an image
    that the text never mentions goes before the first human turn, as LLaVA does. Images are read
    into memory as RGB."""
    data = _read_json(json_path, "LLaVA file")
    if not isinstance(data, list):
        raise DatasetError(f"LLaVA file {str(json_path)!r}: expected a list of conversations, got {type(data).__name__}")
    samples = []
    for index, item in enumerate(data):
        where = f"LLaVA file {str(json_path)!r}, entry {index}"
        if not isinstance(item, dict) or not isinstance(item.get("conversations"), list) or not item["conversations"]:
            raise DatasetError(f"{where}: expected an object with a non-empty 'conversations' list")
        files = item.get("image") or []
        files = [files] if isinstance(files, str) else files
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise DatasetError(f"{where}: 'image' must be a path or a list of paths, got {item.get('image')!r}")
        images = [_load_image(Path(image_root) / f, where) for f in files]
        messages, tags = [], 0
        for turn in item["conversations"]:
            if not isinstance(turn, dict) or turn.get("from") not in _ROLES or not isinstance(turn.get("value"), str):
                raise DatasetError(f"{where}: each turn needs 'from' (one of {sorted(_ROLES)}) and a 'value' text, "
                                   f"got {turn!r:.120}")
            role = _ROLES[turn["from"]]
            segments: list[Segment] = []
            for part_index, part in enumerate(turn["value"].split(IMAGE_TAG)):
                if part_index:
                    segments.append(ImageSlot(tags))
                    tags += 1
                if part:
                    segments.append(part)
            if role == "assistant" and any(isinstance(s, ImageSlot) for s in segments):
                raise DatasetError(f"{where}: an answer contains {IMAGE_TAG}; only human turns may show images")
            messages.append(Message(role, segments))
        if tags == 0 and images:
            first = next((m for m in messages if m.role == "user"), None)
            if first is None:
                raise DatasetError(f"{where}: images but no human turn to show them in")
            first.segments[:0] = [*(ImageSlot(i) for i in range(len(images))), "\n"]
        elif tags != len(images):
            raise DatasetError(f"{where}: the text has {tags} {IMAGE_TAG} tags but the entry names {len(images)} images")
        if not any(m.role == "assistant" for m in messages):
            raise DatasetError(f"{where}: no 'gpt' turn to learn from")
        samples.append(Sample("chat", messages, images, meta={"id": item.get("id"), "image": item.get("image")}))
    return samples
