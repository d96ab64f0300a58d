"""``visionllm2 predict …``: one task over an image, a folder or a glob, pictures in batches.

    visionllm2 predict detect photos/ --classes car,bus --out predictions
    visionllm2 predict segment "scans/*.png" --classes liver,lesion --batch-size 16
    visionllm2 predict ground photos/ --expression "the red car"
    visionllm2 predict pose photos/ --classes person
    visionllm2 predict ask photos/ --question "How many cars are there?"
    visionllm2 predict edit photos/ --instruction "make the car red" --seed 0

Each picture is its own one-turn conversation, ``--batch-size`` of them per forward
(:class:`~visionllm2.sdk.batch.BatchPredictor`): the answer a fresh Session gives that picture
alone. Output as the recipes write it: ``annotated/``, ``contact_sheet.png``, ``coco.json``,
``transcript.json``; ``ask`` also writes ``answers.csv``, ``edit`` each ``NAME_edited.png``. Options are checked before the model
loads. Unreadable pictures, and any the model refuses, are listed as failures and the rest complete.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from visionllm2.model.errors import VisionLLMError

from .recipe_cli import (
    BatchSize,
    Device,
    Dtype,
    MinScore,
    Model,
    Out,
    Source,
    _finish,
    _names,
    _progress,
    _session,
    _start,
    _stop,
    console,
)

predict_app = typer.Typer(name="predict", no_args_is_help=True, add_completion=False,
                          help="One task (detect, segment, ground, pose, ask, edit) over many pictures, in batches.")
Classes = Annotated[str, typer.Option(help="Comma-separated classes, e.g. 'car,bus'.")]
#: what each task's result is drawn and exported from
RESULT_OF = {"detect": "boxes", "segment": "masks", "ground": "boxes", "pose": "poses", "ask": None, "edit": "images"}

Verb = Callable[[Any, list[Any]], list[Any]]


def _predict(task: str, source: str, out: Path, model: str, device: str | None, dtype: str | None, batch_size: int,
             min_score: float | None, verb: Verb, names: Sequence[str], checks: Callable[[], None] = lambda: None) -> None:
    """Check, load, run ``verb(predictor, pictures)`` batch by batch, write the files."""
    from ._common import check_count, check_fraction, open_rgb, run_in_batches

    try:
        check_count(batch_size, "--batch-size")
        check_fraction(min_score, "--min-score")
        checks()
    except VisionLLMError as error:
        raise _stop(error, command="predict") from error
    inputs = _start(source, out, "predict")
    session = _session(model, device, dtype, "predict")
    with _progress(len(inputs), f"predict {task}") as advance:
        done, failures = run_in_batches(session, inputs, open_rgb, verb, batch_size, on_done=advance)
    _write(task, out, done, failures, names, min_score)


def _write(task: str, out: Path, done: list[tuple[str, Any, Any]], failures: list[Any], names: Sequence[str],
           min_score: float | None) -> None:
    from ._common import side_by_side

    kind = RESULT_OF[task]
    shown, coco = [], []
    for name, picture, turn in done:
        result = getattr(turn, kind) if kind else None
        if result is not None and kind == "images":  # an edit: before and after, side by side
            edited = result.images[0].resize(picture.size)
            edited.save(out / f"{Path(name).stem}_edited.png")
            shown.append((name, side_by_side([picture, edited])))
            continue
        if result is not None and min_score is not None:
            result = result.filter(min_score=min_score)
        shown.append((name, result.annotate(picture) if result is not None else picture))
        if result is not None:
            coco.append((Path(name).name, result))
    if task == "ask":
        with (out / "answers.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["input", "question", "answer", "routes"])
            for name, _, turn in done:
                writer.writerow([name, turn.prompt, turn.text, " ".join(turn.routes)])
                console.print(f"{escape(Path(name).name)}: {escape(turn.text)}")
    _finish(out, f"predict {task}", shown, coco, names, [(name, [turn]) for name, _, turn in done], failures,
            {"task": task})


def _checked_names(text: str, what: str) -> Callable[[], None]:
    def check() -> None:
        from visionllm2.sdk._arguments import checked_names

        checked_names(_names(text, ()), what)
    return check


def _by_classes(task: str, doc: str) -> Callable[..., None]:
    """The ``detect`` / ``segment`` command: the same options, the verb of the same name."""
    def command(source: Source, classes: Classes, out: Out = Path("predict_out"), model: Model = "shapes",
                device: Device = None, dtype: Dtype = None, batch_size: BatchSize = 8,
                min_score: MinScore = None) -> None:
        names = _names(classes, ())
        _predict(task, source, out, model, device, dtype, batch_size, min_score,
                 lambda p, pictures: getattr(p, task)(names, images=pictures), names,
                 _checked_names(classes, "--classes"))
    command.__doc__ = doc
    return command


predict_app.command("detect")(_by_classes("detect", "Boxes of every instance of the classes in each picture."))
predict_app.command("segment")(_by_classes("segment", "Instance masks of the classes in each picture."))


@predict_app.command("ground")
def ground_command(source: Source,
                   expression: Annotated[str, typer.Option(help="What to find, e.g. 'the red car on the left'.")],
                   out: Out = Path("predict_out"), model: Model = "shapes", device: Device = None, dtype: Dtype = None,
                   batch_size: BatchSize = 8) -> None:
    """The one box the expression names, in each picture."""
    def check() -> None:
        from visionllm2.sdk._arguments import checked_names

        checked_names([expression], "--expression")
    _predict("ground", source, out, model, device, dtype, batch_size, None,
             lambda p, pictures: p.ground(expression, images=pictures), [expression.removeprefix("the ")], check)


@predict_app.command("pose")
def pose_command(source: Source, classes: Classes = "person",
                 keypoints: Annotated[str | None, typer.Option(help="Comma-separated keypoint names (default: COCO's 17 "
                                                                    "for people).")] = None,
                 out: Out = Path("predict_out"), model: Model = "shapes", device: Device = None, dtype: Dtype = None,
                 batch_size: BatchSize = 8, min_score: MinScore = None) -> None:
    """Instances of the classes with named keypoints, in each picture."""
    names = _names(classes, ())
    points = _names(keypoints, ()) if keypoints is not None else None

    def check() -> None:
        from visionllm2.sdk import InvalidPromptError
        from visionllm2.sdk._arguments import checked_names

        checked_names(names, "--classes")
        if points is None and any(name != "person" for name in names):
            raise InvalidPromptError(f"--keypoints: needed for classes other than 'person', got {names}")
        if points is not None:
            checked_names(points, "--keypoints")
    _predict("pose", source, out, model, device, dtype, batch_size, min_score,
             lambda p, pictures: p.pose(names, images=pictures, keypoints=points), names, check)


@predict_app.command("ask")
def ask_command(source: Source, question: Annotated[str, typer.Option(help="What to ask about each picture.")],
                out: Out = Path("predict_out"), model: Model = "shapes", device: Device = None, dtype: Dtype = None,
                batch_size: BatchSize = 8,
                max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 64) -> None:
    """A free answer about each picture (answers.csv; routes the model picks are run too)."""
    def check() -> None:
        from visionllm2.model.options import check_decoding_options
        from visionllm2.sdk import InvalidPromptError

        if not question.strip():
            raise InvalidPromptError("--question: expected a non-empty question")
        check_decoding_options(max_new_tokens=max_new_tokens)
    _predict("ask", source, out, model, device, dtype, batch_size, None,
             lambda p, pictures: p.ask(question, images=pictures, max_new_tokens=max_new_tokens), [], check)


@predict_app.command("edit")
def edit_command(source: Source, instruction: Annotated[str, typer.Option(help="The edit, e.g. 'make the car red'.")],
                 out: Out = Path("predict_out"), model: Model = "shapes", device: Device = None, dtype: Dtype = None,
                 batch_size: BatchSize = 8,
                 seed: Annotated[int | None, typer.Option(help="Seed of every picture's edit.")] = None,
                 steps: Annotated[int | None, typer.Option(help="Diffusion steps.")] = None) -> None:
    """Each picture edited by the instruction (NAME_edited.png, and before | after in annotated/)."""
    options = {k: v for k, v in (("seed", seed), ("num_inference_steps", steps)) if v is not None}

    def check() -> None:
        from visionllm2.sdk._arguments import check_options, checked_names

        checked_names([instruction], "--instruction")
        check_options(options)

    def run(predictor: Any, pictures: list[Any]) -> list[Any]:
        seeds = {"seed": [seed] * len(pictures)} if seed is not None else {}  # every picture the same seed
        return predictor.edit(instruction, images=pictures, **{**options, **seeds})

    _predict("edit", source, out, model, device, dtype, batch_size, None, run, [], check)
