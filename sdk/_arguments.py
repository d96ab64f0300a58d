"""What a Session accepts: its verbs' option names, their arguments and options, and the device it
loads onto, checked and normalised (a wrong one raises a typed error before the session changes)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from visionllm2.model.errors import describe, is_integer
from visionllm2.model.options import check_decoding_options, check_sampling_options

from .errors import InvalidInputError, InvalidPromptError
from .prompts import VisualPrompt, as_visual_prompt
from .results import Result

SESSION_OPTIONS = ("pose_objects", "keypoint_names")
DIFFUSION_OPTIONS = ("num_inference_steps", "guidance_scale", "image_guidance_scale", "height", "width", "scheduler")
LLM_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed", "logits_processor", "streamer")
OPTIONS = (*LLM_OPTIONS, *DIFFUSION_OPTIONS, *SESSION_OPTIONS)


def check_options(options: dict[str, Any]) -> None:
    """A typed error for an unknown option, or one of the wrong type or out of range, before the
    turn runs (the decoders check their own again, for callers that reach them directly)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:  # a misspelt option would otherwise be dropped without a word
        raise InvalidInputError(f"options: unknown {unknown}; expected some of {sorted(OPTIONS)}")
    seed = options.get("seed")
    if seed is not None and (not is_integer(seed) or seed < 0):
        raise InvalidInputError(f"seed: expected an integer ≥ 0, got {seed!r}")
    processor = options.get("logits_processor")
    if processor is not None and not callable(processor):
        raise InvalidInputError(f"logits_processor: expected a callable (step, logits) → logits, got {describe(processor)}")
    streamer = options.get("streamer")
    if streamer is not None and not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        raise InvalidInputError(f"streamer: expected a transformers streamer (put(ids), end()), got {describe(streamer)}")
    check_decoding_options(**{k: options[k] for k in ("max_new_tokens", "do_sample", "temperature", "top_p") if k in options})
    check_sampling_options(**{k: options[k] for k in DIFFUSION_OPTIONS if k in options and k != "scheduler"})


def llm_options(options: dict[str, Any], device: Any, max_new_tokens: int) -> dict[str, Any]:
    """The options ``model.generate`` reads: the decoders' dropped, a ``seed`` as a generator on
    ``device``, ``max_new_tokens`` defaulting to the session's."""
    picked = {k: v for k, v in options.items() if k not in (*DIFFUSION_OPTIONS, *SESSION_OPTIONS, "seed")}
    if options.get("seed") is not None:
        picked["generator"] = torch.Generator(device=device).manual_seed(int(options["seed"]))
    picked.setdefault("max_new_tokens", max_new_tokens)
    return picked


def diffusion_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options a diffusion decoder reads (steps, guidance, size, scheduler, seed)."""
    picked = {k: v for k, v in options.items() if k in DIFFUSION_OPTIONS}
    if options.get("seed") is not None:
        picked["seed"] = int(options["seed"])
    return picked


def relabel(result: Result, labels: list[str]) -> Result:
    """Put the verb's own words on a result: one label per group, or per instance of a known class."""
    if not hasattr(result, "labels"):
        return result
    if getattr(result, "kind", "") == "poses":
        return result.model_copy(update={"asked": [*labels, *result.keypoint_names]})
    return result.model_copy(update={"labels": labels[: len(result)], "asked": labels})


def as_list(values: Any, what: str) -> list[Any]:
    """``values`` as a list (``None``: empty); a lone prompt or bool mask, a string or a non-iterable
    raises (pass ``[prompt]``)."""
    if values is None:
        return []
    lone_mask = isinstance(values, np.ndarray) and values.dtype == bool
    if isinstance(values, (str, bytes, VisualPrompt)) or lone_mask or not isinstance(values, Iterable):
        raise InvalidPromptError(f"{what}: expected a list (e.g. [Point(x=5, y=5)] or turn.boxes), got {describe(values)}")
    return list(values)


def example_pairs(examples: Sequence[Any]) -> list[tuple[Any, VisualPrompt]]:
    """``(reference image, prompt)`` pairs checked, each prompt as a :class:`VisualPrompt`."""
    pairs = []
    for index, example in enumerate(as_list(examples, "examples")):
        if not isinstance(example, (tuple, list)) or len(example) != 2:
            raise InvalidPromptError(f"examples[{index}]: expected an (image, prompt) pair, e.g. "
                                     f"(reference, Box(10, 10, 50, 50)), got {describe(example)}")
        pairs.append((example[0], as_visual_prompt(example[1])))
    return pairs


def checked_names(values: Sequence[str], what: str) -> list[str]:
    """Class names, keypoints, an expression or a caption: non-empty strings, stripped (one string is one name)."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, Iterable):
        raise InvalidPromptError(f"{what}: expected a list of non-empty strings, got {describe(values)}")
    values = list(values)
    names = [v.strip() for v in values if isinstance(v, str)]
    if not names or len(names) != len(values) or any(not n for n in names):
        raise InvalidPromptError(f"{what}: expected non-empty strings, got {values!r}")
    return names


def checked_device(device: Any) -> torch.device:
    """``device`` as a torch device (None: CUDA when present, else CPU); a malformed name, or CUDA on a
    machine whose torch sees no CUDA GPU, is a typed error rather than torch's own."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidInputError(f"device: expected a torch device such as 'cpu' or 'cuda:0', got {device!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device: expected a CUDA GPU for {str(device)!r}, but this torch ({torch.__version__}) "
                                "sees none; use device='cpu' or install a CUDA build of torch")
    return device


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def checked_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    """``dtype`` as a floating torch dtype, by object or name ("bfloat16", "bf16", "float16" …); None:
    bfloat16 on CUDA (as the 7B model was released), float16 on GPUs without native bfloat16 (T4,
    V100: torch would emulate it, slowly), float32 elsewhere."""
    if dtype is None:
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype.lower().removeprefix("torch."), dtype)
    if not isinstance(dtype, torch.dtype) or dtype not in DTYPES.values():
        raise InvalidInputError(f"dtype: expected one of torch.float32, torch.bfloat16, torch.float16 or their names "
                                f"{sorted(DTYPES)}, got {dtype!r}")
    return dtype
