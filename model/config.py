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
PATCH_EMBEDDINGS = ("linear", "conv_stem")  # VisionConfig.patch_embedding


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
    # "linear": CLIP's one-layer patch embedding (7B). "conv_stem": early convolutions to the same
    # grid, which a small tower trained from scratch needs to see shapes at all (TRAINING_NOTES.md).
    patch_embedding: str = "linear"

    def __post_init__(self) -> None:
        if self.patch_embedding not in PATCH_EMBEDDINGS:
            raise CheckpointError(f"vision.patch_embedding: expected one of {PATCH_EMBEDDINGS}, "
                                  f"got {self.patch_embedding!r}")

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
    # Not in the official recipe: pool each level minus its picture's mean feature. A from-scratch
    # tower's hidden states share one large vector (61 % of their energy in the shapes model), so two
    # marks on one picture pooled alike (5 pairs in 8 at cosine ≥ 0.89) and returned one object.
    relative_to_image: bool = False


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
    """Grounding DINO (Swin backbone, two-stage) + Mask-DINO mask head behind [DET]/[GRD]/[SEG].

    Defaults are the released checkpoint's sizes. ``scaled_logits`` and ``class_logit_bias``
    change the contrastive class logit from the official ``q·t`` to ``q·t/√d + b``: needed to train
    from scratch (DESIGN §7), off for the official weights.
    """

    d_model: int = 256
    num_queries: int = 900
    num_feature_levels: int = 4          # Swin stages 2–4 + one stride-2 conv
    encoder_layers: int = 6
    decoder_layers: int = 6
    attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    n_points: int = 4
    dropout: float = 0.1
    swin_embed_dim: int = 96
    swin_depths: tuple[int, ...] = (2, 2, 6, 2)
    swin_heads: tuple[int, ...] = (3, 6, 12, 24)
    swin_window: int = 7
    image_min_size: int = 800            # the detector reads its own copy of the image
    image_max_size: int = 1333
    size_divisor: int = 32
    mask_head: bool = True
    scaled_logits: bool = False
    class_logit_bias: float | None = None
    # losses (DINO / Mask-DINO weights)
    class_weight: float = 2.0
    box_l1_weight: float = 5.0
    giou_weight: float = 2.0
    mask_bce_weight: float = 5.0
    dice_weight: float = 5.0
    focal_alpha: float = 0.25
    mask_points: int = 12544             # points sampled per mask for its loss (112²)
    mask_oversample_ratio: float = 3.0   # candidates per point for the uncertain share (Mask DINO's)
    mask_importance_ratio: float = 0.75  # share of points at the most uncertain candidates; 0: all uniform
    # post-processing
    max_detections: int = 100
    score_threshold: float = 0.3
    mask_threshold: float = 0.0          # mask logit above which a pixel belongs to the object (SAM's)
    # Soft-NMS over the top detections, whatever their class: one overlapping a higher-scoring one
    # above duplicate_iou keeps duplicate_decay of its score. 1 (off) keeps DINO's own output, as the
    # official models are scored; a small model that says one object twice ships with it lower.
    duplicate_iou: float = 0.5
    duplicate_decay: float = 1.0
    # Interactive segmentation: each mark's answer is the query ranked by score × the share of the
    # mark it covers, not by score alone (an answer away from the user's click is never the one meant).
    mark_agreement: bool = True

    @classmethod
    def tiny(cls) -> DetectionConfig:
        """A few hundred thousand parameters, 128-pixel inputs: trains on a CPU in minutes."""
        return cls(
            d_model=64, num_queries=30, encoder_layers=1, decoder_layers=2, attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, dropout=0.0, swin_embed_dim=32, swin_depths=(1, 1, 2, 1),
            swin_heads=(1, 2, 4, 8), swin_window=4, image_min_size=128, image_max_size=128,
            scaled_logits=True, class_logit_bias=-4.6, mask_points=1024,
        )


