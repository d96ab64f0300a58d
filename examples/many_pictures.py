"""Many pictures in batches, and an answer streamed as it is written, on the shipped model.

    python examples/many_pictures.py [--out many_pictures_out] [--model shapes|tiny|PATH] [--pictures 12]

Renders held-out ShapesWorld scenes and, with ``BatchPredictor`` (several conversations per
forward, each answered as it would be alone), finds each scene's first object by name, then
segments what it found in a second turn of the same conversations (the boxes become visual
prompts). Writes one COCO file for the lot and the masks drawn on each scene, then streams a free
answer about the first scene. Offline: the ``shapes`` weights ship inside the package.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from visionllm2.model.data.shapes import render_scene
from visionllm2.sdk import Session
from visionllm2.sdk.batch import BatchPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("many_pictures_out"))
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--pictures", type=int, default=12)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    scenes = [render_scene(2 * i + 1) for i in range(args.pictures)]  # odd seeds: never seen in training
    pictures = [scene.image for scene in scenes]
    session = Session.from_pretrained(args.model)
    predictor = BatchPredictor(session.model, batch_size=8)
    asked = [scene.objects[0].name for scene in scenes]              # one class list per picture
    conversations = [Session(session.model) for _ in pictures]     # each picture's own, going on
    turns = predictor.detect([[name] for name in asked], images=pictures, sessions=conversations)
    found = [i for i, turn in enumerate(turns) if len(turn.boxes)]
    masks = predictor.segment(prompts=[turns[i].boxes for i in found], sessions=[conversations[i] for i in found])
    for i, turn in zip(found, masks):                                 # turn 2 of those conversations
        turn.masks.annotate(pictures[i]).save(args.out / f"scene{i + 1:02d}_masks.png")

    ids = {name: k + 1 for k, name in enumerate(dict.fromkeys(asked))}  # one category table for the lot
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in ids.items()]}
    for image_id, (turn, picture) in enumerate(zip(turns, pictures), start=1):
        part = turn.boxes.to_coco(image_id=image_id, category_ids=ids, start_id=len(coco["annotations"]) + 1)
        coco["images"] += part["images"]
        coco["annotations"] += part["annotations"]
        turn.boxes.annotate(picture).save(args.out / f"scene{image_id:02d}.png")
    (args.out / "detections.coco.json").write_text(json.dumps(coco))
    print(f"{len(found)} of {len(turns)} pictures: a box for the asked object, then its mask in turn "
          f"{masks[0].index if masks else '-'}")

    stream = session.stream("How many shapes are there?", image=pictures[0], max_new_tokens=16)
    print("streamed: ", end="")
    for piece in stream:
        print(piece, end="", flush=True)
    print(f"\nturn text: {stream.turn.text!r}; files in {args.out.resolve()}")


if __name__ == "__main__":
    main()
