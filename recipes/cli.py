"""The ``visionllm2`` command line (typer + rich)."""

from __future__ import annotations

import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from visionllm2.recipes.predict_cli import predict_app
from visionllm2.recipes.recipe_cli import Device, Dtype, recipe_app

app = typer.Typer(
    name="visionllm2",
    help="VisionLLM v2: chat, detect, segment, estimate poses, generate and edit images with one model.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
app.add_typer(recipe_app)
app.add_typer(predict_app)

_REPORTED_PACKAGES = (
    "visionllm2", "torch", "transformers", "diffusers", "accelerate", "peft", "safetensors", "tokenizers",
    "pydantic", "supervision", "pycocotools", "shapely", "langchain-core", "typer", "numpy", "pillow",
)


def _version_callback(value: bool) -> None:
    if value:
        from visionllm2 import __version__

        console.print(f"visionllm2 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """VisionLLM v2 command line."""


@app.command()
def doctor() -> None:
    """Print package versions, the torch build, and which devices and dtypes work here."""
    import torch

    table = Table(title="packages", show_header=True)
    table.add_column("package")
    table.add_column("version")
    for name in _REPORTED_PACKAGES:
        try:
            table.add_row(name, version(name))
        except PackageNotFoundError:
            table.add_row(name, "[red]not installed[/red]")
    console.print(table)
    console.print(f"python {platform.python_version()} on {platform.platform()}")
    console.print(f"torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}")
    console.print(f"CPU threads: {torch.get_num_threads()}")
    if torch.cuda.is_available():
        from visionllm2.sdk._arguments import checked_dtype

        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            with torch.cuda.device(index):
                native = torch.cuda.is_bf16_supported(including_emulation=False)
                loads = str(checked_dtype(None, torch.device("cuda", index))).removeprefix("torch.")
            console.print(f"cuda:{index} {props.name}, {props.total_memory / 2**30:.1f} GiB, "
                          f"bf16 {'native' if native else 'emulated only'}; sessions load {loads} here")
    else:
        console.print("CUDA: no GPU visible; models run on the CPU in float32")
    dtypes = Table(title="dtype support on cpu", show_header=True)
    dtypes.add_column("dtype")
    dtypes.add_column("matmul")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        try:
            a = torch.ones(4, 4, dtype=dtype)
            (a @ a).sum().item()
            dtypes.add_row(str(dtype), "ok")
        except RuntimeError as error:  # an old CPU build may lack half-precision kernels
            dtypes.add_row(str(dtype), f"[red]{error}[/red]")
    console.print(dtypes)


@app.command()
def convert(
    official_dir: Annotated[Path | None, typer.Argument(help="The released checkpoint directory (.bin shards + index, or safetensors).")] = None,
    out_dir: Annotated[Path | None, typer.Argument(help="Where to write this package's layout.")] = None,
    check: Annotated[
        Path | None, typer.Option("--check", help="Only check a key manifest {key: [shape, dtype]} against the `7b` preset.")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option(help="With --check: comma-separated top-level prefixes (default: the model core).")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="Tokenizer directory (default: OFFICIAL_DIR; a Vicuna-7B-v1.5 one works).")
    ] = None,
    bf16: Annotated[bool, typer.Option("--bf16/--keep-dtype", help="Store weights as bfloat16 (the release's dtype).")] = True,
) -> None:
    """Convert the released VisionLLM v2 weights, or --check a key manifest against the rename table."""
    from visionllm2.model.errors import CheckpointError

    if check is not None:
        _check_manifest(check, prefix)
    if official_dir is None or out_dir is None:
        console.print("[red]convert: pass OFFICIAL_DIR OUT_DIR, or --check MANIFEST.json[/red]")
        raise typer.Exit(2)
    import torch

    from visionllm2.model.converter import convert_checkpoint

    try:
        with console.status("converting") as status:
            written = convert_checkpoint(official_dir, out_dir, tokenizer=tokenizer,
                                         dtype=torch.bfloat16 if bf16 else None, progress=status.update)
    except CheckpointError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    console.print(f"wrote [bold]{written}[/bold]; load it with Session.from_pretrained({str(written)!r})")


def _check_manifest(check: Path, prefix: str | None) -> None:
    from visionllm2.model.convert import CORE_PREFIXES, check_manifest, load_manifest
    from visionllm2.model.errors import CheckpointError

    prefixes = tuple(p.strip() for p in prefix.split(",")) if prefix else CORE_PREFIXES
    try:
        report = check_manifest(load_manifest(check), prefixes)
    except CheckpointError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from error
    table = Table(title=f"{check.name}: prefixes {', '.join(prefixes)}")
    for column in ("official keys", "mapped", "dropped", "missing", "unexpected", "shape mismatch"):
        table.add_column(column, justify="right")
    table.add_row(*(str(x) for x in (report.official, report.mapped, report.dropped, len(report.missing),
                                     len(report.unexpected), len(report.mismatched))))
    console.print(table)
    for title, keys in (("missing", report.missing), ("unexpected", report.unexpected), ("shape mismatch", report.mismatched)):
        for key in keys[:20]:
            console.print(f"  {title}: {key}")
        if len(keys) > 20:
            console.print(f"  … and {len(keys) - 20} more {title}")
    raise typer.Exit(0 if report.ok and report.official > 0 else 1)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where to write the demo's files.")] = Path("demo_out"),
    model: Annotated[str, typer.Option(help="The shipped 'shapes' model, 'tiny' (random weights) or a model directory.")] = "shapes",
    device: Device = None,
    dtype: Dtype = None,
) -> None:
    """Run a multi-turn session on generated pictures; write annotated pictures, a contact sheet and the transcript."""
    from visionllm2.recipes.demo import run_demo
    from visionllm2.sdk import VisionLLMError

    try:
        run_demo(out, console, model, device=device, dtype=dtype)
    except VisionLLMError as error:
        console.print(f"[red]demo: {escape(str(error))}[/red]")
        raise typer.Exit(2) from error


_ALL_TASKS = "detect,segment,ground,interactive,pose,chat,generate,edit"


def _parse_weights(text: str, option: str = "--tasks") -> dict[str, float]:
    """``"detect=1.5,chat=1"`` → ``{"detect": 1.5, "chat": 1.0}`` (a bare name weighs 1)."""
    weights = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value) if value else 1.0
        except ValueError as error:
            raise typer.BadParameter(f"{option}: expected name=weight pairs, got {item!r}") from error
    return weights


def _parse_domains(text: str) -> list[str] | dict[str, float]:
    """``"industrial,medical"`` → drawn equally; ``"industrial=3,medical=2"`` → weighted."""
    if "=" in text:
        return _parse_weights(text, "--domains")
    return [name.strip() for name in text.split(",") if name.strip()]


@app.command()
def train(
    stage: Annotated[int | None, typer.Option(help="1 chat, 2 multi-capacity (LoRA + decoders), 3 decoders only.")] = None,
    preset: Annotated[str | None, typer.Option(help="Model size to start from when --init is not given.")] = None,
    config: Annotated[Path | None, typer.Option(help="A TrainConfig JSON file; the options below override it.")] = None,
    init: Annotated[str | None, typer.Option(help="Start from this model directory (the previous stage's OUT/model).")] = None,
    attach: Annotated[str | None, typer.Option(
        help="A model directory whose decoders INIT lacks are added (e.g. stage 0's denoisers).")] = None,
    attach_decoder: Annotated[list[str] | None, typer.Option(
        help="Take this decoder from --attach instead, replacing INIT's own as a warm start (repeat).")] = None,
    out: Annotated[str | None, typer.Option(help="Output directory: checkpoints, log.jsonl, model/.")] = None,
    data: Annotated[list[str] | None, typer.Option(help="'shapes', or COCO / LLaVA JSON files (repeat the option).")] = None,
    tasks: Annotated[str | None, typer.Option(help="Task weights, e.g. 'detect=1.5,ground=1,chat=1'.")] = None,
    domains: Annotated[str | None, typer.Option(
        help="ShapesWorld domain packs to mix in, comma-separated; 'industrial=3,medical=1' weights them.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per step (per process).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate of the decoders (the rest: × backbone scale).")] = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the model, the data order and the noise.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU though CUDA is present.")] = False,
    freeze: Annotated[list[str] | None, typer.Option(
        help="Keep this part fixed though the stage trains it: llm, vision, bridge, decoders, gdino… (repeat).")] = None,
) -> None:
    """Train one stage (runs as is, or under `accelerate launch`); resumes from OUT's newest checkpoint."""
    from visionllm2.model.training import TrainConfig, Trainer

    values: dict = {}
    if config is not None:
        try:
            values.update(json.loads(config.read_text()))
        except (ValueError, OSError) as error:  # missing, unreadable or not JSON
            console.print(f"[red]train: --config {config}: expected a TrainConfig JSON file, could not read it ({error})[/red]")
            raise typer.Exit(2) from error
    overrides = {"stage": stage, "preset": preset, "init": init, "attach": attach, "attach_decoders": attach_decoder,
                 "output_dir": out, "data": data,
                 "tasks": _parse_weights(tasks) if tasks else None,
                 "domains": _parse_domains(domains) if domains else None, "steps": steps,
                 "batch_size": batch_size, "learning_rate": lr, "save_every": save_every, "seed": seed, "threads": threads,
                 "freeze": freeze, "cpu": cpu or None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    from visionllm2.sdk import VisionLLMError

    try:
        run = Trainer(TrainConfig.from_dict(values))
    except (ValueError, OSError, VisionLLMError) as error:  # bad options, unreadable files, a malformed --init
        console.print(f"[red]train: {error}[/red]")
        raise typer.Exit(2) from error
    result = run.train()
    if result.model_dir is not None:
        console.print(f"stage {run.config.stage} done at step {result.step}: [bold]{result.model_dir}[/bold]")


@app.command()
def curves(
    log: Annotated[Path, typer.Argument(help="A training run's log.jsonl (or its output directory).")],
    windows: Annotated[int, typer.Option(help="How many equal windows of steps.")] = 5,
    parts: Annotated[bool, typer.Option("--parts", help="Also each part of a decoder's loss (sd/diffusion …).")] = False,
) -> None:
    """Print a run's loss per route, averaged over windows of steps."""
    from visionllm2.model.training.curves import curve_table

    path = log / "log.jsonl" if log.is_dir() else log
    if not path.is_file() or windows < 1:
        console.print(f"[red]curves: expected a log.jsonl file (or a run directory) and --windows ≥ 1, got {log}[/red]")
        raise typer.Exit(2)
    header, rows = curve_table(path, windows, parts)
    if parts:  # one row per loss: a decoder's parts are too many columns for a terminal's width
        spans = [row[0] for row in rows]
        rows = [[name, *(row[index] for row in rows)] for index, name in enumerate(header[1:], start=1)]
        header = ["loss", *spans]
    table = Table(title=str(path))
    for index, column in enumerate(header):
        table.add_column(column, justify="left" if parts and index == 0 else "right", no_wrap=parts and index == 0)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def attach(
    base: Annotated[Path, typer.Argument(help="The model directory to extend.")],
    donor: Annotated[Path, typer.Argument(help="A model directory whose decoders to graft.")],
    out: Annotated[Path, typer.Argument(help="Where to write the combined model.")],
    half: Annotated[bool, typer.Option("--half/--full", help="Store float16 weights (half the size; loads as float32).")] = False,
    decoder: Annotated[list[str] | None, typer.Option(
        help="Graft this decoder (repeat for several), replacing BASE's own; default: those only DONOR has.")] = None,
    score_threshold: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Display threshold written for the detection and pose decoders.")] = None,
    duplicate_decay: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Soft-NMS written for the detection and pose decoders: an instance overlapping a "
                               "higher-scoring one (box IoU above 0.5) keeps this share of its score; 1: off, 0: plain NMS.")] = None,
    guidance_scale: Annotated[list[str] | None, typer.Option(
        help="A denoiser's classifier-free guidance written to its config, as DECODER=SCALE "
             "(e.g. sd=2 ip2p=2.5; repeat for each).")] = None,
    sampler: Annotated[list[str] | None, typer.Option(
        help="A denoiser's sampler written to its config, as DECODER=SCHEDULER:STEPS "
             "(e.g. sd=DDPMScheduler:50; any diffusers scheduler).")] = None,
) -> None:
    """Graft decoders (and their routes' query tables) of DONOR onto BASE.

    By default the decoders BASE lacks (stage 0's denoisers); with --decoder, the named ones, e.g. a
    pose decoder trained further in its own run from the same stage-2 model. --score-threshold,
    --duplicate-decay, --guidance-scale and --sampler write the settings a model ships with (picked on
    held-out samples that `eval` does not score: `bench/detection_probe.py`, `bench/edit_probe.py`,
    `bench/generation_probe.py`, each with `--first 1000`)."""
    import torch

    from visionllm2.model.training.stages import attach_decoders
    from visionllm2.model.visionllm import VisionLLMv2
    from visionllm2.sdk import VisionLLMError

    try:
        merged = attach_decoders(VisionLLMv2.from_pretrained(str(base)), VisionLLMv2.from_pretrained(str(donor)),
                                  decoder or None)
    except VisionLLMError as error:
        console.print(f"[red]{escape(str(error))}[/red]")  # the error names attach itself
        raise typer.Exit(2) from error
    if score_threshold is not None:  # a small model's scores are low and flat; its card says which it ships with
        for part in (merged.config.detection, merged.config.pose):
            if part is not None:
                part.score_threshold = score_threshold
    if duplicate_decay is not None:
        parts = [part for part in (merged.config.detection, merged.config.pose) if part is not None]
        if not parts:
            console.print("[red]attach: --duplicate-decay: the combined model has no detection or pose decoder[/red]")
            raise typer.Exit(2)
        for part in parts:
            part.duplicate_decay = duplicate_decay
    try:
        for setting in guidance_scale or []:
            part, part.guidance_scale = denoiser_setting(merged, setting, "--guidance-scale", "SCALE",
                                                         "a positive number", positive_scale)
        for setting in sampler or []:
            part, (part.scheduler, part.num_inference_steps) = denoiser_setting(
                merged, setting, "--sampler", "SCHEDULER:STEPS", "a diffusers scheduler and a positive number of steps",
                scheduler_and_steps)
    except ValueError as error:
        console.print(f"[red]attach: {escape(str(error))}[/red]")
        raise typer.Exit(2) from error
    (merged.to(torch.float16) if half else merged).save_pretrained(str(out))
    console.print(f"wrote [bold]{out}[/bold] with decoders {sorted(merged.decoders())}")


DENOISERS = ("sd", "ip2p")


def positive_scale(part, value: str) -> float:
    scale = float(value)
    if not 0 < scale < float("inf"):
        raise ValueError(f"not a positive number: {value!r}")
    return scale


def scheduler_and_steps(part, value: str) -> tuple[str, int]:
    from visionllm2.model.decoders.diffusion_parts import parse_sampler

    return parse_sampler(value)  # the same for every denoiser's config part


def denoiser_setting(model, setting: str, option: str, form: str, meaning: str, parse):
    """``(config part, parse(part, value))`` of an ``attach`` option's ``DECODER=VALUE``; else a
    ``ValueError`` that says what was expected and what came."""
    from visionllm2.model.training.stages import DECODER_CONFIG_FIELDS
    from visionllm2.sdk import VisionLLMError

    name, _, value = setting.partition("=")
    part = getattr(model.config, DECODER_CONFIG_FIELDS[name], None) if name in DENOISERS else None
    try:
        if part is not None:
            return part, parse(part, value)
    except (ValueError, VisionLLMError):
        pass
    denoisers = [n for n in DENOISERS if n in model.decoders()]
    raise ValueError(f"{option} expected DECODER={form} with DECODER one of {denoisers} and {form} {meaning}, "
                     f"got {setting!r}")


@app.command()
def data(
    out: Annotated[Path, typer.Option(help="Folder for the images and annotations.json.")] = Path("shapesworld"),
    count: Annotated[int, typer.Option(help="Scenes to write.")] = 100,
    kind: Annotated[str, typer.Option(help="shapes, figures, industrial, medical or remote_sensing.")] = "shapes",
    split: Annotated[str, typer.Option(help="train or heldout (disjoint seeds).")] = "train",
) -> None:
    """Export ShapesWorld scenes as PNGs + COCO JSON (boxes, RLE masks, keypoints for figures)."""
    from visionllm2.model.data.coco import save_coco, scenes_to_coco
    from visionllm2.model.data.domains import DOMAINS, render_domain
    from visionllm2.model.data.figures import render_figures
    from visionllm2.model.data.shapes import render_scene
    from visionllm2.model.data.tasks import SPLITS, split_seed

    renderers = {"shapes": render_scene, "figures": render_figures,
                 **{d: (lambda seed, d=d: render_domain(d, seed)) for d in DOMAINS}}
    if kind not in renderers or split not in SPLITS or count < 1:
        console.print(f"[red]data: expected --kind in {sorted(renderers)}, --split in {list(SPLITS)} and --count ≥ 1; "
                      f"got {kind!r}, {split!r}, {count}[/red]")
        raise typer.Exit(2)
    scenes = [renderers[kind](split_seed(index, split)) for index in range(count)]
    path = save_coco(scenes_to_coco(scenes, out), out / "annotations.json")  # images beside it: the default root
    console.print(f"wrote {count} {kind} scenes ({split}) and [bold]{path}[/bold]")


@app.command("eval")
def evaluate_command(
    model: Annotated[str, typer.Option(help="A model directory or a preset name.")] = "shapes",
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks to score.")] = _ALL_TASKS,
    count: Annotated[int, typer.Option(help="Held-out samples per task.")] = 50,
    domains: Annotated[str, typer.Option(help="Domain packs mixed into the scenes, comma-separated.")] = "",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics to this JSON file.")] = None,
    details: Annotated[bool, typer.Option(help="Print every metric of each task, not only its headline.")] = False,
    batch_size: Annotated[int, typer.Option(help="Samples run together (each its own conversation; same figures).")] = 8,
    device: Device = None,
    dtype: Dtype = None,
) -> None:
    """Score a model on held-out ShapesWorld through the Session and print one table."""
    from visionllm2.recipes.evaluate import HEADLINE, evaluate
    from visionllm2.sdk import Session, VisionLLMError

    try:
        session = Session.from_pretrained(model, device=device, dtype=dtype)
        with console.status("evaluating") as status:
            result = evaluate(session, [t.strip() for t in tasks.split(",") if t.strip()], count,
                              [d.strip() for d in domains.split(",") if d.strip()],
                              progress=lambda task: status.update(f"evaluating {task}"), batch_size=batch_size)
    except VisionLLMError as error:
        console.print(f"[red]eval: {error}[/red]")
        raise typer.Exit(2) from error
    where = f"{session.model.device.type}, {str(session.model.dtype).removeprefix('torch.')}"
    table = Table(title=f"held-out ShapesWorld: {model} ({where})")
    for column in ("task", "metric", "value", "± 95 %", "target", "samples", "seconds"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right",
                         no_wrap=column in ("task", "metric"))  # names stay whole (greppable) in a narrow terminal
    for task, metrics in result.metrics.items():
        name, target = HEADLINE[task]
        value, error = metrics[name], result.stderr(task)
        colour = "green" if value >= target else "yellow"
        table.add_row(task, name, f"[{colour}]{value:.3f}[/{colour}]", "–" if error is None else f"{1.96 * error:.3f}",
                      f"{target:.2f}", str(result.counts[task]), f"{result.seconds[task]:.1f}")
        if details:  # the headline's parts: AP at other IoUs, VQA per kind of question, checker per word…
            for other, other_value in metrics.items():
                if other != name and not other.endswith("_stderr"):
                    table.add_row("", f"[dim]{other}[/dim]", f"[dim]{other_value:.3f}[/dim]", "", "", "", "")
    for task, reason in result.skipped.items():
        table.add_row(task, "-", "skipped", "", "", "", reason)
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps({"metrics": result.metrics, "counts": result.counts, "skipped": result.skipped},
                                       indent=2))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
