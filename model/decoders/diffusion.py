"""[GEN] and [EDIT]: Stable Diffusion 1.5 and InstructPix2Pix behind the super link.

The link is ours; the rest is diffusers. The ``n`` query states of a group ``(G, n, H)`` go through
``emb_proj`` (Linear H→d, GELU, Linear d→d) and ``llm2sd_mapper``, an ``nn.Transformer`` (1 encoder
+ 1 decoder layer, ``norm_first``) whose target is the learned ``llm2sd_mapper_queries``: out come
``prompt_embeds`` ``(G, Q, d)`` (Q 77, d 768 at SD 1.5 sizes), which take the place of CLIP's text
embeddings. Sampling runs diffusers' own pipelines with those ``prompt_embeds``.

**The unconditional branch** of classifier-free guidance is the frozen CLIP text encoder's embedding
of the empty caption ``""``, as in the official code: condition dropout in training replaces the
mapper output by exactly that embedding, so sampling must use it too (``negative_prompt_embeds``).
It needs no tokenizer (``<bos> <eos> <pad>…`` ids come from the config).

**Training** (``targets`` given): MSE of the UNet's prediction (ε, or v as ``prediction_type``
says) + ``caption_loss_weight`` (0.1) · MSE(mapper output, CLIP's embedding of the caption)
+ ``distill_loss_weight`` (0: not in the official code) · MSE(the UNet's prediction through the link,
its prediction from CLIP's embedding of the caption on the same noisy input). [GEN]
drops the condition with probability ``condition_dropout`` (0.1); [EDIT] follows InstructPix2Pix
with p = 0.05: text only dropped for r < p, text and image for p ≤ r < 2p, image only for
2p ≤ r < 3p; ``edit_region_weight`` (ours, 0 by default) weighs the pixels an edit changes up in
[EDIT]'s denoising loss. The VAE and text encoder are frozen; the UNet is frozen for [GEN] and trained for
[EDIT] (``train_unet``). Gradients reach the LLM and its queries through the link.

Attribute names are the released checkpoint's: ``sd.emb_proj``, ``sd.llm2sd_mapper``,
``sd.llm2sd_mapper_queries``, ``sd.sd_unet``, ``sd.sd_vae``, ``sd.sd_text_encoder``; same under ``ip2p``.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers import SchedulerMixin
from PIL import Image
from torch import nn

from .. import tokens as T
from ..config import GenerationConfig
from ..errors import InvalidInputError, describe, is_integer
from ..images import ImageLike, load_image
from ..options import check_image_size, check_sampling_options
from .base import DecoderOutput, LinkStates, TaskDecoder
from .diffusion_parts import (
    CaptionTokenizer,
    build_noise_scheduler,
    build_scheduler,
    build_text_encoder,
    build_unet,
    build_vae,
    check_sizes,
    fit_size,
    pipeline_class,
    to_pixels,
)

SEED_RANGE = 2**31  # seeds drawn for the caller are in [0, 2³¹)
CHANGED = 8 / 127.5  # [EDIT]: a pixel the edit changes differs by more than 8 levels of 255 in a channel


@dataclass
class DenoisingStep:
    """What one training call of the UNet saw and predicted (``G`` groups), for the losses built on it."""

    unet_input: torch.Tensor    # (G, in_channels, h, w) noisy latents (‖ the source's for [EDIT])
    timesteps: torch.Tensor     # (G,)
    dropped_text: torch.Tensor  # (G,) bools: the condition was replaced by the empty caption's
    prediction: torch.Tensor    # (G, c, h, w) ε or v
    target: torch.Tensor        # (G, c, h, w)
    weight: torch.Tensor | None = None  # (G, 1, h, w) per-position loss weight; None: all alike

    def loss(self) -> torch.Tensor:
        if self.weight is None:
            return F.mse_loss(self.prediction.float(), self.target.float())
        error = (self.prediction.float() - self.target.float()).pow(2)  # (G, c, h, w)
        weight = self.weight.float().expand_as(error)
        return (weight * error).sum() / weight.sum()  # a weighted mean: the scale of the plain one


@dataclass
class DiffusionTarget:
    """One sample's training target: the image to produce, its caption, and for [EDIT] the source image.

    ``source`` defaults to the sample's input image (the ``images`` passed to the forward).
    ``caption`` ``None`` leaves the sample out of the caption loss.
    """

    image: ImageLike
    caption: str | None = None
    source: ImageLike | None = None


@dataclass
class DiffusionImages:
    """What a [GEN] / [EDIT] decoder produced: one RGB image per group, and how.

    images: PIL images of size (width, height); captions: the text each was made from;
    seeds: the seed of each image's generator — rerunning with it gives the same image;
    sample_index: the batch element of each group.
    """

    images: list[Image.Image]
    captions: list[str]
    seeds: list[int]
    sample_index: list[int]
    route: str
    scheduler: str
    steps: int
    guidance_scale: float
    image_guidance_scale: float | None = None

    def settings(self) -> dict[str, Any]:
        """JSON-ready generation settings (for ``sdk`` results)."""
        out = {"scheduler": self.scheduler, "steps": self.steps, "guidance_scale": self.guidance_scale}
        if self.image_guidance_scale is not None:
            out["image_guidance_scale"] = self.image_guidance_scale
        return out


@dataclass
class PipelineInputs:
    """One :meth:`DiffusionDecoder.predict` call's pipeline arguments, per group where they are indexed."""

    prompt_embeds: torch.Tensor            # (G, Q, d) the link's
    negative_prompt_embeds: torch.Tensor   # (G, Q, d) CLIP's embedding of ""
    generators: list[torch.Generator]      # (G,) one seeded CPU generator per image
    settings: dict[str, Any]               # steps, guidance scale(s), output type: the same for all groups

    def arguments(self, members: Sequence[int]) -> dict[str, Any]:
        """Keyword arguments of a diffusers pipeline call for the groups ``members``."""
        index = list(members)
        return {"prompt_embeds": self.prompt_embeds[index], "negative_prompt_embeds": self.negative_prompt_embeds[index],
                "generator": [self.generators[g] for g in index], **self.settings}


