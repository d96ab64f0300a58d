"""The training loop: one stage, on accelerate, resumable to the step.

Runs as a plain process (CPU, one GPU) or under ``accelerate launch`` (DDP, DeepSpeed ZeRO-2,
FSDP: see ``model/training/accelerate/``). Every ``save_every`` steps the whole state — model,
optimizer, scheduler, RNG — goes to ``output_dir/checkpoints/step-N`` (accelerate's
``save_state``); the data position is the step itself (sources are pure functions of it), so a
resumed run continues exactly where the interrupted one stopped. Each logged step appends one JSON
line to ``output_dir/log.jsonl``; the finished stage writes a normal model directory to
``output_dir/model`` (LoRA merged), which the next stage takes as ``init``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import tokens as T
from ..batch import Batch, collate
from ..data.samples import Sample
from ..processor import Processor, RegionInput
from ..visionllm import VisionLLMv2, VisionLLMv2Output
from .config import LINK_LABEL_ROUTES, TrainConfig
from .sources import SampleSource, build_source
from .stages import merge_lora, prepare_stage
from .tower import CountHead, count_loss

CHECKPOINTS = "checkpoints"
STATE_NAME = "trainer_state.json"
FINISHED_NAME = "finished.json"  # written with the final model: running the stage again is a no-op


def flushing_denormals() -> bool:
    """Whether this process flushes denormal floats to zero (torch has a setter, no getter)."""
    return torch.tensor([1e-323], dtype=torch.float64).item() == 0.0


@contextmanager
def denormals_flushed(device: torch.device) -> Iterator[None]:
    """Flush denormal floats to zero on CPU while the block runs, then restore the process's setting.

    Freshly initialised detectors produce denormal activations that make CPU kernels up to 60×
    slower (15 s training steps become 0.25 s). The flag is process-wide, and callers that train
    inside a larger program (a notebook, the test suite) must get their own setting back: hypothesis,
    for one, refuses to run while it is set.
    """
    if device.type != "cpu":
        yield
        return
    before = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


@dataclass
class TrainResult:
    """What a run did: the last step reached, the logged records, and where the model went."""

    step: int
    records: list[dict[str, Any]] = field(default_factory=list)
    model_dir: Path | None = None


def samples_to_inputs(processor: Processor, samples: Sequence[Sample], pad_id: int
                      ) -> tuple[Batch, list[Any], dict[str, list[Any]]]:
    """Samples → (padded batch, each sample's first image or None, decoder name → per-sample targets)."""
    chats = []
    for sample in samples:
        images = [processor.process_image(image) for image in sample.images]
        regions = [RegionInput(index, processor.region_mask(mask, images[index].size)) for index, mask in sample.regions]
        chats.append(processor.build(sample.messages, images, regions))
    decoders = sorted({name for sample in samples for name in sample.targets})
    targets = {name: [sample.targets.get(name) for sample in samples] for name in decoders}
    return collate(chats, pad_id), [s.images[0] if s.images else None for s in samples], targets


def build_model(config: TrainConfig) -> VisionLLMv2:
    """The stage's starting point: ``config.init`` (a model directory) or ``config.preset`` at random,
    with the stage's settings of it applied (:func:`apply_model_settings`)."""
    if config.init:
        model = VisionLLMv2.from_pretrained(config.init, torch_dtype=torch.float32)
        if config.attach:
            from .stages import attach_decoders

            donor = VisionLLMv2.from_pretrained(config.attach, torch_dtype=torch.float32)
            model = attach_decoders(model, donor, config.attach_decoders, warm_start=config.attach_decoders is not None,
                                    keep_tables=config.attach_keep_tables, keep_link=config.attach_keep_link)
    else:
        from ..config import VisionLLMv2Config
        from ..decoders import build_decoders
        from ..tokenizer import Tokenizer

        model_config = VisionLLMv2Config.preset(config.preset)
        model = VisionLLMv2.from_config(model_config, build_decoders(model_config),
                                        Tokenizer.from_spec(model_config.llm.tokenizer))
    if config.fresh_vision_tower is not None:
        model = with_fresh_vision_tower(model, config.fresh_vision_tower)
    return apply_model_settings(model, config)


def with_fresh_vision_tower(model: VisionLLMv2, patch_embedding: str) -> VisionLLMv2:
    """``model`` with a new, randomly initialised vision tower of ``patch_embedding`` (its config says
    so and saves it); everything else keeps its weights. The bridge and the LLM must learn to read it."""
    from ..vision import build_vision_tower

    model.config.vision.patch_embedding = patch_embedding
    model.vis_encoder = build_vision_tower(model.config.vision)
    return model


def apply_model_settings(model: VisionLLMv2, config: TrainConfig) -> VisionLLMv2:
    """Write the stage's settings of the model into its config: none changes a tensor's shape, so the
    weights carry over; the decoders read their config at each step, and the saved model keeps them."""
    if config.region_relative_to_image is not None:
        model.config.region.relative_to_image = config.region_relative_to_image
        model.region_encoder.relative_to_image = config.region_relative_to_image
    if config.detector_image_size is not None:  # the detector resizes its own copy
        detection = model.config.detection
        detection.image_min_size = detection.image_max_size = config.detector_image_size
    if config.link_distill_loss is not None:
        for generation in (model.config.generation, model.config.editing):
            if generation is not None:
                generation.distill_loss_weight = config.link_distill_loss
    if config.edit_region_weight is None and config.edit_prediction_type is None:
        return model
    editing = model.config.editing
    if editing is None:
        raise ValueError("edit_region_weight / edit_prediction_type: set the [EDIT] decoder's training, but the "
                         f"model has no [EDIT] decoder (it has {sorted(model.decoders())})")
    if config.edit_region_weight is not None:
        editing.edit_region_weight = config.edit_region_weight
    if config.edit_prediction_type is not None:
        from ..decoders.diffusion_parts import build_scheduler

        editing.prediction_type = config.edit_prediction_type
        editor = model.decoders()["ip2p"]
        editor.scheduler = build_scheduler(editor.config)  # sampling reads the new prediction type too
    return model


def fresh_accelerator(precision: str, cpu: bool) -> Any:
    """An ``Accelerator`` with this precision, on the CPU or not. accelerate keeps one state per process:
    a second run in the same process (a notebook, the test suite) that asks for another precision would
    raise, and one that leaves the CPU would silently stay there. A single process starts afresh then;
    a distributed launch keeps its state, which holds the process group."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        current = AcceleratorState()
        if current.mixed_precision != precision or (current.device.type == "cpu") != cpu:
            AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=precision, cpu=cpu)


class Trainer:
    """One stage of training. ``Trainer(config).train()``; pass ``model`` / ``source`` to override."""

    def __init__(self, config: TrainConfig, model: VisionLLMv2 | None = None, source: SampleSource | None = None) -> None:
        from accelerate.utils import set_seed

        self.config = config
        self.output_dir = Path(config.output_dir)
        on_cpu = config.cpu or not torch.cuda.is_available()
        precision = config.mixed_precision
        if precision == "auto":
            precision = "no" if on_cpu or not torch.cuda.is_bf16_supported() else "bf16"
        self.accelerator = fresh_accelerator(precision, on_cpu)
        if config.threads:
            torch.set_num_threads(config.threads)
        set_seed(config.seed)
        if config.stage == 0 and self.accelerator.num_processes > 1:
            raise ValueError("stage 0 pre-trains small denoisers in one process; run it without accelerate launch")
        self.model = model if model is not None else build_model(config)
        self.processor = Processor(self.model.config, self.model.tokenizer)
        self.source = source or build_source(config.data, self.processor, config.task_weights, config.domains,
                                             config.seed, config.image_root, config.domain_rate,
                                             config.generate_history_rate)
        groups = prepare_stage(self.model, config)
        # stage 0's tower pre-training reads counts through a head of its own, saved in the checkpoints only
        self.count_head = None
        if config.trains_tower:  # stage 0 only (TrainConfig refuses it elsewhere)
            self.count_head = CountHead(self.model.config.vision.hidden_size)
            groups["decoders"] = [*groups["decoders"], *self.count_head.parameters()]
        self.step = 0
        if config.link_regression:  # fit_links builds its own optimizer over the links alone
            self.optimizer = self.scheduler = None
            self.model = self.accelerator.prepare(self.model)
            return
        parameters = [
            {"params": groups["decoders"], "lr": config.learning_rate},
            {"params": groups["backbone"], "lr": config.learning_rate * config.backbone_lr_scale},
        ]
        if not any(group["params"] for group in parameters):
            decoders = sorted(self.model.decoders())
            raise ValueError(f"stage {config.stage} with tasks {sorted(config.task_weights)} and freeze {config.freeze}: "
                             f"expected something to train, got no trainable parameter (the model's decoders: {decoders})")
        self.optimizer = torch.optim.AdamW([g for g in parameters if g["params"]], weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _warmup_cosine(config.warmup_steps, config.steps))
        heads = [self.count_head] if self.count_head is not None else []
        self.model, *heads, self.optimizer, self.scheduler = self.accelerator.prepare(
            self.model, *heads, self.optimizer, self.scheduler)
        self.count_head = heads[0] if heads else None

    # ------------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[Path]:
        folder = self.output_dir / CHECKPOINTS
        found = [p for p in folder.glob("step-*") if (p / STATE_NAME).is_file()] if folder.is_dir() else []
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def save_checkpoint(self) -> Path:
        path = self.output_dir / CHECKPOINTS / f"step-{self.step}"
        self.accelerator.save_state(str(path), safe_serialization=False)
        if self.accelerator.is_main_process:
            (path / STATE_NAME).write_text(json.dumps({"step": self.step, "config": json.loads(self.config.to_json())}))
            for old in self.checkpoints()[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint in ``output_dir``, if there is one."""
        found = self.checkpoints()
        if not found:
            return False
        self.accelerator.load_state(str(found[-1]))
        self.step = json.loads((found[-1] / STATE_NAME).read_text())["step"]
        return True

    # ------------------------------------------------------------------ loop
    def train_step(self) -> dict[str, Any]:
        """One optimiser step on one decoder group's batch; returns the step's record."""
        with denormals_flushed(self.accelerator.device):
            return self._train_step()

    def _train_step(self) -> dict[str, Any]:
        config, accelerator = self.config, self.accelerator
        start = time.perf_counter()
        samples = self.source.batch(self.step, config.batch_size, accelerator.process_index, accelerator.num_processes)
        model = accelerator.unwrap_model(self.model)
        self.model.train()
        extra: dict[str, float] = {}
        if config.stage == 0 and samples[0].group == "tower":
            with accelerator.autocast():
                loss, accuracy = count_loss(model, self.count_head, self.processor, samples)
            output = VisionLLMv2Output(loss, None, None, {}, {})
            extra = {"tower": loss.item(), **{f"tower/{kind}": value for kind, value in accuracy.items()}}
        elif config.stage == 0:
            output = self._pretrain_denoiser(model, samples)
        else:
            batch, images, targets = samples_to_inputs(self.processor, samples, model.tokenizer.pad_id)
            with accelerator.autocast():
                output = self.model(batch.to(accelerator.device), images, targets)
        loss = output.loss
        label_loss = None
        if config.link_label_loss and config.stage == 2:
            phrases = [slot_phrases(s, config.link_label_marks) for s in samples]
            label_loss = slot_label_loss(model, output.link, phrases, config.link_label_routes)
        if label_loss is not None:
            loss = loss + config.link_label_loss * label_loss
        accelerator.backward(loss)
        trained = [*self.model.parameters(), *(self.count_head.parameters() if self.count_head is not None else ())]
        norm = accelerator.clip_grad_norm_(trained, config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        group = samples[0].group
        record: dict[str, Any] = {
            "step": self.step, "group": group, "tasks": sorted({s.task for s in samples}),
            "loss": loss.item(), "lr": self.scheduler.get_last_lr()[0], "grad_norm": float(norm),
            "samples_per_s": len(samples) / (time.perf_counter() - start),
        }
        record.update(extra)
        if output.lm_loss is not None:
            record["lm"] = output.lm_loss.item()
        if label_loss is not None:
            record["link_label"] = label_loss.item()
        for name, decoded in output.decoder_outputs.items():
            if decoded.loss is not None:
                record[name] = decoded.loss.item()
                for part, value in decoded.losses.items():  # e.g. "sd/diffusion", "sd/distill"
                    record[f"{name}/{part}"] = value.item()
        return record

    def _pretrain_denoiser(self, model: VisionLLMv2, samples: Sequence[Sample]) -> VisionLLMv2Output:
        """Stage 0: the decoder's own caption-conditioned loss; the LLM is not involved."""
        name = samples[0].decoder
        decoder = model.decoders()[name]
        with self.accelerator.autocast():
            decoded = decoder.pretraining_loss([s.targets[name] for s in samples], [s.images[0] if s.images else None for s in samples])
        return VisionLLMv2Output(decoded.loss, None, None, {}, {name: decoded})

    def train(self, stop_at: int | None = None, progress: bool = True) -> TrainResult:
        """Run to ``config.steps`` (or stop early at ``stop_at``, as an interruption would)."""
        with denormals_flushed(self.accelerator.device):
            return self._train(stop_at, progress)

    def _train(self, stop_at: int | None, progress: bool) -> TrainResult:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        config = self.config
        finished = self.output_dir / FINISHED_NAME
        done = json.loads(finished.read_text())["step"] if finished.is_file() else 0
        if done >= config.steps:  # finished before: running the stage again is a no-op
            return TrainResult(done, [], self.output_dir / "model")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.accelerator.is_main_process:
            (self.output_dir / "train_config.json").write_text(config.to_json())
        if config.link_regression:
            return self._fit_links(progress)
        self.resume()
        if self.accelerator.is_main_process:
            _drop_log_records_after(self.output_dir / "log.jsonl", self.step)
        last = min(config.steps, stop_at if stop_at is not None else config.steps)
        records: list[dict[str, Any]] = []
        running: dict[str, float] = defaultdict(float)
        show = progress and self.accelerator.is_main_process
        with Progress(TextColumn("stage {task.fields[stage]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeRemainingColumn(), TextColumn("{task.description}"), disable=not show) as bar, \
                (self.output_dir / "log.jsonl").open("a") as log:
            task = bar.add_task("", total=config.steps, completed=self.step, stage=config.stage)
            while self.step < last:
                record = self._train_step()
                running[record["group"]] = 0.9 * running[record["group"]] + 0.1 * record["loss"] if running[record["group"]] else record["loss"]
                if self.step % config.log_every == 0 or self.step == last:
                    records.append(record)
                    if self.accelerator.is_main_process:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                bar.update(task, completed=self.step, description="  ".join(f"{g} {v:.3f}" for g, v in sorted(running.items())))
                if self.step % config.save_every == 0 and self.step < config.steps:
                    self.save_checkpoint()
        result = TrainResult(self.step, records)
        if self.step >= config.steps:
            result.model_dir = self.finish()
        elif self.step % config.save_every:
            self.save_checkpoint()
        return result

    def _fit_links(self, progress: bool) -> TrainResult:
        """``link_regression``: record the slot states once, fit the links, write the model (minutes: no checkpoints)."""
        from rich.progress import Progress

        from .link_fit import fit_links, record_batch_count, record_batches, record_links

        config = self.config
        model = self.accelerator.unwrap_model(self.model)
        batches = record_batches(self.source, self.processor, model.tokenizer.pad_id, config.link_regression_samples,
                                 config.batch_size)
        with Progress(disable=not progress) as bar:
            task = bar.add_task("recording slot states", total=record_batch_count(config.link_regression_samples, config.batch_size))

            def counted(batches):
                for batch in batches:
                    yield batch
                    bar.advance(task)

            recorded = record_links(model, counted(batches))
        with (self.output_dir / "log.jsonl").open("w") as log, Progress(disable=not progress) as bar:
            task = bar.add_task("fitting the links", total=config.steps)

            def write(record: dict[str, Any]) -> None:
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.update(task, completed=record["step"])

            records = fit_links(model, recorded, config, write)
        self.step = config.steps
        return TrainResult(self.step, records, self.finish())

    def finish(self) -> Path:
        """Merge LoRA and write ``output_dir/model``: a normal model directory, the next stage's ``init``."""
        self.accelerator.wait_for_everyone()
        model = self.accelerator.unwrap_model(self.model)
        merge_lora(model)
        model.requires_grad_(True)
        target = self.output_dir / "model"
        if self.accelerator.is_main_process:
            model.eval().save_pretrained(str(target))
            (self.output_dir / FINISHED_NAME).write_text(json.dumps({"step": self.step}))
        return target


NAMED_ROUTES = frozenset({T.DET, T.SEG, T.POSE})  # "red circle[DET]…", "dog[POSE]…", "region1[DET]…"
#: What a group whose answer names nothing before its token is asked for: its sample's ``meta`` key.
PHRASE_OF_TASK = {"ground": "expression", "generate": "caption", "edit": "caption"}


def slot_phrases(sample: Sample, marks: bool = False) -> str | dict[str, str] | None:
    """What :func:`slot_label_loss` asks a sample's groups for beyond their own names: the phrase of
    :data:`PHRASE_OF_TASK` (one for every group of the sample), or with ``marks`` an interactive
    sample's mark → the class of the object it marks (``{"region1": "red circle"}``)."""
    if sample.task in PHRASE_OF_TASK:
        return sample.meta.get(PHRASE_OF_TASK[sample.task])
    if marks and sample.task == "interactive":
        return {f"region{index}": obj.name for index, obj in enumerate(sample.meta["objects"], start=1)}
    return None


def slot_label_loss(model: VisionLLMv2, link: dict[str, Any], phrases: Sequence[str | Mapping[str, str] | None] = (),
                    routes: Sequence[str] = LINK_LABEL_ROUTES) -> torch.Tensor | None:
    """Cross-entropy of each group's label words, read from its query-slot states by the LM head.

    An auxiliary stage-2 loss (``TrainConfig.link_label_loss``), not part of the official recipe:
    the LM loss ignores the slots, so nothing but the decoders' gradients asks a small LLM to carry
    ``red circle`` into the states after ``red circle[DET]``; ``bench/link_probe.py`` shows a
    from-scratch one mostly does not. Only groups of ``routes`` count. Those whose answer names the
    group right before the routing token (:data:`NAMED_ROUTES`) are asked for that name. A
    grounding, generation or editing answer names nothing ("Yes, it is[GRD]", "Here it is[GEN]"):
    its slots are asked for ``phrases[b]``, batch element ``b``'s referring expression, caption or
    instruction (:data:`PHRASE_OF_TASK`; ``None``: no term). A mapping ``phrases[b]`` renames the
    groups it lists (an interactive sample's ``region1`` → the class its mark covers, see
    :func:`slot_phrases`); its other named groups (an earlier detection turn's) keep their names.
    """
    terms = []
    for states in link.values():
        # The label's own words: ``label_ids`` also hold the lead-in ("Yes, here are the results for"),
        # which every first group shares and which would teach the slots nothing about their class.
        words_of_group = []
        for label, route, row in zip(states.labels, states.routes, states.sample_index.tolist()):
            phrase = _group_phrase(model, label, route, phrases[row] if row < len(phrases) else None, routes)
            words_of_group.append(model.tokenizer.encode_text(phrase) if phrase else [])
        if not any(words_of_group):
            continue
        log_probs = model.llm.lm_head(states.states).float().log_softmax(-1)  # (G, n, V): one pass per decoder
        terms += [-group[:, words].mean() for group, words in zip(log_probs, words_of_group) if words]
    return torch.stack(terms).mean() if terms else None


def _group_phrase(model: VisionLLMv2, label: str, route: str, given: str | Mapping[str, str] | None,
                  routes: Sequence[str]) -> str | None:
    """What one group's slots are asked for (see :func:`slot_label_loss`); ``None``: nothing."""
    if route not in routes:
        return None
    if route in NAMED_ROUTES:  # its own label, unless a mapping renames it (a mark → what it covers)
        return (_renamed(model, given, label) if isinstance(given, Mapping) else None) or label
    return None if isinstance(given, Mapping) else given  # a phrase of the whole sample, if any


def _renamed(model: VisionLLMv2, names: Mapping[str, str], label: str) -> str | None:
    """``names[label]``, matched by words: a label decoded from the answer reads "region 1"."""
    words = model.tokenizer.encode_text(label)
    return next((phrase for name, phrase in names.items() if model.tokenizer.encode_text(name) == words), None)


def _drop_log_records_after(path: Path, step: int) -> None:
    """Forget the records of steps a killed run logged after its newest checkpoint.

    The resumed run logs those steps again; without this the log would hold both, and the curves
    would average an undone stretch of training into the one that counts.
    """
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))


def lr_factor(step: int, warmup: int, progress: float) -> float:
    """The learning rate's share at ``step``: a linear warm-up over ``warmup`` steps, then a cosine from
    1 to 0.1 as ``progress`` (the share of the run after the warm-up) goes from 0 to 1."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        return lr_factor(step, warmup, (step - warmup) / max(1, total - warmup))

    return factor


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Run one stage as configured; see :class:`Trainer`."""
    return Trainer(config).train(progress=progress)
