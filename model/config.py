"""Nested configuration of VisionLLM v2, serialised to JSON.

``VisionLLMv2Config(vision=…, llm=…, region=…, link=…, detection=…, pose=…, generation=…, editing=…)``.
Every part is a dataclass of plain values so that ``config.json`` reads like the model it builds.
``VisionLLMv2Config.preset(name)`` gives the named sizes: ``tiny`` (random, for tests) and ``7b``
(the released checkpoint's sizes).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError, UnknownTaskError
from .tokenizer import builtin_vocab_size

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class VisionConfig:
    """CLIP ViT tower and the dynamic-resolution tiling in front of it."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 336          # side of one square tile
    patch_size: int = 14
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    select_layer: int = -2         # features from the second-to-last layer, CLS dropped
    min_tiles: int = 1
    max_tiles: int = 4             # 4 at inference, 6 in training (paper)
    use_thumbnail: bool = True     # a whole-image thumbnail tile when there is more than one tile
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    max_image_pixels: int = 8192 * 8192  # larger inputs are refused as decompression bombs

    @property
    def tokens_per_tile(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class LLMConfig:
    """The Llama (Vicuna) language model; ``vocab_size`` includes the 26 added special tokens."""

    vocab_size: int = 32026
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # Where the tokenizer comes from: a local Llama/Vicuna tokenizer directory for `7b`, or
    # "builtin:words" for the word-level tokenizer this project ships for small presets.
    tokenizer: str = "builtin:words"


@dataclass
class RegionConfig:
    """Region encoder for visual prompts (DESIGN §2): a 4-channel conv stem, ×14 downsample."""

    stem_channels: tuple[int, int] = (64, 256)
    max_points: int = 2304     # points sampled inside a mask per level
    num_levels: int = 3        # the ViT's last three hidden states


@dataclass
class LinkConfig:
    """Super-link queries: how many query embeddings each routing token owns."""

    det_queries: int = 4       # shared by [DET] [GRD] [SEG]
    pose_queries: int = 4
    gen_queries: int = 64
    edit_queries: int = 64
    max_groups: int = 256      # Grounding DINO's max_text_len


@dataclass
class DetectionConfig:
    """Grounding DINO + mask head behind [DET]/[GRD]/[SEG] (sizes filled in by the decoder issue)."""

    d_model: int = 256
    num_queries: int = 900
    num_feature_levels: int = 4


@dataclass
class PoseConfig:
    """UniPose behind [POSE]."""

    d_model: int = 256
    num_queries: int = 900
    max_keypoints: int = 68


@dataclass
class GenerationConfig:
    """Stable Diffusion 1.5 ([GEN]) or InstructPix2Pix ([EDIT]) behind the mapper link."""

    cross_attention_dim: int = 768
    mapper_queries: int = 77
    guidance_scale: float = 7.5


@dataclass
class VisionLLMv2Config:
    """The whole model. Decoder sub-configs are ``None`` when the decoder is not built."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    region: RegionConfig = field(default_factory=RegionConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    detection: DetectionConfig | None = None
    pose: PoseConfig | None = None
    generation: GenerationConfig | None = None
    editing: GenerationConfig | None = None
    preset_name: str | None = None

    # ---------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str) -> VisionLLMv2Config:
        """The named sizes: ``tiny`` (random weights, tests) or ``7b`` (the released checkpoint)."""
        builders = {"tiny": _tiny, "7b": _seven_b}
        if name not in builders:
            raise UnknownTaskError(f"unknown preset {name!r}: expected one of {sorted(builders)}")
        config = builders[name]()
        config.preset_name = name
        return config

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisionLLMv2Config:
        return _from_dict(cls, data, "config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> VisionLLMv2Config:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"config is not valid JSON: {error}") from error
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> VisionLLMv2Config:
        return cls.from_json(Path(path).read_text())


def _from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys with the path that holds them."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"{where}: unknown keys {unknown} for {cls.__name__}; expected a subset of {sorted(known)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        target = next((t for t in options if dataclasses.is_dataclass(t)), None)
        if target is not None and value is not None:
            value = _from_dict(target, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def _tiny() -> VisionLLMv2Config:
    """A few hundred thousand parameters: a whole forward in milliseconds on a CPU."""
    return VisionLLMv2Config(
        vision=VisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
            image_size=56, patch_size=14, max_tiles=4,
        ),
        llm=LLMConfig(
            vocab_size=builtin_vocab_size(),  # the shipped word-level tokenizer
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048,
        ),
        region=RegionConfig(stem_channels=(8, 16), max_points=64),
        link=LinkConfig(gen_queries=8, edit_queries=8),
    )


def _seven_b() -> VisionLLMv2Config:
    """CLIP ViT-L/14-336 + Vicuna-7B-v1.5 (32,026 tokens) and the paper's decoder sizes."""
    return VisionLLMv2Config(
        detection=DetectionConfig(),
        pose=PoseConfig(),
        generation=GenerationConfig(),
        editing=GenerationConfig(),
    )
