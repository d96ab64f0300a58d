"""Recipe: industrial inspection of generated metal and fabric parts — defects, mm², pass/fail.

    python examples/recipe_inspection.py [MODEL] [--out recipe_inspection_out]

Six parts are rendered (one in five is flawless), inspected for scratches, dents, cracks and holes at
0.05 mm per pixel, and judged: at most 1 defect a part, none larger than 2 mm², no cracks at all.
MODEL defaults to ``shapes`` (the shipped ShapesWorld model); ``tiny`` runs random weights. On the
released 7B weights: ``visionllm2 convert OFFICIAL_DIR vlm2-7b``, then
``python examples/recipe_inspection.py vlm2-7b``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from visionllm2.model.data.domains import DOMAINS, render_domain
from visionllm2.recipes.inspection import Limits, Thresholds, inspect_parts
from visionllm2.sdk import Session

MODEL = "shapes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=MODEL, help="model directory or preset (default: shapes)")
    parser.add_argument("--out", type=Path, default=Path("recipe_inspection_out"))
    args = parser.parse_args()
    parts = args.out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    for seed in range(301, 313, 2):
        render_domain("industrial", seed).image.save(parts / f"part{seed}.png")

    session = Session.from_pretrained(args.model)
    thresholds = Thresholds(max_count=1, max_area_mm2=2.0, per_class={"crack": Limits(max_count=0)})
    report = inspect_parts(session, parts, list(DOMAINS["industrial"]), pixel_size=0.05, thresholds=thresholds)
    report.write(args.out)
    for part in report.parts:
        picture = Image.open(part.source).convert("RGB")
        part.annotate(picture).save(args.out / f"{Path(part.source).stem}_checked.png")
    print(f"{len(report.parts)} parts: {len(report.passed)} pass, {len(report.failed)} fail; "
          f"report in {(args.out / 'inspection.csv').resolve()}")


if __name__ == "__main__":
    main()
