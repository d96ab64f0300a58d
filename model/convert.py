"""The one rename table between the released VisionLLM v2 checkpoint and this package's modules.

Rules are regular expressions applied in order to an official key; the first that matches gives
this package's key. Keys no rule touches keep their name (``llm.*``, ``vl_bridge.*`` …: our modules
use the official structure). The decoder issues extend ``RENAMES`` / ``SPLITS`` / ``DROPS``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .config import VisionLLMv2Config
from .errors import CheckpointError

# (official pattern, our replacement), applied in order; the first match wins.
RENAMES: list[tuple[str, str]] = [
    # transformers ≥ 5 CLIPVisionModel has no `vision_model` level.
    (r"^vis_encoder\.vision_model\.", "vis_encoder."),
    # transformers ≥ 5 CLIPTextModel has no `text_model` level either (SD / InstructPix2Pix text towers).
    (r"^(sd|ip2p)\.sd_text_encoder\.text_model\.", r"\1.sd_text_encoder."),
    # Grounding DINO's Swin: transformers' SwinBackbone wraps SwinModel as `swin`, attention and
    # MLP sub-modules renamed (the same renames transformers applies to its own Swin checkpoints).
    (r"^(gdino\.model\.backbone\.conv_encoder\.model)\.(embeddings|encoder)\.", r"\1.swin.\2."),
    # UniPose's Swin (Microsoft/mmdet layout at `backbone.0`) → transformers SwinBackbone(out_indices 2–4).
    (r"^unipose\.backbone\.0\.patch_embed\.proj\.", "unipose.backbone.swin.embeddings.patch_embeddings.projection."),
    (r"^unipose\.backbone\.0\.patch_embed\.norm\.", "unipose.backbone.swin.embeddings.norm."),
    (r"^unipose\.backbone\.0\.layers\.(\d+)\.", r"unipose.backbone.swin.encoder.layers.\1."),
    (r"^unipose\.backbone\.0\.norm1\.", "unipose.backbone.hidden_states_norms.stage2."),
    (r"^unipose\.backbone\.0\.norm2\.", "unipose.backbone.hidden_states_norms.stage3."),
    (r"^unipose\.backbone\.0\.norm3\.", "unipose.backbone.hidden_states_norms.stage4."),
]
# Applied after the first pass, to keys the first pass produced (sub-module renames inside gdino's Swin).
SWIN_RENAMES: list[tuple[str, str]] = [
    (r"^(gdino\.model\.backbone\..*)\.attention\.self\.query\.", r"\1.attention.q_proj."),
    (r"^(gdino\.model\.backbone\..*)\.attention\.self\.key\.", r"\1.attention.k_proj."),
    (r"^(gdino\.model\.backbone\..*)\.attention\.self\.value\.", r"\1.attention.v_proj."),
    (r"^(gdino\.model\.backbone\..*)\.attention\.output\.dense\.", r"\1.attention.o_proj."),
    (r"^(gdino\.model\.backbone\..*)\.attention\.self\.relative_position_bias_table$",
     r"\1.attention.relative_position_bias.relative_position_bias_table"),
    (r"^(gdino\.model\.backbone\..*\.blocks\.\d+)\.intermediate\.dense\.", r"\1.mlp.fc1."),
    (r"^(gdino\.model\.backbone\..*\.blocks\.\d+)\.output\.dense\.", r"\1.mlp.fc2."),
    (r"^(unipose\.backbone\.swin\..*\.blocks\.\d+)\.norm1\.", r"\1.layernorm_before."),
    (r"^(unipose\.backbone\.swin\..*\.blocks\.\d+)\.norm2\.", r"\1.layernorm_after."),
    (r"^(unipose\.backbone\.swin\..*)\.attn\.proj\.", r"\1.attention.o_proj."),
    (r"^(unipose\.backbone\.swin\..*)\.attn\.relative_position_bias_table$",
     r"\1.attention.relative_position_bias.relative_position_bias_table"),
]
# One official tensor → several of ours, chunked along dim 0 (packed q/k/v projections).
SPLITS: list[tuple[str, tuple[str, ...]]] = [
    # Grounding DINO's packed nn.MultiheadAttention → transformers' separate query/key/value Linear layers.
    (r"^(gdino\.model\.(?:encoder\.layers\.\d+\.text_enhancer_layer\.self_attn|decoder\.layers\.\d+\.(?:self_attn|encoder_attn_text)))\.in_proj_(weight|bias)$",
     (r"\1.query.\2", r"\1.key.\2", r"\1.value.\2")),
    # UniPose's Swin packs q/k/v in one Linear; transformers' Swin has three.
    (r"^unipose\.backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$",
     tuple(rf"unipose.backbone.swin.encoder.layers.\1.blocks.\2.attention.{p}_proj.\3" for p in "qkv")),
]
# Official persistent buffers that our modules recompute.
DROPS: list[str] = [r"\.relative_position_index$"]

CORE_PREFIXES = ("vis_encoder", "llm", "vl_bridge", "region_encoder", "emb_embeddings")


def map_official_key(key: str) -> list[str]:
    """Our key(s) for an official key; ``[]`` when the official tensor is dropped."""
    if any(re.search(pattern, key) for pattern in DROPS):
        return []
    for pattern, targets in SPLITS:
        if re.search(pattern, key):
            return [re.sub(pattern, target, key) for target in targets]
    for pattern, replacement in RENAMES:
        if re.search(pattern, key):
            key = re.sub(pattern, replacement, key)
            break
    for pattern, replacement in SWIN_RENAMES:
        if re.search(pattern, key):
            return [re.sub(pattern, replacement, key)]
    return [key]


@dataclass
class ManifestReport:
    """What ``convert --check`` found for the selected prefixes."""

    official: int = 0
    mapped: int = 0
    dropped: int = 0
    missing: list[str] = field(default_factory=list)        # official keys with no parameter of ours
    unexpected: list[str] = field(default_factory=list)     # our keys that no official key fills
    mismatched: list[str] = field(default_factory=list)     # same key, other shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _selected(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith((p + ".", p + "_")) for p in prefixes)


def expected_shapes(config: VisionLLMv2Config) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """Our state-dict keys and shapes for ``config`` (built without allocating weights), and which of
    them are aliases of another key (shared heads: filled through the tie, no source needed)."""
    from accelerate import init_empty_weights

    from .checkpoint import alias_keys
    from .decoders import build_decoders
    from .visionllm import VisionLLMv2

    with init_empty_weights(include_buffers=False):
        model = VisionLLMv2.from_config(config, decoders=build_decoders(config))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, set(alias_keys(model))


def check_manifest(manifest: dict[str, list], prefixes: tuple[str, ...] = CORE_PREFIXES,
                   config: VisionLLMv2Config | None = None) -> ManifestReport:
    """Map every official key under ``prefixes`` and compare with the ``7b`` preset's shapes."""
    ours, aliases = expected_shapes(config or VisionLLMv2Config.preset("7b"))
    report = ManifestReport()
    filled: set[str] = set()
    sourced: set[str] = set()  # our keys some official key points at, whatever its shape
    for key, (shape, _dtype) in manifest.items():
        if not _selected(key, prefixes):
            continue
        report.official += 1
        targets = map_official_key(key)
        if not targets:
            report.dropped += 1
            continue
        chunk = list(shape)
        chunk[0] //= len(targets)
        sourced.update(targets)
        for target in targets:
            if target not in ours:
                report.missing.append(f"{key} → {target}")
            elif tuple(ours[target]) != tuple(chunk):
                report.mismatched.append(f"{key} → {target}: official {tuple(chunk)}, ours {tuple(ours[target])}")
            else:
                filled.add(target)
        if all(t in filled for t in targets):
            report.mapped += 1
    report.unexpected = sorted(k for k in ours if _selected(k, prefixes) and k not in sourced and k not in aliases)
    return report


def load_manifest(path: str | Path) -> dict[str, list]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"manifest {path}: expected a JSON file of {{key: [shape, dtype]}}, could not read it ({error})") from error
    if not isinstance(data, dict) or not all(isinstance(v, list) and len(v) == 2 for v in data.values()):
        raise CheckpointError(f"manifest {path}: expected {{key: [shape, dtype]}}")
    return data
