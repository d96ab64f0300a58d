"""Short texts that tell an LLM what a tool produced: counts, labels, scores and the ids to use next."""

from __future__ import annotations

from collections import Counter

from visionllm2.sdk import Boxes, Images, Masks, Poses, Result

_SHOWN = 6  # labels listed before "…"


def _labels(result: Boxes | Masks | Poses) -> str:
    counts = Counter(result.labels)
    parts = [f"{label} ×{n}" if n > 1 else label for label, n in counts.most_common(_SHOWN)]
    return ", ".join(parts) + (", …" if len(counts) > _SHOWN else "")


def _scores(result: Boxes | Masks | Poses) -> str:
    low, high = float(result.scores.min()), float(result.scores.max())
    return f"score {high:.2f}" if len(result) == 1 else f"scores {low:.2f}–{high:.2f}"


def summarise(rid: str, result: Result, image_id: str | None = None) -> str:
    """One line about ``result`` under id ``rid``: what it holds and how to refer to it."""
    where = f" on {image_id}" if image_id else ""
    size = f"{result.width}×{result.height}"
    if isinstance(result, Images):
        captions = "; ".join(dict.fromkeys(c for c in result.captions if c))
        region = result.settings.get("region")
        inside = f", changed only inside {region}" if region else ""
        return (f"{rid}: {len(result)} image(s) {size}{inside}"
                + (f" for {captions!r}" if captions else "") + f". Look at it with image_id='{rid}'.")
    if len(result) == 0:
        asked = ", ".join(result.asked[:_SHOWN]) + (", …" if len(result.asked) > _SHOWN else "")
        return f"{rid}: nothing found for [{asked}]{where} ({size}). Try other names or another image."
    one, many = {Boxes: ("box", "boxes"), Masks: ("mask", "masks"), Poses: ("pose", "poses")}[type(result)]
    text = f"{rid}: {len(result)} {one if len(result) == 1 else many}"
    text += f"{where} ({size}): {_labels(result)} ({_scores(result)})"
    if isinstance(result, Masks):
        text += f", {int(result.masks.sum())} pixels in all"
    if isinstance(result, Poses):
        text += f", {len(result.keypoint_names)} keypoints each"
    last = len(result) - 1
    items = f"'{rid}[0]'" if last == 0 else f"'{rid}[0]' … '{rid}[{last}]'"
    return text + f". Use '{rid}' for all, {items} for one."
