"""The library parts behind the [GEN] and [EDIT] links, built from a :class:`GenerationConfig`.

Everything here is diffusers or transformers, configured: the UNet, the VAE (or :class:`PixelSpace`,
the identity "VAE" of a pixel-space model), the CLIP text tower, the noise schedules, the caption
tokenizer, and image ↔ tensor conversion. :mod:`.diffusion` holds the link and the decoders.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    ConfigMixin,
    DDPMScheduler,
    ModelMixin,
    SchedulerMixin,
    UNet2DConditionModel,
)
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput as VAEDecoderOutput
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from PIL import Image
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from ..config import PREDICTION_TYPES, GenerationConfig, TextEncoderConfig
from ..errors import CheckpointError, InvalidInputError, UnknownTaskError
from ..images import ImageLike, load_image


class PixelSpace(ModelMixin, ConfigMixin):
    """The identity autoencoder: a pixel-space UNet behind the ``AutoencoderKL`` interface pipelines call.

    ``encode(x).latent_dist`` is a zero-variance Gaussian at ``x``; ``decode(z)`` returns ``z``. No
    parameters; one non-persistent buffer tells pipelines its device and dtype.
    """

    @register_to_config
    def __init__(self, channels: int = 3, scaling_factor: float = 1.0) -> None:
        super().__init__()
        # Pipelines read the downsampling factor from len(block_out_channels): one entry means ×1.
        self.register_to_config(block_out_channels=(channels,), latent_channels=channels)
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        # (B, C, H, W) → mean x and, being deterministic, zero variance: sample() and mode() give x
        posterior = DiagonalGaussianDistribution(torch.cat([x, torch.zeros_like(x)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True,
               generator: torch.Generator | None = None) -> VAEDecoderOutput | tuple:
        return VAEDecoderOutput(sample=z) if return_dict else (z,)


class PositionAwareUNet(UNet2DConditionModel):
    """SD's UNet plus a learned position embedding ``(C₀, S, S)`` added to ``conv_in``'s output.

    Cross-attention gives every position the same caption; to draw "a square on the left" the
    queries must know where they are, which a plain UNet learns only from its convolutions' zero
    padding. The embedding starts as 2-D sine-cosine features (DiT's), so the place is readable from
    the first step, and is resized when a picture of another size is asked.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        channels, side = self.config.block_out_channels[0], self.config.sample_size
        self.position_embedding = nn.Parameter(sine_cosine_grid(channels, side))  # (C₀, S, S)
        self.conv_in.register_forward_hook(self._add_position)

    def _add_position(self, module: nn.Module, inputs: tuple, features: torch.Tensor) -> torch.Tensor:
        embedding = self.position_embedding.to(features.dtype)  # (C₀, S, S)
        if embedding.shape[-2:] != features.shape[-2:]:
            embedding = F.interpolate(embedding[None], size=features.shape[-2:], mode="bilinear", align_corners=False)[0]
        return features + embedding  # (B, C₀, h, w)


def sine_cosine_grid(channels: int, side: int) -> torch.Tensor:
    """2-D sine-cosine position features ``(channels, side, side)``: half the channels code x, half y
    (``channels`` a multiple of 4: :func:`check_sizes` asks it)."""
    quarter = channels // 4
    frequencies = 1.0 / (side ** (torch.arange(quarter, dtype=torch.float32) / quarter))  # (C/4,)
    angles = torch.arange(side, dtype=torch.float32)[:, None] * frequencies  # (S, C/4)
    along = torch.cat([angles.sin(), angles.cos()], dim=1).T  # (C/2, S): one axis
    x = along[:, None, :].expand(-1, side, -1)  # varies along the width
    y = along[:, :, None].expand(-1, -1, side)  # varies along the height
    return torch.cat([x, y]).contiguous()  # (C, S, S)


def build_unet(config: GenerationConfig) -> UNet2DConditionModel:
    unet = config.unet
    cls = PositionAwareUNet if unet.position_embedding else UNet2DConditionModel
    return cls(
        sample_size=unet.sample_size, in_channels=unet.in_channels, out_channels=unet.out_channels,
        down_block_types=tuple(unet.down_block_types), up_block_types=tuple(unet.up_block_types),
        block_out_channels=tuple(unet.block_out_channels), layers_per_block=unet.layers_per_block,
        attention_head_dim=unet.attention_head_dim, norm_num_groups=unet.norm_num_groups,
        cross_attention_dim=config.cross_attention_dim,
    )


def build_vae(config: GenerationConfig) -> AutoencoderKL | PixelSpace:
    if config.vae is None:
        return PixelSpace(channels=config.unet.out_channels)
    vae = config.vae
    levels = len(vae.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(vae.block_out_channels),
        layers_per_block=vae.layers_per_block, latent_channels=vae.latent_channels,
        norm_num_groups=vae.norm_num_groups, sample_size=config.image_size, scaling_factor=vae.scaling_factor,
    )


def build_text_encoder(text: TextEncoderConfig) -> CLIPTextModel:
    encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=text.vocab_size, hidden_size=text.hidden_size, intermediate_size=text.intermediate_size,
        num_hidden_layers=text.num_hidden_layers, num_attention_heads=text.num_attention_heads,
        max_position_embeddings=text.max_position_embeddings, hidden_act=text.hidden_act,
        bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id,
    ))
    if text.word_embedding_std is not None:  # a from-scratch start; loaded weights overwrite it
        with torch.no_grad():
            encoder.get_input_embeddings().weight.normal_(0.0, text.word_embedding_std)
    return encoder