@dataclass
class PoseConfig:
    """UniPose (Swin backbone, deformable encoder with link-text fusion, box stage then keypoint stage) behind [POSE].

    Defaults are the released checkpoint's sizes. The first ``box_decoder_layers`` decoder layers
    refine ``num_queries`` instance boxes; the ``num_select`` best instances then each get one query
    per keypoint name and the remaining layers refine boxes and keypoints. ``scaled_logits`` /
    ``class_logit_bias`` as in :class:`DetectionConfig` (for training from scratch).
    A ``[POSE]`` answer lists ``default_objects`` object-class groups first, then keypoint names,
    unless a :class:`~visionllm2.model.decoders.pose_loss.PoseTarget` says otherwise.
    """

    d_model: int = 256
    num_queries: int = 900
    num_select: int = 50                 # instances that enter the keypoint stage
    max_keypoints: int = 68              # 17 (``hw``) + 51 (``hw_append``) keypoint size priors
    num_feature_levels: int = 4          # Swin stages 2–4 + one stride-2 conv
    encoder_layers: int = 6
    decoder_layers: int = 6
    box_decoder_layers: int = 2
    attention_heads: int = 8
    ffn_dim: int = 2048
    text_ffn_dim: int = 1024             # the link-text enhancer layers
    fusion_dim: int = 1024               # image↔text bi-attention width (heads: attention_heads // 2)
    n_points: int = 4
    dropout: float = 0.0
    swin_embed_dim: int = 96
    swin_depths: tuple[int, ...] = (2, 2, 6, 2)
    swin_heads: tuple[int, ...] = (3, 6, 12, 24)
    swin_window: int = 7
    image_min_size: int = 800
    image_max_size: int = 1333
    size_divisor: int = 32
    default_objects: int = 1
    scaled_logits: bool = False
    class_logit_bias: float | None = None
    # losses (UniPose weights; keypoint visibility is this project's addition)
    class_weight: float = 2.0
    box_l1_weight: float = 5.0
    giou_weight: float = 2.0
    keypoint_weight: float = 10.0
    oks_weight: float = 4.0
    visibility_weight: float = 1.0
    focal_alpha: float = 0.25
    # post-processing
    max_detections: int = 50
    score_threshold: float = 0.3
    # Soft-NMS over the top instances, as DetectionConfig's: 1 (off) keeps UniPose's own output.
    duplicate_iou: float = 0.5
    duplicate_decay: float = 1.0

    @classmethod
    def tiny(cls) -> PoseConfig:
        """A few hundred thousand parameters, 128-pixel inputs: trains on a CPU in minutes."""
        return cls(
            d_model=64, num_queries=30, num_select=8, encoder_layers=1, decoder_layers=3, box_decoder_layers=1,
            attention_heads=4, ffn_dim=128, text_ffn_dim=64, fusion_dim=64, swin_embed_dim=32,
            swin_depths=(1, 1, 2, 1), swin_heads=(1, 2, 4, 8), swin_window=4, image_min_size=128,
            image_max_size=128, scaled_logits=True, class_logit_bias=-4.6,
        )


@dataclass
class UNetConfig:
    """diffusers ``UNet2DConditionModel`` sizes; the defaults are Stable Diffusion 1.5's."""

    in_channels: int = 4            # InstructPix2Pix: 2 × latent channels (noisy latents ‖ source latents)
    out_channels: int = 4
    sample_size: int = 64           # side of the UNet's input (latent or pixel) grid
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    layers_per_block: int = 2
    attention_head_dim: int = 8     # diffusers' name for the number of heads in SD 1.5
    norm_num_groups: int = 32
    # a learned position embedding on the first feature map (SD has none): lets cross-attention put
    # "on the left" on the left; without it a UNet knows where it is only from zero padding
    position_embedding: bool = False


