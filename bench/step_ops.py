"""Tensor ops per training step, and the lines of this package that issue them.

On a GPU each op is at least one kernel launch, so a small model's step costs about its op count
times the launch overhead, whatever the GPU. On an H200 the shapes detector trained at 25 samples a
second, twice a 2-core CPU: its steps issued 21,206 ops, 40 % of them post-processing whose
predictions the step dropped. This counts them on any machine, CPU included:

    python bench/step_ops.py [--model shapes] [--group gdino] [--steps 2] [--batch-size 8] [--top 15]

``--model``: a model directory, ``shapes`` (the shipped model) or a preset (random weights).
``--group``: lm, gdino, unipose, sd or ip2p (stage 3, or stage 1 for lm, stage 0 for sd / ip2p
with ``--pretrain``). Ops that library code issues (transformers' layers, the backward pass, the
optimizer) are counted under the line of ours that called it. AdamW is counted as CUDA runs it, with
its multi-tensor kernels; the gradient clipping as it runs here (one op per tensor on a CPU).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils._python_dispatch import TorchDispatchMode
from train_throughput import GROUP_TASKS, warm_trainer

from visionllm2.model.checkpoint import shipped_model_dir

PACKAGE = str(Path(__file__).resolve().parents[1])
OUTSIDE = ("site-packages", "/bench/")


class OpCounter(TorchDispatchMode):
    """Counts every op dispatched, by the innermost line of the package on the Python stack."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        frame = sys._getframe(1)
        site = "backward / library"
        while frame is not None:
            path = frame.f_code.co_filename
            if path.startswith(PACKAGE) and not any(part in path for part in OUTSIDE):
                site = f"{path[len(PACKAGE) + 1:]}:{frame.f_lineno} {frame.f_code.co_name}"
                break
            frame = frame.f_back
        self.sites[site] += 1
        return func(*args, **(kwargs or {}))


def count_ops(model: str, group: str, steps: int, batch_size: int, pretrain: bool) -> tuple[int, Counter[str]]:
    """Ops per step, and per site over all ``steps`` steps (after one warm-up step)."""
    stage = 0 if pretrain else 1 if group == "lm" else 3
    shipped = shipped_model_dir(model)
    where = {"init": str(shipped)} if shipped is not None else {"init": model} if Path(model).is_dir() else {"preset": model}
    with warm_trainer(where, stage, group, steps, batch_size) as trainer:
        for params in trainer.optimizer.param_groups:  # as on CUDA: AdamW's multi-tensor kernels, a few ops in all
            params["foreach"] = True
        counter = OpCounter()
        with counter:
            for _ in range(steps):
                trainer.train_step()
    return sum(counter.sites.values()) // steps, counter.sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--group", default="gdino", choices=sorted(GROUP_TASKS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--pretrain", action="store_true", help="stage 0: a denoiser on captions (sd, ip2p)")
    args = parser.parse_args()
    if args.pretrain and args.group not in ("sd", "ip2p"):
        parser.error(f"--pretrain: expected --group sd or ip2p, got {args.group}")
    torch.manual_seed(0)
    per_step, sites = count_ops(args.model, args.group, args.steps, args.batch_size, args.pretrain)
    table = Table(title=f"{args.model}, {args.group}, batch {args.batch_size}: {per_step:,} ops per step")
    table.add_column("ops per step", justify="right")
    table.add_column("share", justify="right")
    table.add_column("site")
    total = sum(sites.values())
    for site, count in sites.most_common(args.top):
        table.add_row(f"{count / args.steps:,.0f}", f"{count / total:.1%}", site)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
