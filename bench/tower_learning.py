"""How fast a vision tower learns what VQA asks, when it is told directly: each shape's count.

``bench/vqa_probe.py`` shows the shipped model's picture tokens carry colour but not shape, so its
VQA answers come from priors. Is that the LM loss's weak signal (one answer word a sample) or the
tower? This trains a tower with the most direct signal there is: a head reads, by attention from
one query per shape, how many of each shape a picture holds (0 … 4, 4 meaning "4 or more"), with
cross-entropy on every shape of every picture. Every ``--every`` seconds of training it scores the
held-out accuracy per (picture, shape), beside the prior (always answering "none"), and the share of
pictures whose five counts are all right: a line on stderr as it goes, the table at the end. Then,
as ``bench/vqa_probe.py`` reads the model's tokens, a ridge readout of each held-out object's colour
and shape from the trained tower's token over the object's centre (70 % of the objects fitted).

Towers (``--tower``):
- ``model``: the model's own CLIP ViT, from its weights (``--model shapes``: the shipped tower);
- ``random``: the same ViT, freshly initialised;
- ``hybrid``: the fresh ViT with early convolutions in place of its patch embedding (a 3 × 3
  stride-2 convolution, a 3 × 3 one, then one of half a patch's side and stride: the same grid), as
  ``vision.patch_embedding: "conv_stem"`` builds it;
- ``conv``: a control, five strided 3 × 3 convolutions to the ViT's token grid and width.

Run: ``python bench/tower_learning.py [--model shapes] [--tower random] [--minutes 8] [--lr 1e-3]
[--batch-size 32] [--heldout 600]``. Pictures are drawn fresh for every batch (never repeated), the
held-out ones from the held-out split. Figures are for this machine's minutes; compare the towers
within one machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from generation_probe import readout_accuracy
from rich.console import Console
from rich.table import Table
from torch import nn
from vqa_probe import centre_cell, most_frequent_rate

from visionllm2.model.data.shapes import SHAPES, render_scene
from visionllm2.model.data.tasks import count_classes, split_seed
from visionllm2.model.training.tower import CountHead
from visionllm2.model.vision import build_vision_tower, patch_features
from visionllm2.sdk import Session

COLUMNS = ("minutes", "steps", "pictures seen", "loss", "per shape", "whole picture")


class ConvTower(nn.Module):
    """A small conv net with the ViT's output: ``hidden_states`` of ``(N, 1 + grid², width)``."""

    def __init__(self, width: int, grid: int) -> None:
        super().__init__()
        channels = (3, 32, 64, 128, width)
        layers: list[nn.Module] = []
        for c_in, c_out in itertools.pairwise(channels):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GELU()]
        self.net = nn.Sequential(*layers, nn.Conv2d(width, width, 3, padding=1))
        self.grid = grid

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = True) -> SimpleNamespace:
        tokens = F.adaptive_avg_pool2d(self.net(pixel_values), self.grid).flatten(2).transpose(1, 2)  # (N, P, C)
        states = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)  # a stand-in CLS first, as CLIP's
        return SimpleNamespace(hidden_states=(states, states, states))


