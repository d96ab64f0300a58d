"""Stage 3 by regression: fit a generation decoder's link to its own text encoder (ours, not the paper's).

A ``[GEN]`` / ``[EDIT]`` link (``emb_proj``, the mapper and its queries: ``link_parts``) turns the
LLM's slot states into ``prompt_embeds`` that take the place of the denoiser's text embeddings. The
official recipe trains it through the frozen denoiser: the diffusion loss, whose target is mostly
the noise itself, plus ``caption_loss_weight`` · MSE to the text encoder's embedding of the caption.
On ``shapes`` that loop plateaus far from the embeddings it imitates (its nearest caption has the
asked shape 0.80 of the time), and the pictures lose the shape the denoiser reads from its own
text encoder (the figures: `model/weights/shapes/TRAINING_NOTES.md`).

Stage 3 freezes the LLM and its query tables, so the slot states a request hands the link depend
on the conversation alone. ``TrainConfig.link_regression`` records them once for
``link_regression_samples`` conversations of the stage's tasks (a fraction ``LINK_HOLDOUT`` held
out), then fits only the link to the embeddings of each group's caption or instruction: ``steps``
steps of ``batch_size`` groups, no LLM and no UNet in the loop, so thousands of steps take a minute
on a CPU. The held-out MSE is logged against the captions' own spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..visionllm import VisionLLMv2
from .config import TrainConfig

LINK_HOLDOUT = 0.1  # share of the recorded groups kept out of the fit, to report the held-out MSE


@dataclass
class RecordedLink:
    """One decoder's recorded groups: slot states ``(N, n, H)`` and the embeddings ``(N, Q, d)`` of their captions."""

    states: torch.Tensor
    reference: torch.Tensor

    def split(self) -> tuple[RecordedLink, RecordedLink]:
        """(fitted, held out): the last ``LINK_HOLDOUT`` of the groups are held out (at least one each)."""
        held = min(max(1, round(len(self.states) * LINK_HOLDOUT)), len(self.states) - 1)
        cut = len(self.states) - held
        return (RecordedLink(self.states[:cut], self.reference[:cut]),
                RecordedLink(self.states[cut:], self.reference[cut:]))

    def spread(self) -> float:
        """The captions' own spread: the mean variance of their embeddings (the MSE of always answering their mean)."""
        return self.reference.float().var(0, unbiased=False).mean().item()


@torch.no_grad()
def record_links(model: VisionLLMv2, batches: Sequence[tuple[Any, Sequence[Any], dict[str, list]]]) -> dict[str, RecordedLink]:
    """Slot states and caption embeddings of every captioned group of each generation decoder.

    batches: ``(batch, images, targets)`` as :func:`~visionllm2.model.training.trainer.samples_to_inputs`
    builds them. Groups whose target has no caption are left out, as the caption loss leaves them.
    """
    decoders = {name: d for name, d in model.decoders().items() if getattr(d, "link_parts", None)}
    states: dict[str, list[torch.Tensor]] = {name: [] for name in decoders}
    captions: dict[str, list[str]] = {name: [] for name in decoders}
    device = next(model.parameters()).device
    model.eval()
    for batch, images, targets in batches:
        _, link = model.hidden_and_link(batch.to(device))
        for name, groups in link.items():
            if name not in decoders or name not in targets:
                continue
            items = decoders[name].targets_of(groups, images, targets[name])
            for g, item in enumerate(items):
                if item.caption:
                    states[name].append(groups.states[g])
                    captions[name].append(item.caption)
    recorded = {}
    for name, decoder in decoders.items():
        if len(captions[name]) < 2:
            continue
        chunks = [decoder.encode_captions(captions[name][i: i + 256]) for i in range(0, len(captions[name]), 256)]
        recorded[name] = RecordedLink(torch.stack(states[name]), torch.cat(chunks))  # (N, n, H), (N, Q, d)
    if not recorded:
        raise InvalidInputError(
            f"link_regression: the recorded conversations hold no captioned [GEN] / [EDIT] group of the decoders "
            f"{sorted(decoders)} (expected the stage's tasks to include generate or edit)"
        )
    return recorded


def held_out_error(decoder: nn.Module, held: RecordedLink, spread: float) -> dict[str, float]:
    """The link's MSE on held-out groups, and its share of the captions' ``spread`` (0: exact; 1: no better than their mean)."""
    with torch.no_grad():
        predicted = torch.cat([decoder.prompt_embeds(held.states[i: i + 256]) for i in range(0, len(held.states), 256)])
        mse = F.mse_loss(predicted.float(), held.reference.float()).item()
    return {"held_out": mse, "held_out_share": mse / spread if spread else float("nan")}


def fit_links(model: VisionLLMv2, recorded: dict[str, RecordedLink], config: TrainConfig,
              on_record: Callable[[dict[str, Any]], None] = lambda record: None) -> list[dict[str, Any]]:
    """``config.steps`` AdamW steps on the MSE between each link's output and its captions' embeddings.

    Only the links' parameters change. Returns the logged records (every ``log_every`` steps and the last).
    """
    from .trainer import _warmup_cosine

    decoders = model.decoders()
    splits = {name: links.split() for name, links in recorded.items()}
    spreads = {name: links.spread() for name, links in recorded.items()}
    parameters = [p for name in recorded for p in decoders[name].link_parameters()]
    model.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config.warmup_steps, config.steps))
    generator = torch.Generator().manual_seed(config.seed)

    def held_out(name: str) -> dict[str, float]:
        return {f"{name}/{k}": v for k, v in held_out_error(decoders[name], splits[name][1], spreads[name]).items()}

    records = [{"step": 0, **{k: v for name in recorded for k, v in held_out(name).items()}}]
    on_record(records[0])
    for step in range(1, config.steps + 1):
        losses = {}
        for name, (fitted, _) in splits.items():
            rows = torch.randint(0, len(fitted.states), (config.batch_size,), generator=generator)
            predicted = decoders[name].prompt_embeds(fitted.states[rows])  # (b, Q, d)
            losses[name] = F.mse_loss(predicted.float(), fitted.reference[rows].float())
        loss = torch.stack(list(losses.values())).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if step % config.log_every == 0 or step == config.steps:
            record = {"step": step, "group": "+".join(losses), "tasks": ["link_regression"], "loss": loss.item(),
                      "lr": scheduler.get_last_lr()[0], "grad_norm": float(norm)}
            for name, value in losses.items():
                record[name] = record[f"{name}/caption"] = value.item()
                record.update(held_out(name))
            records.append(record)
            on_record(record)
    model.requires_grad_(True)
    return records


def record_batch_count(samples: int, batch_size: int) -> int:
    """How many batches :func:`record_batches` reads to record ``samples`` conversations."""
    return math.ceil(samples / batch_size)


def record_batches(source, processor, pad_id: int, samples: int, batch_size: int):
    """The stage's source read in :func:`record_batch_count` batches, as the trainer builds them."""
    from .trainer import samples_to_inputs

    for index in range(record_batch_count(samples, batch_size)):
        yield samples_to_inputs(processor, source.batch(index, batch_size, 0, 1), pad_id)
