"""Recipe: detect → segment → edit, on a generated ShapesWorld picture.

    python examples/recipe_detect_segment_edit.py [MODEL] [--out recipe_dse_out]

MODEL defaults to ``shapes`` (the model trained on ShapesWorld, shipped with the package); ``tiny``
runs random weights (typed results, meaningless pictures). A model without an edit decoder still
detects and segments; the edit is then reported as skipped. On the released 7B weights: convert them
once with ``visionllm2 convert OFFICIAL_DIR vlm2-7b`` and run ``python examples/recipe_detect_segment_edit.py vlm2-7b``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visionllm2.model.data.shapes import COLOURS, render_scene
from visionllm2.recipes.detect_segment_edit import detect_segment_edit
from visionllm2.sdk import Session

MODEL = "shapes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=MODEL, help="model directory or preset (default: shapes)")
    parser.add_argument("--out", type=Path, default=Path("recipe_dse_out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    scene = render_scene(11, count=(2, 2), background="plain", jpeg=False)
    target = scene.objects[0]
    colour = next(c for c in COLOURS if c != target.colour)
    session = Session.from_pretrained(args.model)
    result = detect_segment_edit(session, scene.image, [target.name], f"make the {target.kind} {colour}",
                                 edit_options={"seed": 0})

    result.before.save(args.out / "before.png")
    result.overlay().save(args.out / "masks.png")
    result.before_after().save(args.out / "before_after.png")
    if result.after is not None:
        result.after.save(args.out / "after.png")
    (args.out / "result.json").write_text(result.to_json(indent=1))
    edit = f"edited inside {int(result.region.sum())} pixels" if result.after is not None else \
        f"edit skipped: {result.edit_skipped}"
    print(f"{len(result.turns)} turns; {len(result.boxes)} {target.name} found; {edit}; files in {args.out.resolve()}")


if __name__ == "__main__":
    main()
