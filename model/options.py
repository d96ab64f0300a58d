"""Range checks of the options a turn takes: the LLM's decoding and the denoisers' sampling.

Kept apart from the code that uses them (no torch or diffusers import), so the Session checks a
turn's options before it runs anything, and the decoders check them again for direct callers.
"""

from __future__ import annotations

from .errors import InvalidInputError, is_integer, is_number


def check_decoding_options(max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                           top_p: float = 1.0) -> None:
    """A typed error for a decoding option of the wrong type or out of range, before any decoding."""
    if not is_integer(max_new_tokens) or max_new_tokens < 1:
        raise InvalidInputError(f"max_new_tokens: expected an integer ≥ 1, got {max_new_tokens!r}")
    if not isinstance(do_sample, bool):
        raise InvalidInputError(f"do_sample: expected True or False, got {do_sample!r}")
    if not is_number(temperature) or not temperature > 0:
        raise InvalidInputError(f"temperature: expected a number > 0, got {temperature!r}")
    if not is_number(top_p) or not 0 < top_p <= 1:
        raise InvalidInputError(f"top_p: expected a share in (0, 1], got {top_p!r}")


MAX_IMAGE_SIDE = 4096  # output pixels per side: far past any denoiser's training size, and memory runs out beyond


def check_image_size(height: int, width: int) -> None:
    """A typed error for an output side that is not a positive multiple of 8 up to :data:`MAX_IMAGE_SIDE`."""
    _check_side("height", height)
    _check_side("width", width)


def _check_side(name: str, value: int) -> None:
    if not is_integer(value) or value <= 0 or value % 8 or value > MAX_IMAGE_SIDE:
        raise InvalidInputError(f"{name}: expected a positive multiple of 8 up to {MAX_IMAGE_SIDE} (pixels), got {value!r}")


def check_sampling_options(num_inference_steps: int | None = None, guidance_scale: float | None = None,
                           image_guidance_scale: float | None = None, height: int | None = None,
                           width: int | None = None) -> None:
    """A typed error for a sampling option of the wrong type or out of range (None: the default)."""
    if num_inference_steps is not None and (not is_integer(num_inference_steps) or num_inference_steps < 1):
        raise InvalidInputError(f"num_inference_steps: expected an integer ≥ 1, got {num_inference_steps!r}")
    for name, value in (("guidance_scale", guidance_scale), ("image_guidance_scale", image_guidance_scale)):
        if value is not None and (not is_number(value) or not value > 0):
            raise InvalidInputError(f"{name}: expected a number > 0, got {value!r}")
    for name, value in (("height", height), ("width", width)):
        if value is not None:
            _check_side(name, value)
