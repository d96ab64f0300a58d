"""``visionllm2 convert OFFICIAL_DIR OUT_DIR``: the released checkpoint → this package's layout.

Streams shard by shard (peak memory ≈ one official shard + one output shard): each official
tensor is renamed (or split into q/k/v) through the one table in :mod:`convert`, checked against
the shapes the target config builds, and written to sharded safetensors with ``config.json`` and
``tokenizer.json``. Unknown official keys, missing parameters and shape mismatches are refused
with the list of keys; nothing is written partially under the final names.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .checkpoint import CONFIG_NAME, INDEX_NAME, TOKENIZER_NAME, check_keys
from .config import VisionLLMv2Config
from .convert import expected_shapes, map_official_key
from .errors import CheckpointError
from .tokenizer import Tokenizer
from .tokens import SPECIAL_TOKENS

OFFICIAL_INDEXES = ("pytorch_model.bin.index.json", "model.safetensors.index.json")
OFFICIAL_SINGLES = ("pytorch_model.bin", "model.safetensors")


def official_shards(directory: Path) -> list[Path]:
    """The official weight files: from an index (``.bin`` or safetensors), or a single file."""
    for name in OFFICIAL_INDEXES:
        if (directory / name).is_file():
            weight_map = json.loads((directory / name).read_text())["weight_map"]
            return [directory / f for f in sorted(set(weight_map.values()))]
    for name in OFFICIAL_SINGLES:
        if (directory / name).is_file():
            return [directory / name]
    raise CheckpointError(f"{directory}: expected {' or '.join(OFFICIAL_INDEXES + OFFICIAL_SINGLES)}, found none")


def _read_shard(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
    # Pickles only through the weights-only unpickler: never plain pickle on downloaded files.
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def convert_checkpoint(official_dir: str | Path, out_dir: str | Path, config: VisionLLMv2Config | None = None,
                       tokenizer: str | None = None, max_shard_bytes: int = 5 * 2**30,
                       dtype: torch.dtype | None = None, progress: Callable[[str], None] | None = None) -> Path:
    """Convert and write; returns ``out_dir``. ``config`` defaults to the ``7b`` preset; ``tokenizer``
    to the official directory (a Llama/Vicuna tokenizer; the 26 special tokens are verified)."""
    official_dir, out_dir = Path(official_dir), Path(out_dir)
    shards = official_shards(official_dir)  # fail fast on a wrong directory
    config = config or VisionLLMv2Config.preset("7b")
    ours, aliases = expected_shapes(config)
    expected = {k: v for k, v in ours.items() if k not in aliases}
    tok = _verified_tokenizer(tokenizer or str(official_dir), config)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    found: dict[str, tuple[int, ...]] = {}
    unknown: list[str] = []
    buffer: dict[str, torch.Tensor] = {}
    written: list[tuple[str, list[str]]] = []

    def flush() -> None:
        if buffer:
            name = f"model-{len(written) + 1:05d}.safetensors"
            save_file({k: v.contiguous() for k, v in buffer.items()}, str(staging / name), metadata={"format": "pt"})
            written.append((name, list(buffer)))
            buffer.clear()

    for shard in shards:
        if progress:
            progress(f"reading {shard.name}")
        for key, tensor in _read_shard(shard).items():
            targets = map_official_key(key)
            if targets and not all(t in ours for t in targets):
                unknown.append(key)
                continue
            pieces = torch.chunk(tensor, len(targets), dim=0) if len(targets) > 1 else [tensor] * len(targets)
            for target, piece in zip(targets, pieces):
                if target in aliases:
                    continue  # a shared head stored under another name too: filled through the tie
                piece = piece.to(dtype) if dtype is not None and piece.is_floating_point() else piece
                found[target] = tuple(piece.shape)
                buffer[target] = piece.clone() if len(targets) > 1 else piece
            if sum(v.numel() * v.element_size() for v in buffer.values()) >= max_shard_bytes:
                flush()
    flush()
    if unknown:
        shutil.rmtree(staging)
        head = ", ".join(unknown[:10]) + (f" … (+{len(unknown) - 10})" if len(unknown) > 10 else "")
        raise CheckpointError(f"{official_dir}: {len(unknown)} official keys have no parameter in this model: {head}")
    try:
        check_keys(expected, found, str(official_dir))
    except CheckpointError:
        shutil.rmtree(staging)
        raise
    total = sum((staging / name).stat().st_size for name, _ in written)
    renamed = []
    for index, (name, keys) in enumerate(written, start=1):
        final = f"model-{index:05d}-of-{len(written):05d}.safetensors"
        (staging / name).rename(staging / final)
        renamed.append((final, keys))
    index = {"metadata": {"total_size": total, "aliases": {}},
             "weight_map": {key: name for name, keys in renamed for key in keys}}
    (staging / INDEX_NAME).write_text(json.dumps(index, indent=2))
    config.save(staging / CONFIG_NAME)
    tok.backend.save(str(staging / TOKENIZER_NAME))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return out_dir


def _verified_tokenizer(spec: str, config: VisionLLMv2Config) -> Tokenizer:
    tokenizer = Tokenizer.from_spec(spec)
    first = config.llm.vocab_size - len(SPECIAL_TOKENS)
    got = {t: tokenizer.token_id(t) for t in ("[PAD]", "[DET]", "[EMB]")}
    want = {"[PAD]": first, "[DET]": first + 12, "[EMB]": first + 18}
    if got != want:
        raise CheckpointError(f"tokenizer {spec}: special-token ids {got}, the model expects {want} "
                              f"(vocab {config.llm.vocab_size}: 32012 for [DET] and 32018 for [EMB] in the 7B)")
    return tokenizer
