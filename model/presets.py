"""The named sizes of :meth:`VisionLLMv2Config.preset`: ``tiny`` (tests), ``shapes`` (the shipped
model's architecture, trained from scratch on ShapesWorld) and ``7b`` (the released checkpoint)."""

from __future__ import annotations

from .config import (
    DetectionConfig,
    GenerationConfig,
    LinkConfig,
    LLMConfig,
    PoseConfig,
    RegionConfig,
    VisionConfig,
    VisionLLMv2Config,
)
from .tokenizer import builtin_vocab_size


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
        detection=DetectionConfig.tiny(),
        pose=PoseConfig.tiny(),
    )


def _shapes() -> VisionLLMv2Config:
    """About 5 M parameters: small enough to train from scratch on a 2-core CPU, big enough to learn
    ShapesWorld's routes. One 112² tile (64 image tokens) per picture, through a conv stem (a ViT this
    small never learns shapes from linear patches); the decoders read 128²."""
    return VisionLLMv2Config(
        vision=VisionConfig(
            hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
            image_size=112, patch_size=14, max_tiles=1, patch_embedding="conv_stem",
        ),
        llm=LLMConfig(
            vocab_size=builtin_vocab_size(), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
        ),
        region=RegionConfig(stem_channels=(16, 32), max_points=256, relative_to_image=True),
        link=LinkConfig(gen_queries=8, edit_queries=8),
        detection=DetectionConfig.tiny(),
        pose=PoseConfig.tiny(),
        generation=GenerationConfig.shapes(),
        editing=GenerationConfig.shapes(edit=True),
    )


def _seven_b() -> VisionLLMv2Config:
    """CLIP ViT-L/14-336 + Vicuna-7B-v1.5 (32,026 tokens) and the paper's decoder sizes."""
    return VisionLLMv2Config(
        detection=DetectionConfig(),
        pose=PoseConfig(),
        generation=GenerationConfig(),
        editing=GenerationConfig.instruct_pix2pix(),
    )


PRESETS = {"tiny": _tiny, "shapes": _shapes, "7b": _seven_b}
