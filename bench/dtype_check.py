"""Every verb in float32 and in a half dtype on one device: do they agree, and what does each cost?

CUDA loads models in bfloat16 by default (``Session.from_pretrained``); this prints, per verb, the
time of a warm turn in each dtype, their ratio, and how far the half-precision answer lies from the
float32 one on the same picture:

- boxes: IoU of each float32 box with the half-precision box of the same rank (mean);
- masks: mask IoU, the same way; poses: mean keypoint distance in pixels;
- pictures: mean absolute difference of the 8-bit pixels; text: whether the words are equal.

On CUDA it also prints each dtype's peak memory. Run: ``python bench/dtype_check.py [--model shapes]
[--device cuda] [--dtype bfloat16] [--repeats 3]``. Times are best of ``--repeats`` within one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from visionllm2.recipes.demo import demo_inputs, edit_instruction
from visionllm2.recipes.evaluate import box_iou, mask_iou
from visionllm2.sdk import CapabilityError, Session

Verb = Callable[[Session], object]


def verbs() -> dict[str, Verb]:
    """The demo's turns, each on its own picture so that it can run alone in a fresh conversation."""
    scene, classes, figure, kind, keypoints = demo_inputs()
    return {
        "detect": lambda s: s.detect(classes, image=scene),
        "segment": lambda s: s.segment(classes, image=scene),
        "ground": lambda s: s.ground(classes[0], image=scene),
        "interactive": lambda s: s.segment(prompts=[(40.0, 40.0)], image=scene),
        "ask": lambda s: s.ask("How many shapes are there?", image=scene),
        "pose": lambda s: s.pose([kind], keypoints=keypoints, image=figure),
        "generate": lambda s: s.generate("blue square in the centre", seed=0),
        "edit": lambda s: s.edit(edit_instruction(classes[0]), image=scene, seed=0),
    }


def run(model: str, device: str, dtype: str, repeats: int) -> tuple[dict[str, object], dict[str, float], float | None]:
    """Each verb's last turn and best time in seconds (``nan``: the model lacks it), and peak MiB on CUDA."""
    session = Session.from_pretrained(model, device=device, dtype=dtype, max_new_tokens=16)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    turns, seconds = {}, {}
    for name, verb in verbs().items():
        best = float("inf")
        for _ in range(repeats + 1):  # the first run warms up (kernels, caches)
            session.reset()
            start = time.perf_counter()
            try:
                turn = verb(session)
            except CapabilityError:
                turn = None
                break
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        turns[name], seconds[name] = turn, best if turn is not None else float("nan")
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return turns, seconds, peak


def agreement(full, half) -> str:
    """How far the half-precision turn lies from the float32 one (see the module docstring)."""
    if full is None or half is None:
        return "–"
    result, other = (full.results[0], half.results[0]) if full.results else (None, None)
    if result is None:
        return "same text" if full.text == half.text else "other text"
    if len(result) == 0 or len(other) == 0:
        return f"{len(result)} vs {len(other)} found"
    count = min(len(result), len(other))
    if result.kind == "boxes":
        value = np.mean([box_iou(result.xyxy[i], other.xyxy[i]) for i in range(count)])
        return f"box IoU {value:.3f}" + ("" if len(result) == len(other) else f" ({len(result)} vs {len(other)})")
    if result.kind == "masks":
        value = np.mean([mask_iou(result.masks[i], other.masks[i]) for i in range(count)])
        return f"mask IoU {value:.3f}" + ("" if len(result) == len(other) else f" ({len(result)} vs {len(other)})")
    if result.kind == "poses":
        shift = np.linalg.norm(result.keypoints[:count, :, :2] - other.keypoints[:count, :, :2], axis=-1).mean()
        return f"keypoints {shift:.2f} px apart"
    difference = np.abs(np.asarray(result.images[0], float) - np.asarray(other.images[0], float)).mean()
    return f"pixels {difference:.1f} / 255 apart"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes", help="a model directory or preset (default: shapes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", help="the half dtype to compare: bfloat16 or float16")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    full, full_seconds, full_peak = run(args.model, args.device, "float32", args.repeats)
    half, half_seconds, half_peak = run(args.model, args.device, args.dtype, args.repeats)
    table = Table(title=f"{args.model} on {args.device}: float32 and {args.dtype}, a warm turn each (best of "
                        f"{args.repeats})")
    for column in ("verb", "float32 ms", f"{args.dtype} ms", "ratio", f"{args.dtype} vs float32"):
        table.add_column(column, justify="left" if column in ("verb", f"{args.dtype} vs float32") else "right")
    for name in full:
        a, b = full_seconds[name] * 1000, half_seconds[name] * 1000
        table.add_row(name, f"{a:.0f}", f"{b:.0f}", f"{b / a:.2f}" if np.isfinite(a) and np.isfinite(b) else "–",
                      agreement(full[name], half[name]))
    Console().print(table)
    if full_peak is not None:
        print(f"peak memory: float32 {full_peak:.0f} MiB, {args.dtype} {half_peak:.0f} MiB")


if __name__ == "__main__":
    main()
