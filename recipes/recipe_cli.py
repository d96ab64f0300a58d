"""``visionllm2 recipe …``: the recipes on an image, a folder or a glob, with a progress bar.

Every command validates its options before loading the model, then writes to ``--out``: one
annotated picture per input (``annotated/``), ``contact_sheet.png``, ``coco.json`` (all inputs, masks
as RLE), ``transcript.json`` (every turn of every input, and the failures) and the recipe's own
report. An unreadable input is listed as a failure and the others complete; the exit code is 0 when
at least one input worked, 1 when none did, 2 for bad options or a missing input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from visionllm2.model.errors import VisionLLMError

# The recipes (and torch with them) load inside the commands, so `visionllm2 --help` stays quick.
recipe_app = typer.Typer(name="recipe", no_args_is_help=True, add_completion=False,
                         help="Composite workflows: detect→segment→edit, in-context prompts, inspection, medical, "
                              "remote sensing.")
console = Console()

Source = Annotated[str, typer.Argument(help="An image file, a folder of images, or a glob pattern (quote it).")]
Out = Annotated[Path, typer.Option(help="Where to write pictures, contact sheet, COCO JSON, transcript, report.")]
Model = Annotated[str, typer.Option(help="A model directory (e.g. `visionllm2 convert` output) or a preset name.")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 … (default: CUDA when present).")]
Dtype = Annotated[str | None, typer.Option(help="float32, bfloat16 or float16 (default: bfloat16 on CUDA, float16 on "
                                                "GPUs without it, float32 on CPU).")]
AnyClass = Annotated[bool, typer.Option("--any-class", help="Allow class names outside the domain's vocabulary.")]
MinScore = Annotated[float | None, typer.Option(help="Drop results scored below this (0–1).")]
BatchSize = Annotated[int, typer.Option(help="Pictures (or tiles) run together, each its own conversation: the same "
                                             "answers, sooner.")]


def _stop(error: Exception, code: int = 2, command: str = "recipe") -> typer.Exit:
    console.print(f"[red]{command}: {escape(str(error))}[/red]")
    return typer.Exit(code)


def _floats(text: str, what: str, counts: Sequence[int]) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in counts:
        raise typer.BadParameter(f"{what}: expected {' or '.join(map(str, counts))} comma-separated numbers, "
                                 f"got {text!r}")
    return values


def _size(text: str, what: str) -> float | tuple[float, ...]:
    values = _floats(text, what, (1, 2))
    return values[0] if len(values) == 1 else values


def _names(text: str | None, default: Sequence[str]) -> list[str]:
    return list(default) if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _session(model: str, device: str | None, dtype: str | None, command: str = "recipe") -> Any:
    from visionllm2.sdk import Session

    try:
        with console.status(f"loading {model}"):
            return Session.from_pretrained(model, device=device, dtype=dtype)
    except VisionLLMError as error:
        raise _stop(error, command=command) from error


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[str], None]]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[name]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(what, total=total, name="")
        yield lambda name: progress.update(task, advance=1, name=Path(name).name)


def _picture_name(index: int, source: str, suffix: str) -> str:
    stem = Path(source).stem if source else "image"
    return f"{index:03d}_{stem}{suffix}.png"


def _finish(out: Path, recipe: str, shown: list[tuple[str, Image.Image]], coco: list[tuple[str, Any]],
            classes: Sequence[str], turns: list[tuple[str, Sequence[Any]]], failures: Sequence[Any],
            extra: dict[str, Any] | None = None) -> None:
    """Annotated pictures, the contact sheet, COCO, the transcript; a summary; the exit code."""
    from ._common import contact_sheet, merge_coco, transcript, write_json

    folder = out / "annotated"
    folder.mkdir(parents=True, exist_ok=True)
    for k, (source, picture) in enumerate(shown):
        picture.save(folder / _picture_name(k, source, ""))
    contact_sheet([(Path(s).name, p) for s, p in shown]).save(out / "contact_sheet.png")
    write_json(out / "coco.json", merge_coco(coco, classes))
    write_json(out / "transcript.json", transcript(recipe, turns, failures, extra))
    console.print(f"{len(turns)} of {len(turns) + len(failures)} inputs done")
    console.print(f"files in [bold]{escape(str(out))}[/bold]")
    if failures:
        table = Table(title="failures (full messages in transcript.json)", show_header=True)
        table.add_column("input", no_wrap=True)
        table.add_column("error")
        for failure in failures:
            table.add_row(escape(Path(failure.source).name), escape(f"{failure.error}: {failure.message}"))
        console.print(table)
    if not turns:
        raise typer.Exit(1)


def _start(source: str, out: Path, command: str = "recipe") -> list[tuple[str, Any]]:
    from ._common import as_inputs

    try:
        inputs = as_inputs(source)
    except VisionLLMError as error:
        raise _stop(error, command=command) from error
    out.mkdir(parents=True, exist_ok=True)
    return inputs


@recipe_app.command("detect-segment-edit")
def detect_segment_edit_command(
    source: Source,
    classes: Annotated[str, typer.Option(help="Comma-separated classes to find, e.g. 'car,bus'.")],
    instruction: Annotated[str | None, typer.Option(help="Edit to apply inside the masks, e.g. 'make it red'.")] = None,
    out: Out = Path("recipe_out"),
    model: Model = "shapes",
    device: Device = None,
    dtype: Dtype = None,
    min_score: MinScore = None,
    max_objects: Annotated[int, typer.Option(help="Segment at most this many detections an image.")] = 20,
    steps: Annotated[int | None, typer.Option(help="Diffusion steps of the edit.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the edit.")] = None,
    batch_size: BatchSize = 8,
) -> None:
    """Detect the classes, segment each detection, edit only inside the masks."""
    from . import detect_segment_edit as dse
    from ._common import check_count

    options = {k: v for k, v in (("num_inference_steps", steps), ("seed", seed)) if v is not None}
    try:
        names, instruction = dse.check_inputs(_names(classes, ()), instruction, min_score, max_objects, options)
        check_count(batch_size, "--batch-size")
    except VisionLLMError as error:
        raise _stop(error) from error
    inputs = _start(source, out)
    session = _session(model, device, dtype)
    with _progress(len(inputs), "detect → segment → edit") as done:
        results, failures = dse.detect_segment_edit_many(session, [image for _, image in inputs], names, instruction,
                                                         min_score=min_score,
                                                         max_objects=max_objects, edit_options=options,
                                                         batch_size=batch_size, on_done=done)
    for k, (name, result) in enumerate(results):
        if result.after is not None:
            result.after.save(out / _picture_name(k, name, "_after"))
        result.before_after().save(out / _picture_name(k, name, "_before_after"))
        if result.edit_skipped:
            console.print(f"{escape(name)}: edit skipped ({escape(result.edit_skipped)})")
    _finish(out, "detect-segment-edit", [(n, r.overlay()) for n, r in results], [(n, r.masks) for n, r in results],
            names, [(n, r.turns) for n, r in results], failures, {"classes": names, "instruction": instruction})


def _example(text: str) -> tuple[str, Any]:
    """``REF@x1,y1,x2,y2`` (box), ``REF@x,y`` (point) or ``REF@mask.png`` (non-zero pixels)."""
    from visionllm2.sdk import Box, Mask, Point

    reference, sep, prompt = text.rpartition("@")
    if not sep or not reference:
        raise typer.BadParameter(f"--example: expected REF_IMAGE@x1,y1,x2,y2, REF_IMAGE@x,y or REF_IMAGE@MASK.png, "
                                 f"got {text!r}")
    if Path(prompt).is_file():
        return reference, Mask(np.asarray(Image.open(prompt).convert("L")) > 0)
    values = _floats(prompt, "--example", (2, 4))
    return reference, Point(*values) if len(values) == 2 else Box(*values)


@recipe_app.command("in-context")
def in_context_command(
    source: Source,
    example: Annotated[list[str], typer.Option(help="REF_IMAGE@x1,y1,x2,y2 | REF_IMAGE@x,y | REF_IMAGE@MASK.png; "
                                                   "repeat for several examples.")],
    label: Annotated[str, typer.Option(help="Name for what the examples show.")] = "object",
    out: Out = Path("recipe_out"),
    model: Model = "shapes",
    device: Device = None,
    dtype: Dtype = None,
    min_score: MinScore = None,
    batch_size: BatchSize = 8,
) -> None:
    """Find and segment in the targets what the examples mark on reference images."""
    from . import in_context as ic
    from ._common import check_count, open_rgb, write_json

    examples = [_example(e) for e in example]
    try:
        _, marks, label = ic.check_inputs(examples, label, min_score)
        check_count(batch_size, "--batch-size")
    except VisionLLMError as error:
        raise _stop(error) from error
    inputs = _start(source, out)
    session = _session(model, device, dtype)
    with _progress(len(inputs), "in-context") as done:
        result = ic.in_context(session, examples, [image for _, image in inputs], label=label, min_score=min_score,
                               on_done=done, batch_size=batch_size)
    write_json(out / "in_context.json", result.model_dump(mode="json", exclude={"items"}))
    _finish(out, "in-context", [(i.source, i.annotate(open_rgb(i.source))) for i in result.items],
            [(i.source, i.masks) for i in result.items], [label], [(i.source, i.turns) for i in result.items],
            result.failures, {"label": label, "examples": [m.model_dump(mode="json") for m in marks]})


def _limits(pairs: Sequence[str], what: str, cast: Callable[[str], Any]) -> dict[str, Any]:
    limits = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            limits[name.strip()] = cast(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise typer.BadParameter(f"{what}: expected CLASS=NUMBER, got {pair!r}")
    return limits


@recipe_app.command("inspect")
def inspect_command(
    source: Source,
    pixel_size: Annotated[str, typer.Option(help="Millimetres per pixel: '0.05' or 'x,y'.")],
    defects: Annotated[str | None, typer.Option(help="Comma-separated defect classes (default: all known).")] = None,
    max_count: Annotated[int | None, typer.Option(help="Most defects a part may have (default 0: any fails).")] = 0,
    max_area: Annotated[float | None, typer.Option(help="Largest area one defect may have, mm².")] = None,
    class_max_count: Annotated[list[str] | None, typer.Option(help="CLASS=N, per class; repeatable.")] = None,
    class_max_area: Annotated[list[str] | None, typer.Option(help="CLASS=MM2, per class; repeatable.")] = None,
    out: Out = Path("recipe_out"),
    model: Model = "shapes",
    device: Device = None,
    dtype: Dtype = None,
    min_score: MinScore = None,
    any_class: AnyClass = False,
    batch_size: BatchSize = 8,
) -> None:
    """Inspect parts: defects, masks, areas in mm², pass/fail by thresholds; CSV and JSON reports."""
    from . import inspection
    from ._common import check_count, open_rgb

    counts = _limits(class_max_count or [], "--class-max-count", int)
    areas = _limits(class_max_area or [], "--class-max-area", float)
    per_class = {name: {"max_count": counts.get(name), "max_area_mm2": areas.get(name)} for name in {*counts, *areas}}
    vocabulary = None if any_class else inspection.VOCABULARY
    try:
        names, size, thresholds = inspection.check_inputs(
            _names(defects, inspection.VOCABULARY), _size(pixel_size, "--pixel-size"),
            {"max_count": max_count, "max_area_mm2": max_area, "per_class": per_class}, vocabulary, min_score)
        check_count(batch_size, "--batch-size")
    except VisionLLMError as error:
        raise _stop(error) from error
    inputs = _start(source, out)
    session = _session(model, device, dtype)
    with _progress(len(inputs), "inspection") as done:
        report = inspection.inspect_parts(session, [image for _, image in inputs], names, size, thresholds,
                                          min_score=min_score, vocabulary=vocabulary, on_done=done,
                                          batch_size=batch_size)
    report.write(out)
    table = Table(title="inspection", show_header=True)
    for column in ("part", "verdict", "defects", "reasons"):
        table.add_column(column)
    for part in report.parts:
        verdict = "[green]pass[/green]" if part.passed else "[red]fail[/red]"
        table.add_row(escape(Path(part.source).name), verdict, str(len(part.defects)), escape("; ".join(part.reasons)))
    console.print(table)
    _finish(out, "inspection", [(p.source, p.annotate(open_rgb(p.source))) for p in report.parts],
            [(p.source, p.masks) for p in report.parts], names, [(p.source, p.turns) for p in report.parts],
            report.failures, {"defects": names, "pixel_size": list(size)})


@recipe_app.command("medical")
def medical_command(
    source: Source,
    pixel_spacing: Annotated[str, typer.Option(help="Millimetres per pixel: '0.7' or 'row,column'.")],
    structures: Annotated[str | None, typer.Option(help="Comma-separated structures (default: all known).")] = None,
    window: Annotated[str, typer.Option(help="Percentiles 'low,high' that map 16-bit input to 8 bits.")] = "0.5,99.5",
    out: Out = Path("recipe_out"),
    model: Model = "shapes",
    device: Device = None,
    dtype: Dtype = None,
    min_score: MinScore = None,
    any_class: AnyClass = False,
    batch_size: BatchSize = 8,
) -> None:
    """Segment structures and lesions; areas (px, mm²), equivalent diameters, counts. Not a diagnosis."""
    from . import medical
    from ._common import check_count

    vocabulary = None if any_class else medical.VOCABULARY
    try:
        names, spacing, percentiles = medical.check_inputs(
            _names(structures, medical.VOCABULARY), _size(pixel_spacing, "--pixel-spacing"),
            _floats(window, "--window", (2,)), vocabulary, min_score)
        check_count(batch_size, "--batch-size")
    except VisionLLMError as error:
        raise _stop(error) from error
    inputs = _start(source, out)
    session = _session(model, device, dtype)
    with _progress(len(inputs), "medical") as done:
        report = medical.measure_structures(session, [image for _, image in inputs], names, spacing,
                                            window=percentiles, min_score=min_score, vocabulary=vocabulary,
                                            on_done=done, batch_size=batch_size)
    report.write(out)
    console.print(f"[yellow]{escape(report.disclaimer)}[/yellow]")
    shown = [(i.source, i.masks.annotate(medical.display_image(i.source, percentiles))) for i in report.items]
    _finish(out, "medical", shown, [(i.source, i.masks) for i in report.items], names,
            [(i.source, i.turns) for i in report.items], report.failures,
            {"structures": names, "pixel_spacing": list(spacing), "disclaimer": report.disclaimer})


@recipe_app.command("remote-sensing")
def remote_sensing_command(
    source: Source,
    classes: Annotated[str | None, typer.Option(help="Comma-separated classes (default: all known).")] = None,
    tile_size: Annotated[int, typer.Option(help="Tile side in pixels.")] = 256,
    overlap: Annotated[int, typer.Option(help="Least overlap of neighbouring tiles, pixels.")] = 64,
    geotransform: Annotated[str | None, typer.Option(help="GDAL geotransform 'x0,dx,rx,y0,ry,dy' for map "
                                                          "coordinates in the GeoJSON.")] = None,
    batch_size: BatchSize = 8,
    out: Out = Path("recipe_out"),
    model: Model = "shapes",
    device: Device = None,
    dtype: Dtype = None,
    any_class: AnyClass = False,
) -> None:
    """Map objects on large images by overlapping tiles; merged polygons, rotated boxes, GeoJSON."""
    from . import remote_sensing
    from ._common import check_count, open_rgb, run_batch, write_json

    vocabulary = None if any_class else remote_sensing.VOCABULARY
    transform = _floats(geotransform, "--geotransform", (6,)) if geotransform else None
    try:
        names, tile_size, overlap = remote_sensing.check_inputs(_names(classes, remote_sensing.VOCABULARY),
                                                                tile_size, overlap, transform, vocabulary)
        check_count(batch_size, "--batch-size")
    except VisionLLMError as error:
        raise _stop(error) from error
    inputs = _start(source, out)
    session = _session(model, device, dtype)

    def work(item: tuple[str, Any]) -> tuple[str, Any]:
        result = remote_sensing.map_objects(session, item[1], names, tile_size=tile_size, overlap=overlap,
                                            vocabulary=vocabulary, batch_size=batch_size)
        return item[0], result

    with _progress(len(inputs), "remote sensing") as done:
        results, failures = run_batch(inputs, work, [n for n, _ in inputs], done)
    for k, (name, result) in enumerate(results):
        write_json(out / _picture_name(k, name, "").replace(".png", ".geojson"), result.to_geojson(transform))
        counts = ", ".join(f"{c} {result.count(c)}" for c in names)
        console.print(f"{escape(Path(name).name)}: {len(result.tiles)} tiles; {counts}")
    _finish(out, "remote-sensing", [(n, r.annotate(open_rgb(n))) for n, r in results], [(n, r.masks()) for n, r in results],
            names, [(n, r.turns) for n, r in results], failures,
            {"classes": names, "tile_size": tile_size, "overlap": overlap})
