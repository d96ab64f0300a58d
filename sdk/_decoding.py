"""Running the decoders an answer routed to, and reading their predictions as typed results.

Shared by :class:`~visionllm2.sdk.session.Session` (one conversation, one picture) and
:class:`~visionllm2.sdk.batch.BatchPredictor` (many one-turn conversations, a picture each). The
link states of a batch carry each group's batch row (``sample_index``); results come back per row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from visionllm2.model import tokens as T
from visionllm2.model.decoders.base import LinkStates

from . import adapters
from ._arguments import diffusion_options
from .errors import InvalidInputError
from .results import Result


def run_decoders(model: Any, link: dict[str, LinkStates], pictures: Sequence[Any], turn_index: int | Sequence[int],
                 timings: dict[str, float], options: dict[str, Any] | Sequence[dict[str, Any]], *, interactive: bool = False,
                 captions: list[str] | None = None, marks: Sequence[np.ndarray | None] | None = None,
                 free: bool = False) -> tuple[list[list[Result]], list[set[str]]]:
    """Run each decoder that has groups; results per batch row, in the order of ``link``.

    ``pictures[row]`` is the picture row ``row`` asked about; ``turn_index`` the turn each row's
    results belong to and ``options`` the verb's options (one for all rows, or one per row: a pose
    request's class count and keypoint names, a picture's seed); ``marks[row]`` a row's visual prompts
    (bool ``(G, h, w)``); ``captions`` one per diffusion group. In a free answer, groups a decoder
    cannot use (a ``[POSE]`` answer without keypoint names …) are skipped and their routes returned,
    per row: the decoder then runs each row alone, so one row's unusable answer costs no other row
    its results. In a verb's answer that cannot happen, so errors propagate.
    """
    turns = [turn_index] * len(pictures) if isinstance(turn_index, int) else list(turn_index)
    row_options = [options] * len(pictures) if isinstance(options, dict) else list(options)
    per_row: list[list[Result]] = [[] for _ in pictures]
    unusable: list[set[str]] = [set() for _ in pictures]
    decoders = model.decoders()
    for name, states in link.items():
        start = time.perf_counter()
        rows = sorted(set(states.sample_index.tolist()))
        try:
            answered = run_decoder(decoders[name], states, pictures, turns, row_options, interactive, captions, marks)
        except InvalidInputError:
            if not free:
                raise
            answered = {}
            for row in rows if len(rows) > 1 else ():  # alone, as a session would have run it
                alone = select_rows(states, [row])
                mine = [captions[g] for g, r in enumerate(states.sample_index.tolist()) if r == row] if captions else None
                try:
                    answered[row] = run_decoder(decoders[name], alone, [pictures[row]], [turns[row]], [row_options[row]],
                                                interactive, mine, None if marks is None else [marks[row]])[0]
                except InvalidInputError:
                    pass
        for row in rows:
            if row in answered:
                per_row[row] += answered[row]
            else:
                unusable[row].update(states.routes[g] for g, r in enumerate(states.sample_index.tolist()) if r == row)
        timings[name] = time.perf_counter() - start
    return per_row, unusable


def run_decoder(decoder: Any, states: LinkStates, pictures: Sequence[Any], turns: Sequence[int],
                options: Sequence[dict[str, Any]], interactive: bool = False, captions: list[str] | None = None,
                marks: Sequence[np.ndarray | None] | None = None) -> dict[int, list[Result]]:
    """One decoder over every row that has groups for it → ``{row: results}``."""
    device = next(decoder.parameters()).device  # under a device map, not always the LLM's
    states = replace(states, states=states.states.to(device), sample_index=states.sample_index.to(device))
    out: dict[int, list[Result]] = {}
    with torch.no_grad():
        if hasattr(decoder, "predict"):  # diffusion: seeds, steps and guidance are the user's to set
            rows = states.sample_index.tolist()
            settings = diffusion_options(options[rows[0]])
            if len(set(rows)) > 1 and "seed" in settings:  # each picture its own seed, as alone
                settings["seed"] = [int(options[row]["seed"]) + rows[:g].count(row) for g, row in enumerate(rows)]
            prediction = decoder.predict(states, list(pictures), captions=captions or [c or "" for c in states.labels],
                                         **settings)
            for row in sorted(set(prediction.sample_index)):
                out[row] = adapters.image_results(_images_of_row(prediction, row), turns[row])
            return out
        # Decoders pad the pictures of a batch to one size; sub-batches of one input size answer
        # exactly as one picture at a time would.
        for rows, part in same_size_parts(states, pictures, getattr(decoder, "input_size", None)):
            chosen = [pictures[r] for r in rows]
            if T.POSE in decoder.routes:
                from visionllm2.model.decoders.pose_loss import PoseTarget

                asked = all("pose_objects" in options[r] for r in rows)
                request = [PoseTarget(num_objects=options[r]["pose_objects"]) for r in rows] if asked else None
                predictions = decoder(part, chosen, request).predictions
                for row, prediction in zip(rows, predictions):
                    out[row] = adapters.pose_results(prediction, turns[row], T.POSE, options[row].get("keypoint_names"))
            else:
                row_marks = None if marks is None else [marks[r] for r in rows]
                predictions = decoder(part, chosen, None, row_marks).predictions
                for row, prediction in zip(rows, predictions):
                    out[row] = adapters.detection_results(prediction, turns[row], list(prediction.labels), interactive)
    return out


def same_size_parts(states: LinkStates, pictures: Sequence[Any],
                    input_size: Callable[[tuple[int, int]], Any] | None = None) -> list[tuple[list[int], LinkStates]]:
    """The rows with groups, split by the size their picture enters the decoder at (``input_size``
    of the picture's size; the picture's own size when the decoder does not say):
    ``[(rows, their link states re-indexed 0…)]``."""
    rows = sorted(set(states.sample_index.tolist()))
    buckets: dict[Any, list[int]] = {}
    for row in rows:
        size = getattr(pictures[row], "size", None)
        buckets.setdefault(input_size(size) if input_size is not None and size is not None else size, []).append(row)
    return [(members, select_rows(states, members)) for members in buckets.values()]


def select_rows(states: LinkStates, rows: list[int]) -> LinkStates:
    """The groups of ``rows``, their ``sample_index`` renumbered to positions in ``rows``."""
    if rows == list(range(len(rows))) and set(states.sample_index.tolist()) <= set(rows):
        return states
    position = {row: i for i, row in enumerate(rows)}
    keep = [g for g, row in enumerate(states.sample_index.tolist()) if row in position]
    index = torch.tensor(keep, dtype=torch.long, device=states.states.device)
    return LinkStates(
        states=states.states[index], routes=[states.routes[g] for g in keep], labels=[states.labels[g] for g in keep],
        label_ids=[states.label_ids[g] for g in keep],
        sample_index=torch.tensor([position[int(states.sample_index[g])] for g in keep], device=states.sample_index.device),
    )


def _images_of_row(prediction: Any, row: int) -> Any:
    """A diffusion prediction cut to the groups of one batch row."""
    keep = [g for g, r in enumerate(prediction.sample_index) if r == row]
    return replace(prediction, images=[prediction.images[g] for g in keep], captions=[prediction.captions[g] for g in keep],
                   seeds=[prediction.seeds[g] for g in keep], sample_index=[row] * len(keep))
