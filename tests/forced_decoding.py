"""Scripted answers for tests of free decoding: which tokens each row writes, step by step."""

from __future__ import annotations

from collections.abc import Callable

import torch


def forced(scripts: list[list[int]]) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """A logits processor under which row r emits ``scripts[r][step]``, then ``</s>``."""

    def force(step: int, logits: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(logits, -1e4)
        for row, script in enumerate(scripts):
            out[row, script[step] if step < len(script) else 2] = 0.0
        return out

    return force
