"""What a training run is, as one JSON-serialisable dataclass (saved next to its checkpoints)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tokens as T
from ..config import PATCH_EMBEDDINGS, PREDICTION_TYPES
from ..data.samples import TOWER_TASKS
from ..data.tasks import DEFAULT_TASKS

#: The paper's LoRA targets: every attention and two of the MLP projections of each Llama layer.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
#: What each stage trains on by default (task → weight); stage 2 and 3 see every route.
STAGE_TASKS: dict[int, dict[str, float]] = {
    0: {"generate": 1.0, "edit": 1.0}, 1: {"chat": 1.0}, 2: dict(DEFAULT_TASKS), 3: dict(DEFAULT_TASKS),
}

#: Groups the slot label loss asks by default, and all it can ask: a detection / segmentation / pose
#: group for its label, a grounding group for the question's expression, a generation / editing
#: group for its caption / instruction.
LINK_LABEL_ROUTES = (T.DET, T.SEG, T.POSE, T.GRD)
ALL_LINK_LABEL_ROUTES = (*LINK_LABEL_ROUTES, T.GEN, T.EDIT)
#: What ``TrainConfig.freeze`` may keep fixed in a stage that would train it: the model's parts, and
#: the decoders by name (``decoders`` is all of them), and ``text_encoders`` (the generation decoders').
FREEZABLE = ("vision", "bridge", "region_encoder", "query_tables", "llm", "decoders", "gdino", "unipose", "sd", "ip2p",
             "text_encoders")


@dataclass
class TrainConfig:
    """One stage of training.

    stage 0 (only for models trained from scratch): the generation decoders' UNets and text encoders
    learn captions → pictures without the LLM, standing in for SD 1.5's released weights; with the
    ``count`` task the vision tower learns to count shapes and colours (:mod:`.tower`), standing in
    for CLIP's. ``fresh_vision_tower``: the init model's tower is replaced by a new one with this
    patch embedding (``"conv_stem"``), which such a stage then teaches.
    stage 1: chat (vision tower, bridge, LLM; LM loss). stage 2: multi-capacity (decoders attached
    and trained fully, the LLM through LoRA r ``lora_rank`` α ``lora_alpha`` on :data:`LORA_TARGETS`,
    bridge / region encoder / query tables trained; ``lora_rank`` 0 trains the LLM's own weights
    instead, for a small LLM trained from scratch, where r 32 saves nothing and limits what it can
    learn). stage 3: decoder-only (everything frozen but the decoders and the super-link query tables).
    ``link_label_loss`` (stage 2, not in the official recipe): weight of an auxiliary loss that has
    the LM head read each group's label words (a grounding group's: the question's referring
    expression; a generation or editing group's: the caption or instruction) from its query-slot
    states, for the routes in ``link_label_routes`` (default: detection, segmentation, pose and
    grounding, :data:`LINK_LABEL_ROUTES`; add ``[GEN]`` / ``[EDIT]`` to ask those too) (see
    :func:`~visionllm2.model.training.trainer.slot_label_loss`), for small LLMs trained from scratch.
    ``link_label_marks``: an interactive group ("region1[DET]…") is asked for the class of the object
    its visual prompt marks ("red circle") instead of the mark's own name, which says nothing about
    what to find.
    ``link_regression`` (stage 3, not in the official recipe): fit the ``[GEN]`` / ``[EDIT]`` links to
    their denoisers' own text encoders from slot states recorded once over ``link_regression_samples``
    conversations (the LLM is frozen in stage 3), instead of training them through the denoiser
    (:mod:`~visionllm2.model.training.link_fit`). ``link_distill_loss`` sets the generation decoders'
    ``distill_loss_weight``: the UNet's prediction through the link is matched to its prediction from
    the caption's own embedding. ``edit_region_weight`` sets the ``[EDIT]`` decoder's: its denoising
    loss weighs the pixels an edit changes 1 + this (with ``freeze: ["text_encoders"]`` a stage 0
    retrains the editor's UNet alone, and the link fitted to its text encoder stays valid).
    ``edit_prediction_type`` switches what that UNet predicts (``"v_prediction"``: an ε-trained
    editor learns to read the source's picture at high noise, where ε's loss hardly asks for it).
    ``init``: a model directory to start from (the previous stage's output); ``None`` builds
    ``preset`` with random weights. ``attach``: a model directory whose decoders the ``init`` model
    lacks (say stage 0's generation decoders) are added with their weights; ``attach_decoders`` names
    the donor's decoders to take instead, replacing the ``init`` model's own: a warm start for a stage
    that trains them (and their link) against this LLM, so the donor may sit over another LLM;
    ``attach_keep_tables`` keeps the ``init`` model's query tables for their routes (say new stage-0
    denoisers relinked to an LLM already trained on its ``[GEN]`` queries), and ``attach_keep_link``
    its link too (``emb_proj``, mapper), so only the denoiser is new. ``data``: ``"shapes"``
    (ShapesWorld, endless), or paths to COCO / LLaVA JSON files (see
    :mod:`visionllm2.model.training.sources`).
    """

    stage: int = 2
    preset: str = "tiny"
    init: str | None = None
    attach: str | None = None
    attach_decoders: list[str] | None = None   # None: the donor's decoders that init lacks
    attach_keep_tables: bool = False           # keep init's query tables of the grafted routes (its LLM reads them)
    attach_keep_link: bool = False             # keep init's link (emb_proj, mapper) of grafted generation decoders
    output_dir: str = "runs/train"
    data: list[str] = field(default_factory=lambda: ["shapes"])
    tasks: dict[str, float] | None = None      # None: the stage's default mix
    domains: list[str] | dict[str, float] = field(default_factory=list)  # packs, or pack → weight
    domain_rate: float = 0.25                  # ShapesWorld: share of detect / segment / ground scenes from domains
    generate_history_rate: float = 0.0         # ShapesWorld: share of generate requests asked after an earlier turn
    image_root: str | None = None              # COCO / LLaVA images, relative paths resolve here
    steps: int = 1000
    batch_size: int = 8
    learning_rate: float = 1e-3
    backbone_lr_scale: float = 1.0             # LLM, vision, bridge, queries: lr × this (decoders: lr)
    weight_decay: float = 0.01
    warmup_steps: int = 50
    max_grad_norm: float = 1.0
    train_vision: bool = False                 # stage 2: also train the vision tower (a from-scratch model's)
    freeze: list[str] = field(default_factory=list)  # parts the stage would train but keeps fixed (FREEZABLE)
    link_label_loss: float = 0.0               # stage 2: weight of the slots-name-their-label loss (0: official)
    link_label_routes: list[str] = field(default_factory=lambda: list(LINK_LABEL_ROUTES))  # the groups it asks
    link_label_marks: bool = False             # interactive groups asked for what their mark covers, not "region1"
    region_relative_to_image: bool | None = None  # set the init model's RegionConfig.relative_to_image (None: keep)
    fresh_vision_tower: str | None = None      # replace the init model's vision tower by a new one with this patch embedding
    detector_image_size: int | None = None     # the init model's detector reads a square picture of this side (None: keep)
    link_distill_loss: float | None = None     # set the init model's [GEN]/[EDIT] distill_loss_weight (None: keep)
    edit_region_weight: float | None = None    # set the init model's [EDIT] edit_region_weight (None: keep)
    edit_prediction_type: str | None = None    # switch the init model's [EDIT] UNet to predict this (None: keep)
    link_regression: bool = False              # stage 3: fit the [GEN]/[EDIT] links to their text encoders (link_fit.py)
    link_regression_samples: int = 4000        # conversations whose slot states it records first
    lora_rank: int = 32                        # stage 2: 0 fine-tunes the whole LLM (small LLMs) instead
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    mixed_precision: str = "auto"              # "auto": bf16 on CUDA, none on CPU; or "no" / "bf16" / "fp16"
    cpu: bool = False                          # train on the CPU though CUDA is present (bit-exact reruns, debugging)
    save_every: int = 200
    log_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 0
    threads: int | None = None                 # CPU threads (None: torch's default)

    def __post_init__(self) -> None:
        if self.stage not in (0, 1, 2, 3):
            raise ValueError(f"stage: expected 0, 1, 2 or 3, got {self.stage!r}")
        if self.detector_image_size is not None and self.detector_image_size < 32:
            raise ValueError(f"detector_image_size: expected a side of at least 32 pixels, got {self.detector_image_size!r}")
        for name in ("steps", "batch_size", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        for name in ("domain_rate", "generate_history_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a share in [0, 1], got {getattr(self, name)!r}")
        stage0_tasks = {"generate", "edit", *TOWER_TASKS}
        if self.stage == 0 and not set(self.task_weights) <= stage0_tasks:
            raise ValueError(f"tasks: stage 0 pre-trains without the LLM, so only {sorted(stage0_tasks)}, "
                             f"got {sorted(self.task_weights)}")
        if self.stage != 0 and self.trains_tower:
            raise ValueError(f"tasks: 'count' pre-trains the vision tower alone, in stage 0, not stage {self.stage}")
        if self.fresh_vision_tower is not None and self.fresh_vision_tower not in PATCH_EMBEDDINGS:
            raise ValueError(f"fresh_vision_tower: expected one of {PATCH_EMBEDDINGS}, got {self.fresh_vision_tower!r}")
        unknown = sorted(set(self.freeze) - set(FREEZABLE))
        if unknown:
            raise ValueError(f"freeze: unknown parts {unknown}; expected some of {list(FREEZABLE)}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank: expected 0 (the whole LLM) or a positive rank, got {self.lora_rank!r}")
        for name in ("link_distill_loss", "edit_region_weight"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}: expected a weight ≥ 0, got {value!r}")
        if self.edit_prediction_type is not None and self.edit_prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"edit_prediction_type: expected one of {PREDICTION_TYPES}, got {self.edit_prediction_type!r}")
        if self.link_regression and self.stage != 3:
            raise ValueError(f"link_regression: fits the links over a frozen LLM, so it runs in stage 3, not {self.stage!r}")
        if self.link_regression_samples < 2:
            raise ValueError(f"link_regression_samples: expected at least 2 conversations, got {self.link_regression_samples!r}")
        if self.link_label_loss < 0:
            raise ValueError(f"link_label_loss: expected a weight ≥ 0, got {self.link_label_loss!r}")
        unknown = sorted(set(self.link_label_routes) - set(ALL_LINK_LABEL_ROUTES))
        if unknown:
            raise ValueError(f"link_label_routes: unknown routes {unknown}; expected some of {list(ALL_LINK_LABEL_ROUTES)}")
        if self.attach_keep_link and not self.attach_decoders:
            raise ValueError("attach_keep_link: keeps the init model's link of the decoders attach_decoders names, "
                             f"but attach_decoders is {self.attach_decoders!r}")
        if self.attach_decoders is not None and not self.attach:
            raise ValueError(f"attach_decoders: names decoders of the attach model, but attach is not set "
                             f"(got attach_decoders={self.attach_decoders!r})")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision: expected auto, no, bf16 or fp16, got {self.mixed_precision!r}")

    @property
    def task_weights(self) -> dict[str, float]:
        return dict(self.tasks) if self.tasks is not None else dict(STAGE_TASKS[self.stage])

    @property
    def trains_tower(self) -> bool:
        """Whether the mix holds a task of the vision tower's own pre-training (:data:`TOWER_TASKS`)."""
        return any(self.task_weights.get(task, 0) > 0 for task in TOWER_TASKS)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"train config: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"train config {path}: not valid JSON ({error})") from error
        return cls.from_dict(data)
