"""Recipe: map buildings and vehicles on a large generated aerial picture by overlapping tiles.

    python examples/recipe_remote_sensing.py [MODEL] [--out recipe_remote_sensing_out]

The picture is a 2 × 2 mosaic of generated 128² remote-sensing scenes (256² in all; objects at the
scale the ``shapes`` model was trained on), cut into 128² tiles overlapping by 32 pixels; objects cut by tile seams are
merged back into one polygon, buildings and vehicles get rotated boxes, and the result is written
as GeoJSON in pixel and in map coordinates (a made-up UTM-like geotransform, 0.5 m a pixel). MODEL
defaults to ``shapes`` (the shipped ShapesWorld model); ``tiny`` runs random weights. On the
released 7B weights: ``visionllm2 convert OFFICIAL_DIR vlm2-7b``, then
``python examples/recipe_remote_sensing.py vlm2-7b`` (bigger tiles suit it: ``tile_size=512``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from visionllm2.model.data.domains import render_domain
from visionllm2.recipes.remote_sensing import map_objects
from visionllm2.sdk import Session

MODEL = "shapes"
GEOTRANSFORM = (500000.0, 0.5, 0.0, 4100000.0, 0.0, -0.5)  # x0, dx, rx, y0, ry, dy (GDAL's order)


def mosaic(seeds: list[int], side: int = 128) -> Image.Image:
    """Scenes of ``side``² pixels in a square grid, row by row."""
    grid = int(np.sqrt(len(seeds)))
    picture = Image.new("RGB", (grid * side, grid * side))
    for k, seed in enumerate(seeds):
        picture.paste(render_domain("remote_sensing", seed, size=side).image, ((k % grid) * side, (k // grid) * side))
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=MODEL, help="model directory or preset (default: shapes)")
    parser.add_argument("--out", type=Path, default=Path("recipe_remote_sensing_out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    picture = mosaic([501, 503, 505, 507])
    picture.save(args.out / "mosaic.png")
    session = Session.from_pretrained(args.model)
    result = map_objects(session, picture, ["building", "vehicle"], tile_size=128, overlap=32)

    result.annotate(picture).save(args.out / "mapped.png")
    (args.out / "objects_pixels.geojson").write_text(json.dumps(result.to_geojson()))
    (args.out / "objects_map.geojson").write_text(json.dumps(result.to_geojson(GEOTRANSFORM)))
    merged = sum(len(o.tiles) > 1 for o in result.objects)
    print(f"{len(result.tiles)} tiles; {result.count('building')} buildings, {result.count('vehicle')} vehicles "
          f"({merged} seen by more than one tile); files in {args.out.resolve()}")


if __name__ == "__main__":
    main()
