"""Recipe: in-context visual prompts — mark one example on a reference picture, find its kind in others.

    python examples/recipe_in_context.py [MODEL] [--out recipe_in_context_out]

The reference and targets are generated industrial parts: the example is the box round a defect
on the reference; the targets are other parts. MODEL defaults to ``shapes`` (the shipped ShapesWorld
model); ``tiny`` runs random weights. On the released 7B weights: ``visionllm2 convert OFFICIAL_DIR
vlm2-7b``, then ``python examples/recipe_in_context.py vlm2-7b``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visionllm2.model.data.domains import render_domain
from visionllm2.recipes.in_context import in_context
from visionllm2.sdk import Box, Session

MODEL = "shapes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=MODEL, help="model directory or preset (default: shapes)")
    parser.add_argument("--out", type=Path, default=Path("recipe_in_context_out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    reference = next(s for s in (render_domain("industrial", seed) for seed in range(1, 100))
                     if any(o.kind == "hole" for o in s.objects))
    hole = next(o for o in reference.objects if o.kind == "hole")
    targets = [render_domain("industrial", seed).image for seed in (201, 203, 205)]
    session = Session.from_pretrained(args.model)
    result = in_context(session, [(reference.image, Box(*hole.box.tolist()))], targets, label="hole")

    reference.image.save(args.out / "reference.png")
    for k, (item, image) in enumerate(zip(result.items, targets)):
        item.annotate(image).save(args.out / f"target{k}.png")
    (args.out / "result.json").write_text(result.to_json(indent=1))
    found = [len(item.masks) for item in result.items]
    print(f"{len(result.items)} targets, {found} holes found; files in {args.out.resolve()}")


if __name__ == "__main__":
    main()
