"""Pictures a second, one fresh conversation at a time against ``BatchPredictor`` batches.

A folder of pictures is what the recipes and ``visionllm2 eval`` go through: each picture its own
one-turn conversation. For each verb this prints pictures a second one at a time (a fresh
``Session`` per picture, as the recipes run them) and with ``BatchPredictor`` at each batch size,
the ratio to one at a time, and whether the batched answers agree with the one-at-a-time ones (the
largest box-corner difference in pixels, and how many texts differ). On CUDA it also prints each
batch size's peak memory.

Run: ``python bench/batch_throughput.py [--model shapes] [--device cuda] [--dtype bfloat16]
[--pictures 32] [--batch-sizes 1,4,8,16] [--verbs detect,ask] [--recipes 16]``. ``--recipes N`` also
times each recipe over N generated domain pictures at each batch size. The ratios are within one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from visionllm2.model.data.figures import FIGURE_KEYPOINTS, render_figures
from visionllm2.model.data.shapes import render_scene
from visionllm2.sdk import Session, Turn
from visionllm2.sdk.batch import BatchPredictor

VERBS = ("detect", "segment", "ground", "interactive", "pose", "ask", "generate")


def requests(verb: str, count: int) -> tuple[Callable[[Session, int], Turn], Callable[[BatchPredictor, int], list[Turn]]]:
    """Held-out pictures (odd seeds) for ``verb``, the call for picture i alone, and the batched call
    over the first n."""
    if verb == "pose":
        pictures = [render_figures(2 * i + 1, kind="person").image for i in range(count)]
        names = list(FIGURE_KEYPOINTS["person"])
        return (lambda s, i: s.pose(["person"], keypoints=names, image=pictures[i]),
                lambda b, n: b.pose(["person"], images=pictures[:n], keypoints=names))
    if verb == "generate":
        captions = [f"{c} {s} in the centre" for c, s in zip(("red", "blue", "green", "yellow") * count,
                                                              ("circle", "square", "triangle") * count)][:count]
        return (lambda s, i: s.generate(captions[i], seed=i, num_inference_steps=10),
                lambda b, n: b.generate(captions[:n], seed=0, num_inference_steps=10))
    scenes = [render_scene(2 * i + 1) for i in range(count)]
    pictures = [scene.image for scene in scenes]
    named = [scene.objects[0].name for scene in scenes]
    calls = {
        "detect": (lambda s, i: s.detect(["red circle", "blue square"], image=pictures[i]),
                   lambda b, n: b.detect(["red circle", "blue square"], images=pictures[:n])),
        "segment": (lambda s, i: s.segment(["red circle", "blue square"], image=pictures[i]),
                    lambda b, n: b.segment(["red circle", "blue square"], images=pictures[:n])),
        "ground": (lambda s, i: s.ground(named[i], image=pictures[i]), lambda b, n: b.ground(named[:n], images=pictures[:n])),
        "interactive": (lambda s, i: s.segment(prompts=[(64.0, 64.0)], image=pictures[i]),
                        lambda b, n: b.segment(images=pictures[:n], prompts=[[(64.0, 64.0)]] * n)),
        "ask": (lambda s, i: s.ask("How many shapes are there?", image=pictures[i]),
                lambda b, n: b.ask("How many shapes are there?", images=pictures[:n])),
    }
    return calls[verb]


def largest_box_difference(batched: list[Turn], alone: list[Turn]) -> float:
    worst = 0.0
    for got, expected in zip(batched, alone):
        for a, b in zip(got.results, expected.results):
            boxes = getattr(a, "xyxy", None) if a.kind == "boxes" else getattr(a, "boxes", None)
            other = getattr(b, "xyxy", None) if b.kind == "boxes" else getattr(b, "boxes", None)
            if boxes is not None and other is not None and len(boxes) and boxes.shape == other.shape:
                worst = max(worst, float(np.abs(boxes - other).max()))
    return worst


def measure(model, verb: str, count: int, sizes: list[int], cuda: bool) -> list[list[str]]:
    alone_call, batched_call = requests(verb, count)
    alone_call(Session(model, max_new_tokens=16), 0)  # warm up
    start = time.perf_counter()
    alone = [alone_call(Session(model, max_new_tokens=16), i) for i in range(count)]
    base = count / (time.perf_counter() - start)
    rows = [[verb, "one at a time", f"{base:.1f}", "1.00", "", ""]]
    for size in sizes:
        predictor = BatchPredictor(model, batch_size=size, max_new_tokens=16)
        batched_call(predictor, size)  # warm up at this size
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        turns = batched_call(predictor, count)
        if cuda:
            torch.cuda.synchronize()
        rate = count / (time.perf_counter() - start)
        texts = sum(a.text != b.text for a, b in zip(turns, alone))
        memory = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if cuda else ""
        rows.append([verb, f"batch {size}", f"{rate:.1f}", f"{rate / base:.2f}",
                     f"{largest_box_difference(turns, alone):.4f} px, {texts} texts differ", memory])
    return rows


def recipe_runs(session: Session, count: int) -> dict[str, Callable[[int], object]]:
    """Each recipe over ``count`` generated domain pictures (a folder's worth) at a given batch size."""
    from visionllm2.model.data.domains import render_domain
    from visionllm2.recipes.detect_segment_edit import detect_segment_edit_many
    from visionllm2.recipes.in_context import in_context
    from visionllm2.recipes.inspection import inspect_parts
    from visionllm2.recipes.medical import measure_structures
    from visionllm2.recipes.remote_sensing import map_objects
    from visionllm2.sdk import Box

    parts = [render_domain("industrial", 2 * i + 1).image for i in range(count)]
    scans = [render_domain("medical", 2 * i + 1).image for i in range(count)]
    city = render_domain("remote_sensing", 1, size=64 * (count + 1)).image  # (count + 1)² tiles of 128 / 64
    return {
        "inspection (detect → segment)": lambda b: inspect_parts(session, parts, ["scratch", "dent"], 0.05, batch_size=b),
        "medical": lambda b: measure_structures(session, scans, ["lesion", "liver"], 0.7, batch_size=b),
        "in-context (2 examples)": lambda b: in_context(session, [(parts[0], Box(10, 10, 60, 60)),
                                                                  (parts[1], Box(20, 20, 80, 70))], parts, batch_size=b),
        "remote sensing (tiles)": lambda b: map_objects(session, city, ["building"], tile_size=128, overlap=64,
                                                        batch_size=b),
        "detect → segment → edit": lambda b: detect_segment_edit_many(
            session, parts, ["scratch", "dent"], "make it red", edit_options={"seed": 0, "num_inference_steps": 10},
            batch_size=b),
    }


def measure_recipes(session: Session, count: int, sizes: list[int]) -> list[list[str]]:
    rows = []
    for name, run in recipe_runs(session, count).items():
        run(1)  # warm up
        seconds = {}
        for size in [1, *sizes]:
            start = time.perf_counter()
            run(size)
            seconds[size] = time.perf_counter() - start
        rows.append([name, f"{seconds[1]:.1f}", *[f"×{seconds[1] / seconds[size]:.2f}" for size in sizes]])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--pictures", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--verbs", default=",".join(VERBS))
    parser.add_argument("--recipes", type=int, default=0, metavar="N",
                        help="also time each recipe over N generated pictures at the batch sizes")
    args = parser.parse_args()
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    verbs = [v for v in args.verbs.split(",") if v]
    unknown = sorted(set(verbs) - set(VERBS))
    if unknown:
        parser.error(f"--verbs: unknown {unknown}; expected some of {list(VERBS)}")
    model = Session.from_pretrained(args.model, device=args.device, dtype=args.dtype).model
    cuda = model.device.type == "cuda"
    table = Table(title=f"{args.model} on {model.device} ({str(model.dtype).removeprefix('torch.')}): "
                        f"{args.pictures} pictures per verb")
    for column in ("verb", "how", "pictures / s", "× one at a time", "agreement", "peak MiB"):
        table.add_column(column)
    for verb in verbs:
        if verb == "generate" and "[GEN]" not in model.decoder_of_route:
            continue
        for row in measure(model, verb, args.pictures, sizes, cuda):
            table.add_row(*row)
    Console(width=200).print(table)
    if args.recipes:
        recipes = Table(title=f"recipes over {args.recipes} pictures: seconds one at a time, and speed-up per batch size")
        for column in ("recipe", "batch 1 (s)", *[f"batch {size}" for size in sizes]):
            recipes.add_column(column)
        for row in measure_recipes(Session(model), args.recipes, sizes):
            recipes.add_row(*row)
        Console(width=200).print(recipes)


if __name__ == "__main__":
    main()