def check_sizes(config: GenerationConfig, edit: bool) -> None:
    """Refuse configs whose parts cannot fit together (or that ask an unknown UNet target), naming the fields to change."""
    latent = config.unet.out_channels
    expected_in = latent * 2 if edit else latent
    problems = []
    if config.vae is not None and config.vae.latent_channels != latent:
        problems.append(f"vae.latent_channels {config.vae.latent_channels} ≠ unet.out_channels {latent}")
    if config.vae is None and latent != 3:
        problems.append(f"a pixel-space model (vae None) needs unet.out_channels 3, got {latent}")
    if config.unet.in_channels != expected_in:
        kind = "[EDIT] (noisy ‖ source latents)" if edit else "[GEN]"
        problems.append(f"unet.in_channels {config.unet.in_channels} ≠ {expected_in} for {kind}")
    if config.text_encoder.hidden_size != config.cross_attention_dim:
        problems.append(f"text_encoder.hidden_size {config.text_encoder.hidden_size} ≠ cross_attention_dim "
                        f"{config.cross_attention_dim} (the caption loss compares them)")
    if config.text_encoder.max_position_embeddings < config.mapper_queries:
        problems.append(f"text_encoder.max_position_embeddings {config.text_encoder.max_position_embeddings} < "
                        f"mapper_queries {config.mapper_queries} (captions are encoded to that length)")
    if config.cross_attention_dim % config.mapper_heads:
        problems.append(f"cross_attention_dim {config.cross_attention_dim} is not a multiple of "
                        f"mapper_heads {config.mapper_heads}")
    if config.unet.position_embedding and config.unet.block_out_channels[0] % 4:
        problems.append(f"unet.position_embedding needs block_out_channels[0] divisible by 4 (sine and cosine of x "
                        f"and y), got {config.unet.block_out_channels[0]}")
    if config.prediction_type not in PREDICTION_TYPES:
        problems.append(f"prediction_type: expected one of {PREDICTION_TYPES}, got {config.prediction_type!r}")
    if problems:
        raise CheckpointError("generation config: " + "; ".join(problems))


# ---------------------------------------------------------------------- schedulers
def schedule_config(config: GenerationConfig) -> dict:
    """The noise schedule as diffusers scheduler settings (SD 1.5's ``scheduler_config.json`` keys).

    A pixel-space model (``vae`` None) clamps each step's clean-image estimate to the pixel range
    [−1, 1]; latents are unbounded, so SD-style models do not. Without the clamp, the near-singular
    first steps of a cosine schedule blow an ε error up by 1/√ᾱ and the picture drifts to one
    saturated colour (measured on `shapes`: DDPM, 100 steps, the asked colour 13 % → 67 %). The
    clamp is dynamic thresholding with its ceiling at 1, not ``clip_sample``: Stable Diffusion
    pipelines reset ``clip_sample`` to False, and more schedulers (DPM-Solver, UniPC) threshold.
    """
    pixel_space = config.vae is None
    return {
        "num_train_timesteps": config.num_train_timesteps, "beta_start": config.beta_start,
        "beta_end": config.beta_end, "beta_schedule": config.beta_schedule, "prediction_type": config.prediction_type,
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
        "thresholding": pixel_space, "sample_max_value": 1.0,
    }


def build_scheduler(config: GenerationConfig, kind: str | type[SchedulerMixin] | None = None) -> SchedulerMixin:
    """A diffusers scheduler on the model's noise schedule: ``kind`` is a class or its name (default: the config's)."""
    cls = scheduler_class(config.scheduler if kind is None else kind)
    accepted = inspect.signature(cls.__init__).parameters
    return cls.from_config({k: v for k, v in schedule_config(config).items() if k in accepted})