@dataclass
class VAEConfig:
    """diffusers ``AutoencoderKL`` sizes (SD 1.5's). ``GenerationConfig.vae = None`` diffuses in pixel space."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)   # downsamples by 2 ** (len − 1)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215


@dataclass
class TextEncoderConfig:
    """The frozen CLIP text tower (SD 1.5: ViT-L/14's, 12 layers, width 768).

    It gives the caption-loss targets and the null condition (its embedding of ``""``).
    ``tokenizer``: ``"builtin:words"`` (the shipped word-level vocabulary, small presets), a local
    directory holding a CLIP tokenizer (SD 1.5's ``tokenizer/`` folder), or ``None`` — then captions
    cannot be encoded and the caption loss is refused; sampling never needs it.
    """

    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 49407       # SD 1.5's tokenizer pads with <|endoftext|>
    tokenizer: str | None = None
    # init std of the word embeddings when trained from scratch (None: CLIP's 0.02, small beside
    # what the layers add, so a caption's words barely move its states at first)
    word_embedding_std: float | None = None


#: What a generation decoder's UNet may be trained to predict (``GenerationConfig.prediction_type``).
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class GenerationConfig:
    """Stable Diffusion 1.5 ([GEN]) or InstructPix2Pix ([EDIT]) behind the ``emb_proj`` + ``llm2sd_mapper`` link.

    The defaults are SD 1.5 for [GEN]; :meth:`instruct_pix2pix` gives [EDIT]'s sizes and
    :meth:`tiny` a CPU-test size. ``guidance_scale`` is a per-model setting: 7.5 suits SD 1.5, small
    models need 1.25–1.5 (DESIGN §7).
    """

    cross_attention_dim: int = 768  # mapper width = UNet cross-attention width = CLIP text width
    mapper_queries: int = 77        # learned mapper targets = prompt_embeds length = caption length
    guidance_scale: float = 7.5
    mapper_heads: int = 8
    mapper_ffn_dim: int = 3072
    mapper_encoder_layers: int = 1
    mapper_decoder_layers: int = 1
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig | None = field(default_factory=VAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image_size: int = 512           # default output side in pixels; training targets are resized to it
    # noise schedule (training and sampling)
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # what the UNet predicts: "epsilon" (SD 1.5) or "v_prediction" (SD 2): v keeps teaching the
    # picture's layout at high noise, where an ε target is nearly the input itself
    prediction_type: str = "epsilon"
    # sampling
    scheduler: str = "DDIMScheduler"  # the name of any diffusers scheduler class
    num_inference_steps: int = 50
    image_guidance_scale: float = 1.5  # [EDIT] only: pull towards the source image
    # training
    condition_dropout: float = 0.1  # [GEN] 0.1; [EDIT] 0.05 (InstructPix2Pix's text/image scheme)
    caption_loss_weight: float = 0.1
    # ours, not the official code's: the link is also taught to make the UNet predict what it predicts
    # from the text encoder's own embedding of the caption (a noise-free target; 0 leaves it out)
    distill_loss_weight: float = 0.0
    # ours too: [EDIT]'s denoising loss weighs the pixels the edit changes (target ≠ source, and the
    # pixel around them) 1 + this, the rest 1. An edit changes a few percent of a picture, so the
    # plain mean spends almost all of its gradient on copying the source (0: the official plain MSE)
    edit_region_weight: float = 0.0
    train_unet: bool = False        # SD's UNet is frozen for [GEN]; InstructPix2Pix's is trained

    @classmethod
    def instruct_pix2pix(cls) -> GenerationConfig:
        """InstructPix2Pix at SD 1.5 sizes: an 8-channel UNet input, trained, 5% condition dropout."""
        return cls(unet=UNetConfig(in_channels=8), condition_dropout=0.05, train_unet=True)

    @classmethod
    def shapes(cls, edit: bool = False) -> GenerationConfig:
        """ShapesWorld's pictures: 32² pixel space, a 4 M-parameter UNet with cross-attention only at
        8² and 4², a 2-layer text encoder on the shipped vocabulary. The UNet and text encoder are
        pre-trained on captions in stage 0 and frozen after (``train_unet`` False); guidance is low.

        [GEN] predicts v and has a position embedding, so that its caption's place and shape words
        have something to act on; the text encoder's words start at std 1 (see the fields)."""
        return cls(
            cross_attention_dim=128, mapper_queries=16, guidance_scale=1.5, mapper_heads=4, mapper_ffn_dim=256,
            unet=UNetConfig(
                in_channels=6 if edit else 3, out_channels=3, sample_size=32, block_out_channels=(32, 64, 96, 96),
                down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                layers_per_block=1, attention_head_dim=4, norm_num_groups=8, position_embedding=not edit,
            ),
            vae=None,
            text_encoder=TextEncoderConfig(
                vocab_size=builtin_vocab_size(), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                tokenizer="builtin:words", word_embedding_std=1.0,
            ),
            image_size=32, beta_schedule="squaredcos_cap_v2", num_inference_steps=20,
            prediction_type="epsilon" if edit else "v_prediction",
            condition_dropout=0.05 if edit else 0.1, caption_loss_weight=1.0, train_unet=False,
        )

    @classmethod
    def tiny(cls, edit: bool = False, latent: bool = False) -> GenerationConfig:
        """A few hundred thousand parameters, 16² pixel-space images (32² through a tiny VAE with ``latent``).

        The text encoder reads the shipped word-level vocabulary (``<s>`` 1, ``</s>`` 2); no download.
        """
        channels = 4 if latent else 3
        return cls(
            cross_attention_dim=32, mapper_queries=16, guidance_scale=1.5, mapper_heads=4, mapper_ffn_dim=64,
            unet=UNetConfig(
                in_channels=channels * (2 if edit else 1), out_channels=channels, sample_size=16,
                block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1, attention_head_dim=2,
                norm_num_groups=8,
            ),
            vae=VAEConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4) if latent else None,
            text_encoder=TextEncoderConfig(
                vocab_size=builtin_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=1,
                eos_token_id=2, pad_token_id=2, tokenizer="builtin:words",
            ),
            image_size=32 if latent else 16, beta_schedule="squaredcos_cap_v2", num_inference_steps=10,
            condition_dropout=0.05 if edit else 0.1, train_unet=edit,
        )


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
        """The named sizes: ``tiny`` (random weights, tests), ``shapes`` (the model trained on
        ShapesWorld and shipped with the package) or ``7b`` (the released checkpoint)."""
        from .presets import PRESETS  # the presets build this class

        if name not in PRESETS:
            raise UnknownTaskError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
        config = PRESETS[name]()
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
