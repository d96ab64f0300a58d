"""Quickstart: a multi-turn session with typed results, written to a folder.

    python examples/quickstart.py [--out quickstart_out] [--model tiny|PATH]

With ``--model tiny`` (the default) the weights are random: the example shows the API and the
files, not real detections. Point ``--model`` at a converted 7B directory for real answers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from skimage import data

from visionllm2.sdk import Box, Point, Session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("quickstart_out"))
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    photo = data.astronaut()  # (512, 512, 3) uint8, shipped with scikit-image
    session = Session.from_pretrained(args.model)
    detect = session.detect(["person", "flag"], image=photo)           # Boxes, one prefill
    ground = session.ground("the person")                              # one box per expression
    masks = session.segment(prompts=[Point(x=250, y=150), Box(100, 50, 300, 400)])  # visual prompts
    people = session.pose(["person"])                                  # COCO's 17 keypoints
    answer = session.ask("What is in the picture?", max_new_tokens=16)  # free text

    for turn in (detect, ground, masks, people):
        for index, result in enumerate(turn.results):
            result.annotate(photo).save(args.out / f"turn{turn.index}_{index}_{result.kind}.png")
    (args.out / "detections.coco.json").write_text(json.dumps(detect.boxes.to_coco(image_id=1)))
    session.save(args.out / "session")
    print(f"{len(session.turns)} turns; last answer: {answer.text!r}; files in {args.out.resolve()}")


if __name__ == "__main__":
    main()
