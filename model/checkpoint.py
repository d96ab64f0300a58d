"""``save_pretrained`` / ``from_pretrained``: ``config.json`` + (sharded) safetensors + tokenizer.

Loading is strict: every key the model expects must be in the files with its shape, and nothing
else may be; violations raise :class:`CheckpointError` naming the keys. Parameters shared between
modules (tied heads) are stored once and filled through the tie. Nothing touches the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import VisionLLMv2Config
from .errors import CheckpointError
from .tokenizer import Tokenizer

CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


#: Models trained by this project and shipped inside the package: preset name → folder.
SHIPPED_MODELS_DIR = Path(__file__).with_name("weights")
SHIPPED_MODELS = ("shapes",)


def shipped_model_dir(name: str) -> Path | None:
    """The folder of a shipped model (``"shapes"``), ``None`` for any other name.

    A shipped name whose weights are missing (a broken install) is an error, not random weights.
    """
    if name not in SHIPPED_MODELS:
        return None
    folder = SHIPPED_MODELS_DIR / name
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"the shipped {name!r} model is missing from {folder}; reinstall visionllm2 "
                              "(the weights are package data)")
    return folder


def alias_keys(module: torch.nn.Module) -> dict[str, str]:
    """State-dict keys whose tensor is the same object as an earlier key's: alias → kept key."""
    seen: dict[int, str] = {}
    aliases = {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        identity = id(tensor)
        if identity in seen:
            aliases[key] = seen[identity]
        else:
            seen[identity] = key
    return aliases


def save_pretrained(model: torch.nn.Module, directory: str | Path, max_shard_size: str = "2GB") -> None:
    """Write ``config.json``, the tokenizer and the weights (one file, or shards + index when large)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / CONFIG_NAME)
    if model.tokenizer is not None:
        model.tokenizer.backend.save(str(directory / TOKENIZER_NAME))
    aliases = alias_keys(model)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in aliases}
    split = split_torch_state_dict_into_shards(
        state, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: state[k] for k in keys}, str(directory / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {"aliases": aliases}, "weight_map": split.tensor_to_filename}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=2))


def checkpoint_files(directory: Path) -> list[Path]:
    index = directory / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [directory / name for name in sorted(set(weight_map.values()))]
    single = directory / WEIGHTS_NAME
    if single.is_file():
        return [single]
    raise CheckpointError(f"{directory}: expected {WEIGHTS_NAME} or {INDEX_NAME}, found neither")


@contextmanager
def readable_weights(path: Path) -> Iterator[None]:
    """A truncated or corrupt weights file becomes a :class:`CheckpointError` that names it."""
    try:
        yield
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: expected a readable safetensors file, could not read it ({error})") from error


def check_keys(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], where: str) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if missing or unexpected or mismatched:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (f" … (+{len(keys) - 10})" if len(keys) > 10 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {head(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {head(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} with other shapes: " + head(
                [f"{k} expected {tuple(expected[k])} got {tuple(found[k])}" for k in mismatched]))
        raise CheckpointError(f"{where}: " + "; ".join(parts))


def load_tokenizer(directory: Path, config: VisionLLMv2Config) -> Tokenizer | None:
    if (directory / TOKENIZER_NAME).is_file():
        from tokenizers import Tokenizer as BackendTokenizer

        backend = BackendTokenizer.from_file(str(directory / TOKENIZER_NAME))
        word_level = json.loads(backend.to_str())["model"]["type"] == "WordLevel"
        return Tokenizer(backend, word_level=word_level)
    spec = config.llm.tokenizer
    if spec == "builtin:words":
        return Tokenizer.builtin()
    return Tokenizer.from_directory(spec) if Path(spec).is_dir() else None


def load_offloaded_decoders(model: Any, files: list[Path], torch_dtype: torch.dtype | None) -> Any:
    """Load each decoder that a device map offloaded onto the CPU, whole, and run it there.

    accelerate keeps offloaded weights on the meta device and loads each module's own ones only
    while that module is called. The decoders use their parts outside those calls (a shared box
    head, a denoiser run by a diffusers pipeline, not by ``forward``), so an offloaded decoder would
    read empty weights. Slower on the CPU than on a GPU, but right; the LLM's layers offload as usual.
    """
    from accelerate.hooks import remove_hook_from_module
    from accelerate.utils import set_module_tensor_to_device

    offloaded = {name: decoder for name, decoder in model.decoders().items()
                 if any(parameter.is_meta for parameter in decoder.parameters())}
    if not offloaded:
        return model
    for decoder in offloaded.values():
        remove_hook_from_module(decoder, recurse=True)
    for path in files:  # one pass over the shards for all of them
        with readable_weights(path), safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                if key.partition(".")[0] in offloaded:
                    value = handle.get_tensor(key)
                    dtype = torch_dtype if torch_dtype is not None and value.is_floating_point() else None
                    set_module_tensor_to_device(model, key, "cpu", value=value, dtype=dtype)
    for name, decoder in offloaded.items():
        decoder.to("cpu")  # its buffers too
        missing = [key for key, parameter in decoder.named_parameters() if parameter.is_meta]
        if missing:
            raise CheckpointError(f"{name}: offloaded parameters left without weights: {missing[:10]}")
    return model


def from_pretrained(directory: str | Path, torch_dtype: torch.dtype | None = None,
                    device: str | torch.device | None = None, device_map: Any = None,
                    offload_folder: str | Path | None = None) -> Any:
    """Load a model written by :func:`save_pretrained` (or by ``visionllm2 convert``).

    ``device_map`` ("auto", "balanced", a dict …) dispatches through accelerate, with CPU offload
    for GPUs too small for the whole model, and disk offload to ``offload_folder`` when the map
    names "disk"; otherwise the model goes to ``device``.
    """
    from accelerate import init_empty_weights

    from .visionllm import VisionLLMv2

    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        raise CheckpointError(
            f"{directory}: expected a model directory with {CONFIG_NAME}; "
            "hub ids are not fetched — download the files first (see the README)"
        )
    try:
        config = VisionLLMv2Config.load(directory / CONFIG_NAME)
    except CheckpointError as error:  # say which file: the message alone names only the problem
        raise CheckpointError(f"{directory / CONFIG_NAME}: {error}") from error
    tokenizer = load_tokenizer(directory, config)
    # Parameters on the meta device, buffers (rotary frequencies, position ids) computed for real.
    with init_empty_weights(include_buffers=False):
        model = VisionLLMv2.from_config(config, tokenizer=tokenizer)
    aliases = alias_keys(model)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in aliases}
    files = checkpoint_files(directory)
    found = {}
    for path in files:
        with readable_weights(path), safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                found[key] = tuple(handle.get_slice(key).get_shape())
    check_keys(expected, found, str(directory))
    if device_map is not None:
        from accelerate import load_checkpoint_and_dispatch

        model = load_checkpoint_and_dispatch(
            model, str(directory), device_map=device_map, dtype=torch_dtype, offload_folder=offload_folder,
            no_split_module_classes=["LlamaDecoderLayer", "CLIPEncoderLayer"],
        )
        return load_offloaded_decoders(model, files, torch_dtype)
    for path in files:  # shard by shard: peak memory stays near one shard
        with readable_weights(path), safe_open(str(path), framework="pt", device=str(device or "cpu")) as handle:
            shard = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
        if torch_dtype is not None:
            shard = {k: v.to(torch_dtype) if v.is_floating_point() else v for k, v in shard.items()}
        # Keys were checked above; strict=False only because each shard holds part of them.
        model.load_state_dict(shard, strict=False, assign=True)
    still_meta = [name for name, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise CheckpointError(f"{directory}: parameters left without weights: {still_meta[:10]}")
    return model.to(device=device or "cpu", dtype=torch_dtype)
