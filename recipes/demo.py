"""``visionllm2 demo``: one multi-turn session with the shipped ``shapes`` model, written to a folder.

The session runs on generated ShapesWorld pictures, so nothing is downloaded: it detects the shapes,
segments the objects it found (the detect turn's boxes become the segment turn's visual prompts),
answers a question, estimates the pose of a stick figure, generates a picture from a caption and
edits the scene by an instruction. Each turn's result is drawn to a PNG; a contact sheet puts them
side by side; ``transcript.json`` holds every turn; ``session/`` resumes the conversation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

SCENE_SEED = 11        # a held-out (odd) seed: the model never trained on this scene
FIGURE_SEED = 5
PANEL = 256            # contact-sheet panel side in pixels


def demo_inputs() -> tuple[Image.Image, list[str], Image.Image, str, list[str]]:
    """The scene, the classes to ask for, the figure picture, its kind and its keypoint names."""
    from visionllm2.model.data.figures import FIGURE_KEYPOINTS, render_figures
    from visionllm2.model.data.shapes import render_scene

    scene = render_scene(SCENE_SEED, count=(3, 3), background="gradient", jpeg=False)
    classes = list(dict.fromkeys(o.name for o in scene.objects))
    figures = render_figures(FIGURE_SEED, kind="person", count=(1, 1))
    return scene.image, classes, figures.image, figures.kind, list(FIGURE_KEYPOINTS[figures.kind])


def edit_instruction(name: str) -> str:
    """An edit that changes the picture: the class ``name`` ("green triangle") recoloured to a colour
    it does not have ("make the triangle blue")."""
    colour, _, shape = name.rpartition(" ")
    return f"make the {shape} {next(c for c in ('blue', 'red', 'yellow') if c != colour)}"


def contact_sheet(panels: list[tuple[str, Image.Image]], columns: int = 4) -> Image.Image:
    """Panels scaled to ``PANEL``² (nearest: the pixels stay honest) under their titles."""
    rows = (len(panels) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * PANEL, rows * (PANEL + 18)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for index, (title, picture) in enumerate(panels):
        x, y = (index % columns) * PANEL, (index // columns) * (PANEL + 18)
        sheet.paste(picture.convert("RGB").resize((PANEL, PANEL), Image.NEAREST), (x, y + 18))
        draw.text((x + 4, y + 3), title, fill=(0, 0, 0))
    return sheet


def run_demo(out: Path, console: Console, model: str = "shapes", device: str | None = None,
             dtype: str | None = None) -> list[Path]:
    """Run the demo session with ``model`` (a preset or directory) on ``device`` in ``dtype`` (the
    session's defaults when None); write pictures, sheet and transcript."""
    import torch

    from visionllm2.sdk import CapabilityError, Session

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    console.print(f"[bold]VisionLLM v2 demo[/bold] with the [cyan]{escape(model)}[/cyan] model on generated pictures")
    session = Session.from_pretrained(model, device=device, dtype=dtype, max_new_tokens=16)
    scene, classes, figure, kind, keypoints = demo_inputs()
    written = [out / "scene.png", out / "figure.png"]
    scene.save(written[0])
    figure.save(written[1])
    panels: list[tuple[str, Image.Image]] = [("scene", scene)]
    found: dict[str, object] = {}

    def segment_found():
        boxes = found["boxes"]
        if not len(boxes):
            return session.segment(classes, image="image1")
        return session.segment(prompts=[boxes[i] for i in range(min(len(boxes), 4))], image="image1")

    steps: list[tuple[str, Callable]] = [
        ("detect", lambda: session.detect(classes, image=scene)),
        ("segment", segment_found),
        ("ask", lambda: session.ask("How many shapes are there?", image="image1")),
        ("pose", lambda: session.pose([kind], keypoints=keypoints, image=figure)),
        ("generate", lambda: session.generate("blue square in the centre", seed=0)),
        ("edit", lambda: session.edit(edit_instruction(classes[0]), image="image1", seed=0)),
    ]
    skipped: dict[str, str] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("turns", total=len(steps))
        for name, step in steps:
            try:
                turn = step()
            except CapabilityError as error:
                skipped[name] = str(error)
                console.print(f"[yellow]{name} skipped[/yellow]: {escape(str(error))}")
                progress.advance(task)
                continue
            if name == "detect":
                found["boxes"] = turn.boxes
            for index, result in enumerate(turn.results):
                path = out / f"turn{turn.index}_{name}_{index}.png"
                if result.kind == "images":
                    picture = result.images[0]
                elif hasattr(result, "annotate"):
                    picture = result.annotate(figure if name == "pose" else scene)
                else:
                    continue
                picture.save(path)
                written.append(path)
                if index == 0:
                    panels.append((f"{turn.index} {name}", picture))
            results = ", ".join(repr(r) for r in turn.results) or "—"
            console.print(f"turn {turn.index} [green]{name}[/green]: {escape(turn.text[:70])!s} → {escape(results)}, "
                          f"{sum(turn.timings.values()) * 1000:.0f} ms")
            progress.advance(task)
    sheet = out / "contact_sheet.png"
    contact_sheet(panels).save(sheet)
    transcript = out / "transcript.json"
    transcript.write_text(json.dumps({"model": model, "turns": [json.loads(t.to_json()) for t in session.turns],
                                      "skipped": skipped}, indent=1))
    written += [sheet, transcript]
    session.save(out / "session")
    console.print(f"wrote {len(written)} files and the resumable session to [bold]{out.resolve()}[/bold]")
    return written
