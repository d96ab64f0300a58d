"""The interface every task decoder implements, and the link states it receives.

A decoder serves one or more routes (``[DET]``, ``[POSE]``, …). The composite model gathers, for
every routing token in a batch, the LLM's last hidden states at that token's query slots — one
*group* per class / expression / keypoint name — and hands them to the decoder in one
:class:`LinkStates`. The decoder's own link module (``patch2query``, ``emb_proj`` …) turns them
into its conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class LinkStates:
    """All groups of a batch that go to one decoder.

    states: ``(G, n, H)`` last-layer hidden states (after the final norm) at the ``n`` query slots
        of each of the ``G`` groups; gradients flow back into the LLM and the query tables.
    routes: the routing token of each group, e.g. ``"[DET]"``.
    labels: the phrase before each routing token (``"person"`` in ``person[DET]``), lead-in words
        removed; empty strings when the model has no tokenizer attached (``label_ids`` are always there).
    label_ids: the token ids before each routing token back to the previous special token, as
        written: a first group's also hold the answer's lead-in ("yes, here are the results for").
    sample_index: ``(G,)`` the batch element each group belongs to.
    """

    states: torch.Tensor
    routes: list[str]
    labels: list[str]
    label_ids: list[list[int]]
    sample_index: torch.Tensor

    def __len__(self) -> int:
        return self.states.shape[0]

    def for_sample(self, index: int) -> LinkStates:
        keep = (self.sample_index == index).nonzero().flatten()
        return LinkStates(
            states=self.states[keep],
            routes=[self.routes[i] for i in keep.tolist()],
            labels=[self.labels[i] for i in keep.tolist()],
            label_ids=[self.label_ids[i] for i in keep.tolist()],
            sample_index=self.sample_index[keep],
        )


@dataclass
class DecoderOutput:
    """What a decoder returns: a total loss when targets were given, its parts, and predictions (none
    from a training step: a decoder in train mode given targets returns its loss alone)."""

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    predictions: Any = None


class TaskDecoder(nn.Module):
    """Base class of task decoders.

    Subclasses set ``routes`` and implement :meth:`forward`. ``images`` holds each batch element's
    original image (a ``PIL.Image`` or tensor, as the decoder documents) since decoders read their
    own copy at their own resolution; ``targets`` holds one entry per batch element in training.
    """

    routes: ClassVar[tuple[str, ...]] = ()

    def forward(self, link: LinkStates, images: Sequence[Any] | None = None,
                targets: Sequence[Any] | None = None) -> DecoderOutput:  # pragma: no cover - interface
        raise NotImplementedError
