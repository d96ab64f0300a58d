"""``visionllm2 demo``: one multi-turn session on a generated scene, written to a folder.

Until the trained ``shapes`` model ships, the demo runs the ``tiny`` preset with random weights:
it shows the whole path (image → LLM → super link → decoders → typed results → files), not
meaningful detections.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress


def demo_scene(size: tuple[int, int] = (320, 240), seed: int = 0) -> Image.Image:
    """A scene of coloured shapes on a soft background."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, (236, 232, 220))
    draw = ImageDraw.Draw(image)
    for colour, kind in [((220, 40, 40), "circle"), ((40, 80, 220), "square"), ((240, 200, 40), "triangle")]:
        side = int(rng.integers(40, 80))
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        if kind == "circle":
            draw.ellipse((x, y, x + side, y + side), fill=colour)
        elif kind == "square":
            draw.rectangle((x, y, x + side, y + side), fill=colour)
        else:
            draw.polygon([(x + side / 2, y), (x, y + side), (x + side, y + side)], fill=colour)
    return image


def run_demo(out: Path, console: Console) -> list[Path]:
    """Run the demo session and write annotated pictures and the JSON transcript to ``out``."""
    import torch

    from visionllm2.sdk import Point, Session

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    console.print("[bold]VisionLLM v2 demo[/bold]: the [cyan]tiny[/cyan] preset with random weights "
                  "(the trained `shapes` model replaces it), on a generated scene")
    scene = demo_scene()
    written = [out / "scene.png"]
    scene.save(written[0])
    session = Session.from_pretrained("tiny", max_new_tokens=16)
    steps = [
        ("detect", lambda: session.detect(["red circle", "blue square", "yellow triangle"], image=scene)),
        ("ground", lambda: session.ground("the red circle")),
        ("segment", lambda: session.segment(prompts=[Point(x=160, y=120)])),
        ("ask", lambda: session.ask("what colour is the square?")),
    ]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("turns", total=len(steps))
        for name, step in steps:
            turn = step()
            for index, result in enumerate(turn.results):
                if hasattr(result, "annotate"):
                    path = out / f"turn{turn.index}_{name}_{index}.png"
                    result.annotate(scene).save(path)
                    written.append(path)
            results = ", ".join(repr(r) for r in turn.results) or "—"
            console.print(f"turn {turn.index} [green]{name}[/green]: routes {escape(str(turn.routes or '—'))}, "
                          f"results {escape(results)}, "
                          f"{sum(turn.timings.values()) * 1000:.0f} ms")
            progress.advance(task)
    transcript = out / "transcript.json"
    transcript.write_text(json.dumps([json.loads(t.to_json()) for t in session.turns], indent=1))
    written.append(transcript)
    session.save(out / "session")
    console.print(f"wrote {len(written)} files and the resumable session to [bold]{out.resolve()}[/bold]")
    return written