def pictures(session: Session, indices: range, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The pictures' whole-image tiles ``(N, 3, S, S)`` and their count classes ``(N, shapes)``."""
    tiles, counts = [], []
    for index in indices:
        scene = render_scene(split_seed(index, split))
        tiles.append(session.processor.process_image(scene.image).pixel_values[-1])  # the thumbnail / only tile
        counts.append(count_classes(scene.objects)[:len(SHAPES)])  # COUNTED starts with the shapes
    return torch.stack(tiles), torch.tensor(counts)


@torch.no_grad()
def centre_readout(session: Session, tokens, count: int) -> tuple[dict[str, float], dict[str, float]]:
    """Ridge readout accuracy of each object's colour and shape from the token over its centre, over
    the first ``count`` held-out scenes; and each label's most-frequent-class rate among the scored."""
    features, labels = [], {"colour": [], "shape": []}
    for index in range(count):
        scene = render_scene(split_seed(index, "heldout"))
        grid_tokens = tokens(session.processor.process_image(scene.image).pixel_values[-1:])[0]  # (P, C)
        for obj in scene.objects:
            features.append(grid_tokens[centre_cell(obj.box, scene.image.size, len(grid_tokens))].numpy())
            labels["colour"].append(obj.colour)
            labels["shape"].append(obj.kind)
    x, cut = np.stack(features), int(0.7 * len(features))
    scores = {name: readout_accuracy(x[:cut], values[:cut], x[cut:], values[cut:]) for name, values in labels.items()}
    priors = {name: most_frequent_rate(values[cut:]) for name, values in labels.items()}
    return scores, priors


def build_tower(session: Session, kind: str) -> nn.Module:
    vision = session.model.config.vision
    if kind == "model":
        return copy.deepcopy(session.model.vis_encoder)  # the session loaded float32
    if kind in ("random", "hybrid"):  # hybrid: the model's own conv stem (vision.patch_embedding "conv_stem")
        return build_vision_tower(dataclasses.replace(vision, patch_embedding="conv_stem" if kind == "hybrid" else "linear"))
    return ConvTower(vision.hidden_size, vision.image_size // vision.patch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes", help="whose tower (and picture processing) to use")
    parser.add_argument("--tower", default="random", choices=("model", "random", "hybrid", "conv"))
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between held-out scores")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--heldout", type=int, default=600)
    args = parser.parse_args()
    torch.manual_seed(0)
    session = Session.from_pretrained(args.model, device="cpu", dtype=torch.float32)
    select_layer = session.model.config.vision.select_layer
    tower, head = build_tower(session, args.tower).train(), CountHead(session.model.config.vision.hidden_size, len(SHAPES))
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=args.lr, weight_decay=0.01)
    held_tiles, held_counts = pictures(session, range(args.heldout), "heldout")

    def tokens(tiles: torch.Tensor) -> torch.Tensor:
        return patch_features(tower(pixel_values=tiles, output_hidden_states=True).hidden_states, select_layer)

    @torch.no_grad()
    def score() -> tuple[float, float]:
        tower.eval(), head.eval()
        right = torch.cat([head(tokens(held_tiles[i:i + 100])).argmax(-1) == held_counts[i:i + 100]
                           for i in range(0, len(held_tiles), 100)])
        tower.train(), head.train()
        return right.float().mean().item(), right.all(1).float().mean().item()

    table = Table(title=f"{args.tower} tower of {args.model}, told each shape's count: held-out accuracy, "
                        f"{args.heldout} pictures",
                  caption=f"prior (every shape absent): {(held_counts == 0).float().mean().item():.3f} per "
                          f"(picture, shape); batch {args.batch_size}, lr {args.lr:g}")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    progress = Console(stderr=True)
    step, losses, trained, next_score = 0, [], 0.0, 0.0  # trained: seconds of training, scoring left out
    while True:
        if trained >= next_score or trained >= args.minutes * 60:
            per_shape, whole = score()
            loss = f"{sum(losses) / len(losses):.3f}" if losses else "-"
            row = (f"{trained / 60:.1f}", str(step), f"{step * args.batch_size:,}", loss, f"{per_shape:.3f}", f"{whole:.3f}")
            table.add_row(*row)
            progress.print(" · ".join(f"{name} {value}" for name, value in zip(COLUMNS, row)), soft_wrap=True)
            losses, next_score = [], next_score + args.every
            if trained >= args.minutes * 60:
                break
        start = time.perf_counter()
        # training pictures come from the train split, far past what the model's own training drew first
        first = 10**6 + step * args.batch_size
        tiles, counts = pictures(session, range(first, first + args.batch_size), "train")
        loss = F.cross_entropy(head(tokens(tiles)).flatten(0, 1), counts.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1
        trained += time.perf_counter() - start
    console = Console(width=160)
    console.print(table)
    tower.eval()
    scores, priors = centre_readout(session, tokens, args.heldout)
    readout = Table(title=f"What the {args.tower} tower's tokens carry after training: each held-out object's "
                          f"colour and shape read back from the token over its centre")
    for column in ("", "colour", "shape"):
        readout.add_column(column, justify="left" if not column else "right")
    readout.add_row("[dim]most frequent class[/dim]", *(f"[dim]{priors[k]:.2f}[/dim]" for k in ("colour", "shape")))
    readout.add_row("ridge readout", *(f"{scores[k]:.2f}" for k in ("colour", "shape")))
    console.print(readout)


if __name__ == "__main__":
    main()
