"""This package's keys → the released checkpoint's keys: the inverse of ``convert.map_official_key``.

Used to export weights trained here to the official layout (and to test the converter by a round
trip). ``tests`` check on both manifests that ``official_key(map_official_key(k)) == k``.
"""

from __future__ import annotations

import re

import torch

# Renames inside a Swin block, applied before the prefix renames (ours → official).
_SUFFIX_RENAMES: list[tuple[str, str]] = [
    (r"^(gdino\.model\.backbone\..*)\.attention\.q_proj\.", r"\1.attention.self.query."),
    (r"^(gdino\.model\.backbone\..*)\.attention\.k_proj\.", r"\1.attention.self.key."),
    (r"^(gdino\.model\.backbone\..*)\.attention\.v_proj\.", r"\1.attention.self.value."),
    (r"^(gdino\.model\.backbone\..*)\.attention\.o_proj\.", r"\1.attention.output.dense."),
    (r"^(gdino\.model\.backbone\..*)\.attention\.relative_position_bias\.relative_position_bias_table$",
     r"\1.attention.self.relative_position_bias_table"),
    (r"^(gdino\.model\.backbone\..*\.blocks\.\d+)\.mlp\.fc1\.", r"\1.intermediate.dense."),
    (r"^(gdino\.model\.backbone\..*\.blocks\.\d+)\.mlp\.fc2\.", r"\1.output.dense."),
    (r"^(unipose\.backbone\.swin\..*\.blocks\.\d+)\.layernorm_before\.", r"\1.norm1."),
    (r"^(unipose\.backbone\.swin\..*\.blocks\.\d+)\.layernorm_after\.", r"\1.norm2."),
    (r"^(unipose\.backbone\.swin\..*)\.attention\.o_proj\.", r"\1.attn.proj."),
    (r"^(unipose\.backbone\.swin\..*)\.attention\.relative_position_bias\.relative_position_bias_table$",
     r"\1.attn.relative_position_bias_table"),
]
# Prefix renames (ours → official); the first that matches wins.
_PREFIX_RENAMES: list[tuple[str, str]] = [
    (r"^vis_encoder\.", "vis_encoder.vision_model."),
    (r"^(sd|ip2p)\.sd_text_encoder\.", r"\1.sd_text_encoder.text_model."),
    (r"^(gdino\.model\.backbone\.conv_encoder\.model)\.swin\.(embeddings|encoder)\.", r"\1.\2."),
    (r"^unipose\.backbone\.swin\.embeddings\.patch_embeddings\.projection\.", "unipose.backbone.0.patch_embed.proj."),
    (r"^unipose\.backbone\.swin\.embeddings\.norm\.", "unipose.backbone.0.patch_embed.norm."),
    (r"^unipose\.backbone\.swin\.encoder\.layers\.(\d+)\.", r"unipose.backbone.0.layers.\1."),
    (r"^unipose\.backbone\.hidden_states_norms\.stage2\.", "unipose.backbone.0.norm1."),
    (r"^unipose\.backbone\.hidden_states_norms\.stage3\.", "unipose.backbone.0.norm2."),
    (r"^unipose\.backbone\.hidden_states_norms\.stage4\.", "unipose.backbone.0.norm3."),
]
# Three of ours → one packed official tensor (q, k, v concatenated along dim 0).
_MERGES: list[tuple[str, str, str]] = [
    (r"^(gdino\.model\.(?:encoder\.layers\.\d+\.text_enhancer_layer\.self_attn|decoder\.layers\.\d+\.(?:self_attn|encoder_attn_text)))\.(query|key|value)\.(weight|bias)$",
     r"\1.in_proj_\3", r"\2"),
    (r"^unipose\.backbone\.swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.(q|k|v)_proj\.(weight|bias)$",
     r"unipose.backbone.0.layers.\1.blocks.\2.attn.qkv.\4", r"\3"),
]
_PART_ORDER = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}


def official_key(key: str) -> tuple[str, int | None]:
    """The official key for one of ours, and the q/k/v part index when it is packed there."""
    for pattern, target, part in _MERGES:
        if re.search(pattern, key):
            return re.sub(pattern, target, key), _PART_ORDER[re.sub(pattern, part, key)]
    for pattern, replacement in _SUFFIX_RENAMES:
        if re.search(pattern, key):
            key = re.sub(pattern, replacement, key)
            break
    for pattern, replacement in _PREFIX_RENAMES:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key), None
    return key, None


def to_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict (aliases removed) under the released checkpoint's key names, q/k/v packed."""
    out: dict[str, torch.Tensor] = {}
    packed: dict[str, dict[int, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        name, part = official_key(key)
        if part is None:
            out[name] = tensor
        else:
            packed.setdefault(name, {})[part] = tensor
    for name, parts in packed.items():
        out[name] = torch.cat([parts[i] for i in range(3)], dim=0)
    return out
