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
]
# One official tensor → several of ours, chunked along dim 0 (packed q/k/v projections).
SPLITS: list[tuple[str, tuple[str, ...]]] = []
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
    return any(key == p or key.startswith(p + ".") or key.startswith(p + "_") for p in prefixes)


def expected_shapes(config: VisionLLMv2Config) -> dict[str, tuple[int, ...]]:
    """Our state-dict keys and shapes for ``config``, built without allocating weights."""
    from accelerate import init_empty_weights

    from .checkpoint import alias_keys
    from .decoders import build_decoders
    from .visionllm import VisionLLMv2

    with init_empty_weights(include_buffers=False):
        model = VisionLLMv2.from_config(config, decoders=build_decoders(config))
    aliases = alias_keys(model)
    persistent = model.state_dict()
    return {k: tuple(v.shape) for k, v in persistent.items() if k not in aliases}


def check_manifest(manifest: dict[str, list], prefixes: tuple[str, ...] = CORE_PREFIXES,
                   config: VisionLLMv2Config | None = None) -> ManifestReport:
    """Map every official key under ``prefixes`` and compare with the ``7b`` preset's shapes."""
    ours = expected_shapes(config or VisionLLMv2Config.preset("7b"))
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
    report.unexpected = sorted(k for k in ours if _selected(k, prefixes) and k not in sourced)
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