def scheduler_class(kind: str | type[SchedulerMixin]) -> type[SchedulerMixin]:
    """The diffusers scheduler class ``kind`` names (or is); else an :class:`UnknownTaskError`."""
    cls = getattr(diffusers, kind, None) if isinstance(kind, str) else kind
    if not (inspect.isclass(cls) and issubclass(cls, SchedulerMixin)):
        raise UnknownTaskError(
            f"scheduler: expected a diffusers scheduler class or its name (DDIMScheduler, "
            f"DPMSolverMultistepScheduler, EulerDiscreteScheduler, …), got {kind!r}"
        )
    return cls


def parse_sampler(text: str) -> tuple[str, int]:
    """``"DDPMScheduler:50"`` → ``("DDPMScheduler", 50)``: a diffusers scheduler and a positive number
    of steps; else an :class:`InvalidInputError` (a ``ValueError``) saying what came."""
    name, _, steps = text.partition(":")
    scheduler_class(name)
    if not steps.isdigit() or int(steps) < 1:
        raise InvalidInputError(f"sampler: expected SCHEDULER:STEPS with STEPS a positive number, got {text!r}")
    return name, int(steps)


def pipeline_class(name: str) -> type:
    """The diffusers pipeline ``name``, imported on first use (pipelines import slowly; only sampling
    needs them). Their modules import transformers' CLIP and SigLIP image processors, which warn once
    on machines without torchvision; these pipelines run without a feature extractor, so that notice
    is muted while they import."""
    notices = logging.getLogger("transformers.utils.import_utils")
    level = notices.level
    notices.setLevel(logging.ERROR)
    try:
        return getattr(diffusers, name)
    finally:
        notices.setLevel(level)


def build_noise_scheduler(config: GenerationConfig) -> DDPMScheduler:
    """The training-time forward process (``add_noise``)."""
    return build_scheduler(config, DDPMScheduler)


# ---------------------------------------------------------------------- captions
class CaptionTokenizer:
    """Captions → CLIP text-encoder ids ``(N, L)``: ``<bos> words… <eos> <pad>…``, truncated to ``L``.

    This is what CLIP's tokenizer gives with ``padding="max_length", truncation=True``; the word ids
    come from the shipped word-level vocabulary (``builtin:words``) or a local CLIP tokenizer.
    """

    def __init__(self, text: TextEncoderConfig, length: int, words: Callable[[str], list[int]] | None) -> None:
        self.text = text
        self.length = length
        self.words = words

    @classmethod
    def from_config(cls, text: TextEncoderConfig, length: int) -> CaptionTokenizer:
        spec = text.tokenizer
        if spec is None:
            return cls(text, length, None)
        if spec == "builtin:words":
            from ..tokenizer import Tokenizer

            return cls(text, length, Tokenizer.builtin().encode_text)
        if not Path(spec).is_dir():
            raise CheckpointError(
                f"text_encoder.tokenizer: expected 'builtin:words' or a local directory with a CLIP tokenizer "
                f"(SD 1.5's tokenizer/ folder: vocab.json, merges.txt), got {spec!r}; nothing is downloaded"
            )
        from transformers import CLIPTokenizer

        clip = CLIPTokenizer.from_pretrained(spec, local_files_only=True)
        return cls(text, length, lambda caption: clip(caption, add_special_tokens=False).input_ids)

    def null_ids(self) -> torch.Tensor:
        """The ids of the empty caption ``""`` ``(1, L)``: needs no vocabulary."""
        return self._pack([[]])

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        if self.words is None:
            raise InvalidInputError(
                "captions: the caption loss needs a CLIP tokenizer, and GenerationConfig.text_encoder.tokenizer is "
                "None; set it to a local directory holding SD 1.5's tokenizer (vocab.json, merges.txt)"
            )
        return self._pack([self.words(caption) for caption in captions])

    def _pack(self, words: Sequence[list[int]]) -> torch.Tensor:
        ids = torch.full((len(words), self.length), self.text.pad_token_id, dtype=torch.long)  # (N, L)
        for row, run in enumerate(words):
            run = [self.text.bos_token_id, *run[: self.length - 2], self.text.eos_token_id]
            ids[row, : len(run)] = torch.tensor(run)
        return ids


# ---------------------------------------------------------------------- pixels
def fit_size(image: Image.Image, side: int, multiple: int = 8) -> tuple[int, int]:
    """(width, height) with the longer side ``side`` and the aspect ratio kept, both multiples of ``multiple``."""
    width, height = image.size
    scale = side / max(width, height)
    return tuple(max(multiple, round(x * scale / multiple) * multiple) for x in (width, height))


def to_pixels(images: Sequence[ImageLike], size: tuple[int, int]) -> torch.Tensor:
    """Any images → ``(N, 3, H, W)`` float32 in [−1, 1], resized (bicubic) to ``size`` = (width, height)."""
    arrays = [np.asarray(load_image(image).resize(size, Image.BICUBIC), dtype=np.float32) for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


