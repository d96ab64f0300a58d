"""What ``Session.from_pretrained`` loads: a local model directory, the shipped model, or a preset
with random weights, onto a checked device and dtype (optionally spread by an accelerate device map)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ._arguments import checked_device, checked_dtype
from .errors import CheckpointError


def load_model(path_or_preset: str, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None,
               device_map: Any = None, offload_folder: str | None = None) -> Any:
    """The model ``path_or_preset`` names; see :meth:`visionllm2.sdk.Session.from_pretrained`."""
    from visionllm2.model.checkpoint import shipped_model_dir
    from visionllm2.model.config import VisionLLMv2Config
    from visionllm2.model.decoders import build_decoders
    from visionllm2.model.tokenizer import Tokenizer
    from visionllm2.model.visionllm import VisionLLMv2

    device = checked_device(device if device is not None or device_map is None else mapped_device(device_map))
    dtype = checked_dtype(dtype, device)
    shipped = shipped_model_dir(path_or_preset)
    if shipped is not None:
        path_or_preset = str(shipped)
    if Path(path_or_preset).is_dir():
        return VisionLLMv2.from_pretrained(path_or_preset, torch_dtype=dtype, device=None if device_map else device,
                                           device_map=device_map, offload_folder=offload_folder)
    if "/" in path_or_preset or "\\" in path_or_preset:  # meant as a path (or a hub id), not a preset
        raise CheckpointError(f"{path_or_preset}: expected a local model directory (with config.json) or a preset "
                              "name ('shapes', 'tiny', '7b'); hub ids are not fetched — download the files first "
                              "(see the README)")
    config = VisionLLMv2Config.preset(path_or_preset)
    return VisionLLMv2.from_config(config, build_decoders(config), Tokenizer.from_spec(config.llm.tokenizer)).to(device, dtype)


def mapped_device(device_map: Any) -> str | None:
    """Where an accelerate ``device_map`` runs the model, for the default dtype. A strategy ("auto",
    "balanced" …) fills the GPUs first: None, the default device. A dict runs on a GPU when it names
    one (an index, "cuda:1"), else on the CPU: "cpu" and "disk" alone mean float32, as on a machine
    without a GPU."""
    if not isinstance(device_map, dict):
        return None
    places = [place.type if isinstance(place, torch.device) else str(place) for place in device_map.values()]
    return "cuda" if any(place.isdigit() or place.startswith("cuda") for place in places) else "cpu"
