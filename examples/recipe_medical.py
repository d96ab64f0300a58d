"""Recipe: measure organs and lesions on generated 16-bit scan slices (areas, diameters, counts).

    python examples/recipe_medical.py [MODEL] [--out recipe_medical_out]

Four 16-bit grayscale slices are rendered (``"I;16"``, each with its own scanner range), windowed to
8 bits by percentiles, segmented for liver, kidney and lesion, and measured at 0.7 mm per pixel. The
report measures; it never diagnoses, and says so. MODEL defaults to ``shapes`` (the shipped
ShapesWorld model); ``tiny`` runs random weights. On the released 7B weights: ``visionllm2 convert
OFFICIAL_DIR vlm2-7b``, then ``python examples/recipe_medical.py vlm2-7b``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visionllm2.model.data.domains import DOMAINS, render_domain
from visionllm2.recipes.medical import display_image, measure_structures
from visionllm2.sdk import Session

MODEL = "shapes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=MODEL, help="model directory or preset (default: shapes)")
    parser.add_argument("--out", type=Path, default=Path("recipe_medical_out"))
    args = parser.parse_args()
    scans = args.out / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    for seed in range(401, 409, 2):
        render_domain("medical", seed, bit_depth=16).image.save(scans / f"slice{seed}.png")

    session = Session.from_pretrained(args.model)
    report = measure_structures(session, scans, list(DOMAINS["medical"]), pixel_spacing=0.7)
    report.write(args.out)
    for item in report.items:
        item.masks.annotate(display_image(item.source)).save(args.out / f"{Path(item.source).stem}_masks.png")
        lesions = [f for f in item.findings if f.label == "lesion"]
        sizes = ", ".join(f"{f.area_mm2:.0f} mm² (⌀ {f.diameter_mm:.1f} mm)" for f in lesions) or "none"
        print(f"{Path(item.source).name}: {item.counts()}; lesions: {sizes}")
    print(report.disclaimer)
    print(f"{len(report.items)} slices measured; report in {(args.out / 'medical.csv').resolve()}")


if __name__ == "__main__":
    main()