def build_mapper(config: GenerationConfig) -> nn.Transformer:
    """``llm2sd_mapper``: pre-norm (``norm_first``; post-norm collapses the condition, DESIGN §7), no dropout."""
    with warnings.catch_warnings():
        # Nested-tensor fast paths do not apply to pre-norm layers; torch says so on every build.
        warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
        return nn.Transformer(
            d_model=config.cross_attention_dim, nhead=config.mapper_heads,
            num_encoder_layers=config.mapper_encoder_layers, num_decoder_layers=config.mapper_decoder_layers,
            dim_feedforward=config.mapper_ffn_dim, dropout=0.0, batch_first=True, norm_first=True,
        )


class DiffusionDecoder(TaskDecoder):
    """The link, the frozen parts, the losses and sampling shared by [GEN] (``sd``) and [EDIT] (``ip2p``)."""

    edit: ClassVar[bool] = False
    #: The super link's side of this decoder (LLM slots → ``prompt_embeds``), as opposed to the denoiser.
    link_parts: ClassVar[tuple[str, ...]] = ("emb_proj", "llm2sd_mapper_queries", "llm2sd_mapper")

    def __init__(self, config: GenerationConfig, llm_width: int) -> None:
        super().__init__()
        check_sizes(config, self.edit)
        self.config = config
        width = config.cross_attention_dim
        self.emb_proj = nn.Sequential(nn.Linear(llm_width, width), nn.GELU(), nn.Linear(width, width))
        self.llm2sd_mapper_queries = nn.Parameter(torch.randn(1, config.mapper_queries, width))  # (1, Q, d)
        self.llm2sd_mapper = build_mapper(config)
        self.sd_unet = build_unet(config)
        self.sd_vae = build_vae(config)
        self.sd_text_encoder = build_text_encoder(config.text_encoder)
        self.sd_vae.requires_grad_(False)
        self.sd_text_encoder.requires_grad_(False)
        self.sd_unet.requires_grad_(config.train_unet)
        self.caption_tokenizer = CaptionTokenizer.from_config(config.text_encoder, config.mapper_queries)
        self.noise_scheduler = build_noise_scheduler(config)
        # Sampling scheduler: replace it with any diffusers scheduler (each call uses a fresh copy).
        self.scheduler: SchedulerMixin = build_scheduler(config)

    def frozen_parameters(self) -> list[nn.Parameter]:
        """What training leaves alone: the VAE, the text encoder, and the UNet unless ``train_unet``."""
        parts = [self.sd_text_encoder, *([self.sd_vae] if self.sd_vae is not None else []),
                 *([] if self.config.train_unet else [self.sd_unet])]
        return [p for part in parts for p in part.parameters()]

    def link_parameters(self) -> list[nn.Parameter]:
        """The parameters of the ``link_parts``: ``emb_proj``, the mapper, and its bare query parameter."""
        parts = [getattr(self, name) for name in self.link_parts]
        return [p for part in parts for p in (part.parameters() if isinstance(part, nn.Module) else [part])]

    # ------------------------------------------------------------------ link
    def prompt_embeds(self, states: torch.Tensor) -> torch.Tensor:
        """Query states ``(G, n, H)`` → ``prompt_embeds`` ``(G, Q, d)``."""
        source = self.emb_proj(states.to(self.llm2sd_mapper_queries.dtype))  # (G, n, d)
        target = self.llm2sd_mapper_queries.expand(source.shape[0], -1, -1)  # (G, Q, d)
        return self.llm2sd_mapper(src=source, tgt=target)  # (G, Q, d)

    @torch.no_grad()
    def encode_captions(self, captions: Sequence[str]) -> torch.Tensor:
        """The frozen CLIP text encoder's embeddings ``(N, Q, d)`` of captions (``""`` is the null condition)."""
        tokenizer = self.caption_tokenizer
        ids = tokenizer(captions) if any(captions) else tokenizer.null_ids().expand(len(captions), -1)  # (N, Q)
        return self.sd_text_encoder(input_ids=ids.to(self.sd_text_encoder.device)).last_hidden_state

    def null_embeds(self) -> torch.Tensor:
        """CLIP's embedding of ``""`` ``(1, Q, d)``: the unconditional branch and the dropped condition."""
        return self.encode_captions([""])

    # ------------------------------------------------------------------ forward
    def forward(self, link: LinkStates, images: Sequence[ImageLike] | None = None,
                targets: Sequence[DiffusionTarget | Mapping[str, Any] | None] | None = None) -> DecoderOutput:
        """Losses when ``targets`` (one per batch element) are given, else :class:`DiffusionImages`
        sampled with the config's defaults (use :meth:`predict` to choose seeds, steps, guidance…)."""
        if targets is None:
            return DecoderOutput(predictions=self.predict(link, images))
        return self.loss(link, images, targets)

    def loss(self, link: LinkStates, images: Sequence[ImageLike] | None,
             targets: Sequence[DiffusionTarget | Mapping[str, Any] | None]) -> DecoderOutput:
        items = self.targets_of(link, images, targets)
        embeds = self.prompt_embeds(link.states)  # (G, Q, d)
        step = self.denoise(embeds, items)
        losses = {"diffusion": step.loss()}
        captioned = [g for g, item in enumerate(items) if item.caption]
        if captioned:
            reference = self.encode_captions([items[g].caption for g in captioned])  # (C, Q, d)
            losses["caption"] = F.mse_loss(embeds[captioned].float(), reference.float())
            if self.config.distill_loss_weight:
                losses["distill"] = self.distillation_loss(step, captioned, reference)
        total = (losses["diffusion"] + self.config.caption_loss_weight * losses.get("caption", 0.0)
                 + self.config.distill_loss_weight * losses.get("distill", 0.0))
        return DecoderOutput(loss=total, losses=losses)

    def targets_of(self, link: LinkStates, images: Sequence[ImageLike] | None,
                   targets: Sequence[DiffusionTarget | Mapping[str, Any] | None]) -> list[DiffusionTarget]:
        """Each group's checked training target (its batch element's; [EDIT]'s source defaults to the input image)."""
        return [self._target(targets, images, row) for row in link.sample_index.tolist()]

    def distillation_loss(self, step: DenoisingStep, captioned: Sequence[int], reference: torch.Tensor) -> torch.Tensor:
        """MSE between the UNet's prediction through the link and its prediction, on the same noisy
        input, conditioned on its own text encoder's embedding of the caption (the teacher, no gradient).

        The diffusion loss's target holds the noise itself, which no condition predicts; the teacher's
        prediction differs from the student's only through the condition, so this loss asks the link for
        exactly what the denoiser reads from a caption (its shape and place words as much as its colour).
        Groups whose condition was dropped this step are left out (their student saw the empty caption).
        """
        kept = [i for i, g in enumerate(captioned) if not bool(step.dropped_text[g])]
        if not kept:
            return step.prediction.sum() * 0.0  # keeps the graph; nothing to distil this step
        rows = torch.tensor([captioned[i] for i in kept], device=step.prediction.device)
        with torch.no_grad():
            teacher = self.sd_unet(step.unet_input[rows].to(self.sd_unet.dtype), step.timesteps[rows],
                                   encoder_hidden_states=reference[kept].to(self.sd_unet.dtype)).sample
        return F.mse_loss(step.prediction[rows].float(), teacher.float())

    def pretraining_loss(self, targets: Sequence[DiffusionTarget], images: Sequence[ImageLike] | None = None) -> DecoderOutput:
        """Stage 0: the denoiser learns captions → pictures conditioned on its own text encoder (both
        trained), without the LLM. It stands in for SD 1.5's released weights when a small model is
        trained from scratch; the link then learns to speak to it (DESIGN §7's two-step recipe)."""
        items = [self._target(targets, images, row) for row in range(len(targets))]
        tokenizer = self.caption_tokenizer
        ids = tokenizer([item.caption or "" for item in items]).to(self.sd_text_encoder.device)  # (G, Q)
        condition = self.sd_text_encoder(input_ids=ids).last_hidden_state  # (G, Q, d), with gradients
        return DecoderOutput(loss=self.denoising_loss(condition, items, trainable_null=True))

    def denoising_loss(self, condition: torch.Tensor, items: Sequence[DiffusionTarget],
                       trainable_null: bool = False) -> torch.Tensor:
        """MSE of the UNet's prediction (ε or v, as configured) given ``condition`` ``(G, Q, d)``, with condition dropout."""
        return self.denoise(condition, items, trainable_null).loss()

    def denoise(self, condition: torch.Tensor, items: Sequence[DiffusionTarget],
                trainable_null: bool = False) -> DenoisingStep:
        """One training step's UNet call: noise the targets at random timesteps, drop conditions, predict."""
        count, device = condition.shape[0], condition.device
        side = self.config.image_size
        with torch.no_grad():
            pixels = to_pixels([item.image for item in items], (side, side)).to(device, self.sd_vae.dtype)
            latents = self.sd_vae.encode(pixels).latent_dist.sample() * self.sd_vae.config.scaling_factor  # (G, c, h, w)
        latents = latents.float()  # noised in float32: in bfloat16 a schedule's ᾱ near 1 rounds to 1, adding no noise
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.config.num_train_timesteps, (count,), device=device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        drop_text, drop_image = self.condition_dropout(count, device)  # (G,) bools
        if bool(drop_text.any()):
            null_ids = self.caption_tokenizer.null_ids().to(self.sd_text_encoder.device)
            null = (self.sd_text_encoder(input_ids=null_ids).last_hidden_state if trainable_null
                    else self.null_embeds())  # (1, Q, d)
            condition = torch.where(drop_text[:, None, None], null.to(condition.dtype), condition)
        sources = self.source_pixels(items, device)  # (G, 3, H, W) for [EDIT], else None
        unet_input = self.unet_input(noisy, sources, drop_image)  # (G, in_channels, h, w)
        prediction = self.sd_unet(unet_input.to(self.sd_unet.dtype), timesteps,
                                  encoder_hidden_states=condition.to(self.sd_unet.dtype)).sample
        return DenoisingStep(unet_input, timesteps, drop_text, prediction, self.unet_target(latents, noise, timesteps),
                             self.loss_weight(pixels, sources, latents.shape[-2:]))

    def source_pixels(self, items: Sequence[DiffusionTarget], device: torch.device) -> torch.Tensor | None:
        """The source pictures ``(G, 3, H, W)`` in [−1, 1] that the UNet reads beside the noise, or ``None``."""
        return None

    def loss_weight(self, pixels: torch.Tensor, sources: torch.Tensor | None,
                    size: tuple[int, int]) -> torch.Tensor | None:
        """Per-position weights ``(G, 1, h, w)`` of the denoising loss at latent ``size``, or ``None`` (a plain mean)."""
        return None

    def unet_target(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to predict from ``add_noise(clean, noise, timesteps)``: ε, or v."""
        if self.config.prediction_type == "v_prediction":  # v = √ᾱ·ε − √(1−ᾱ)·x₀: tends to −x₀ as the noise grows
            return self.noise_scheduler.get_velocity(clean, noise, timesteps)
        return noise

    def condition_dropout(self, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Which samples train unconditionally: (drop text ``(G,)``, drop image ``(G,)``)."""
        r = torch.rand(count, device=device)
        p = self.config.condition_dropout if self.training else 0.0
        return r < p, torch.zeros_like(r, dtype=torch.bool)

    def unet_input(self, noisy: torch.Tensor, sources: torch.Tensor | None,
                   drop_image: torch.Tensor) -> torch.Tensor:
        return noisy  # (G, c, h, w)

    def _target(self, targets: Sequence[Any], images: Sequence[ImageLike] | None, row: int) -> DiffusionTarget:
        route = self.routes[0]
        if row >= len(targets) or targets[row] is None:
            raise InvalidInputError(f"targets: batch element {row} has a {route} group but no target")
        target = targets[row]
        if isinstance(target, Mapping) and set(target) <= {"image", "caption", "source"} and "image" in target:
            target = DiffusionTarget(**target)
        if not isinstance(target, DiffusionTarget):
            raise InvalidInputError(
                f"targets[{row}]: expected a DiffusionTarget(image, caption, source) or a dict with those keys, "
                f"got {describe(target)}"
            )
        return target

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def predict(self, link: LinkStates, images: Sequence[ImageLike] | None = None, *,
                captions: Sequence[str] | None = None, seed: int | Sequence[int] | None = None,
                generator: torch.Generator | None = None, num_inference_steps: int | None = None,
                guidance_scale: float | None = None, image_guidance_scale: float | None = None,
                height: int | None = None, width: int | None = None,
                scheduler: SchedulerMixin | str | type[SchedulerMixin] | None = None,
                progress: bool = False) -> DiffusionImages:
        """Sample one image per group with a diffusers pipeline and the link's ``prompt_embeds``.

        images: each batch element's input image ([EDIT] reads ``images[sample_index[g]]``).
        captions: recorded with the images (default: the link's labels, the text before each route).
        seed: one int (group g gets ``seed + g``) or one per group; otherwise seeds are drawn from
            ``generator``, or from torch's global RNG, and recorded. Initial noise is drawn on the CPU,
            so a seed gives the same noise on every device.
        height, width: output pixels, multiples of 8 (default ``image_size``; [EDIT] keeps the source's
            aspect ratio with its longer side ``image_size``).
        scheduler: a diffusers scheduler (instance, class or class name); default ``self.scheduler``.
        progress: show the pipeline's progress bar.
        """
        count = len(link)
        if count == 0:
            raise InvalidInputError(f"{self.routes[0]}: expected at least one group, got none")
        seeds = resolve_seeds(count, seed, generator)
        sampler = self._fresh_scheduler(scheduler)
        steps = self.config.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = self.config.guidance_scale if guidance_scale is None else guidance_scale
        image_guidance = self.config.image_guidance_scale if image_guidance_scale is None else image_guidance_scale
        check_sampling_options(steps, guidance, image_guidance if self.edit else None, height, width)
        pipeline = self.pipeline(sampler)
        pipeline.set_progress_bar_config(disable=not progress)
        embeds = self.prompt_embeds(link.states).to(self.sd_unet.dtype)  # (G, Q, d)
        settings = {"num_inference_steps": steps, "guidance_scale": guidance, "output_type": "pil"}
        if self.edit:
            settings["image_guidance_scale"] = image_guidance
        inputs = PipelineInputs(
            prompt_embeds=embeds, negative_prompt_embeds=self.null_embeds().to(embeds.dtype).expand_as(embeds),
            generators=[torch.Generator().manual_seed(s) for s in seeds], settings=settings,
        )
        pictures = self.sample(pipeline, inputs, link, images, height, width)
        return DiffusionImages(
            images=pictures, captions=list(captions) if captions is not None else list(link.labels),
            seeds=seeds, sample_index=link.sample_index.tolist(), route=self.routes[0],
            scheduler=type(sampler).__name__, steps=steps, guidance_scale=guidance,
            image_guidance_scale=image_guidance if self.edit else None,
        )

    def _fresh_scheduler(self, scheduler: SchedulerMixin | str | type[SchedulerMixin] | None) -> SchedulerMixin:
        if scheduler is None:
            scheduler = self.scheduler
        if isinstance(scheduler, SchedulerMixin):  # a copy: pipelines keep per-run state in the scheduler
            return type(scheduler).from_config(scheduler.config)
        return build_scheduler(self.config, scheduler)

    def pipeline(self, scheduler: SchedulerMixin):  # pragma: no cover - subclasses
        raise NotImplementedError

    def sample(self, pipeline, inputs: PipelineInputs, link: LinkStates, images: Sequence[ImageLike] | None,
               height: int | None, width: int | None) -> list[Image.Image]:  # pragma: no cover - subclasses
        raise NotImplementedError

    def _pipeline_parts(self, scheduler: SchedulerMixin) -> dict[str, Any]:
        # No tokenizer: prompts always arrive as embeddings. No safety checker: the caller's policy.
        return {"vae": self.sd_vae, "text_encoder": self.sd_text_encoder, "tokenizer": None, "unet": self.sd_unet,
                "scheduler": scheduler, "safety_checker": None, "feature_extractor": None,
                "requires_safety_checker": False}


class GenerationDecoder(DiffusionDecoder):
    """[GEN] → Stable Diffusion 1.5 (``sd``): text-to-image from the link's ``prompt_embeds``."""

    routes = (T.GEN,)

    def pipeline(self, scheduler: SchedulerMixin):
        return pipeline_class("StableDiffusionPipeline")(**self._pipeline_parts(scheduler))

    def sample(self, pipeline, inputs: PipelineInputs, link: LinkStates, images: Sequence[ImageLike] | None,
               height: int | None, width: int | None) -> list[Image.Image]:
        height = height or self.config.image_size
        width = width or self.config.image_size
        check_image_size(height, width)
        return pipeline(height=height, width=width, **inputs.arguments(range(len(link)))).images


class EditingDecoder(DiffusionDecoder):
    """[EDIT] → InstructPix2Pix (``ip2p``): the UNet reads noisy latents ‖ the source image's latents (8 channels)."""

    routes = (T.EDIT,)
    edit = True

    def condition_dropout(self, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """InstructPix2Pix's scheme (p = ``condition_dropout``): text alone, both, image alone, p each."""
        r = torch.rand(count, device=device)
        p = self.config.condition_dropout if self.training else 0.0
        return r < 2 * p, (r >= p) & (r < 3 * p)

    def _target(self, targets: Sequence[Any], images: Sequence[ImageLike] | None, row: int) -> DiffusionTarget:
        target = super()._target(targets, images, row)
        if target.source is None:
            target = DiffusionTarget(target.image, target.caption, _input_image(images, row))
        return target

    def source_pixels(self, items: Sequence[DiffusionTarget], device: torch.device) -> torch.Tensor:
        side = self.config.image_size
        return to_pixels([item.source for item in items], (side, side)).to(device)  # (G, 3, H, W)

    def unet_input(self, noisy: torch.Tensor, sources: torch.Tensor | None,
                   drop_image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            source = self.sd_vae.encode(sources.to(self.sd_vae.dtype)).latent_dist.mode()  # (G, c, h, w), unscaled as in InstructPix2Pix
        source = source * (~drop_image).to(source.dtype)[:, None, None, None]
        return torch.cat([noisy, source.to(noisy.dtype)], dim=1)  # (G, 2c, h, w)

    def loss_weight(self, pixels: torch.Tensor, sources: torch.Tensor | None,
                    size: tuple[int, int]) -> torch.Tensor | None:
        """1 + ``edit_region_weight`` where the edit changes the picture, 1 elsewhere (``None`` at weight 0).

        Changed: a channel differs by more than ``CHANGED`` between target and source pixels, grown by
        one pixel for the anti-aliased rim, then max-pooled to the latents' size."""
        extra = self.config.edit_region_weight
        if not extra:
            return None
        changed = ((pixels.float() - sources).abs().amax(1, keepdim=True) > CHANGED).float()  # (G, 1, H, W)
        changed = F.max_pool2d(changed, 3, stride=1, padding=1)
        return 1.0 + extra * F.adaptive_max_pool2d(changed, tuple(size))  # (G, 1, h, w)

    def pipeline(self, scheduler: SchedulerMixin):
        return pipeline_class("StableDiffusionInstructPix2PixPipeline")(**self._pipeline_parts(scheduler))

    def sample(self, pipeline, inputs: PipelineInputs, link: LinkStates, images: Sequence[ImageLike] | None,
               height: int | None, width: int | None) -> list[Image.Image]:
        """One pipeline run per output size; each source is resized to its group's size."""
        sources = [load_image(_input_image(images, row)) for row in link.sample_index.tolist()]
        sizes = []
        for source in sources:
            fitted = fit_size(source, self.config.image_size)
            sizes.append((width or fitted[0], height or fitted[1]))
            check_image_size(sizes[-1][1], sizes[-1][0])
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for g, size in enumerate(sizes):
            buckets[size].append(g)
        pictures: list[Image.Image | None] = [None] * len(sources)
        for size, members in buckets.items():
            resized = [sources[g].resize(size, Image.BICUBIC) for g in members]
            made = pipeline(image=resized, **inputs.arguments(members)).images
            for g, picture in zip(members, made):
                pictures[g] = picture
        return pictures


def _input_image(images: Sequence[ImageLike] | None, row: int) -> ImageLike:
    if images is None or row >= len(images) or images[row] is None:
        raise InvalidInputError(
            f"[EDIT]: batch element {row} has no input image; pass the image to edit in images[{row}] "
            "(or as DiffusionTarget.source in training)"
        )
    return images[row]


def resolve_seeds(count: int, seed: int | Sequence[int] | None, generator: torch.Generator | None) -> list[int]:
    """One seed per image: from ``seed`` (an int → consecutive seeds), else drawn from ``generator`` / torch's RNG."""
    if seed is None:
        device = generator.device if generator is not None else None  # a GPU generator draws on its GPU
        return torch.randint(0, SEED_RANGE, (count,), generator=generator, device=device).tolist()
    seeds = [int(seed) + g for g in range(count)] if is_integer(seed) else list(seed) if isinstance(seed, Sequence) else []
    if len(seeds) != count or not all(is_integer(s) and s >= 0 for s in seeds):
        raise InvalidInputError(f"seed: expected a non-negative int or {count} of them (one per image), got {seed!r}")
    return [int(s) for s in seeds]
