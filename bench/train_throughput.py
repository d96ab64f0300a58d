"""Training throughput per stage: samples a second for each decoder group, on this machine.

    python bench/train_throughput.py --preset shapes --steps 6 --batch-size 8

Each stage is set up as `visionllm2 train` sets it up (stage 0 denoisers on captions, stage 1 chat,
stage 2 LoRA + decoders, stage 3 decoders only); every group is timed over the same number of steps after one warm-up step. Figures
are absolute for this machine; compare stages and groups as ratios within one run.

    python bench/train_throughput.py --profile 1:lm [--top 20]

profiles one stage and group instead: torch.profiler's table of the ops that took the most time over
the timed steps (their own time on the GPU when there is one, else on the CPU), to see why a stage
is slow (on an H200, stage 1's LM trained at 7.8 samples a second against stage 2's 95).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from visionllm2.model.training import TrainConfig, Trainer
from visionllm2.model.training.sources import ShapesSource

GROUP_TASKS = {"lm": {"chat": 1.0}, "gdino": {"detect": 1.0, "segment": 1.0, "ground": 1.0, "interactive": 1.0},
               "unipose": {"pose": 1.0}, "sd": {"generate": 1.0}, "ip2p": {"edit": 1.0}}
STAGE_GROUPS = {0: ("sd", "ip2p"), 1: ("lm",), 2: ("lm", "gdino", "unipose"), 3: ("gdino", "unipose", "sd", "ip2p")}


@contextmanager
def warm_trainer(where: dict[str, str], stage: int, group: str, steps: int, batch_size: int) -> Iterator[Trainer]:
    """A trainer for ``stage`` on ``group``'s tasks, one step taken (first-call allocations are not a step's cost).
    ``where``: the model it starts from, ``{"preset": name}`` or ``{"init": directory}``."""
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(stage=stage, output_dir=folder, steps=steps + 1, batch_size=batch_size,
                             save_every=10_000, log_every=10_000, tasks=GROUP_TASKS[group], **where)
        trainer = Trainer(config)
        trainer.source = ShapesSource(trainer.processor, GROUP_TASKS[group], seed=0)
        trainer.train_step()
        yield trainer


def measure(preset: str, stage: int, group: str, steps: int, batch_size: int) -> float:
    with warm_trainer({"preset": preset}, stage, group, steps, batch_size) as trainer:
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        synchronize()
        return steps * batch_size / (time.perf_counter() - start)


def profile(preset: str, stage: int, group: str, steps: int, batch_size: int, top: int) -> str:
    """torch.profiler's table of the ``top`` ops by their own time over ``steps`` steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiling

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with warm_trainer({"preset": preset}, stage, group, steps, batch_size) as trainer, \
            profiling(activities=activities) as run:
        for _ in range(steps):
            trainer.train_step()
        synchronize()
    return run.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=top)


def synchronize() -> None:
    """Wait for the GPU's queued work, so a clock read after it counts that work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def stage_and_group(text: str) -> tuple[int, str]:
    """``"1:lm"`` → ``(1, "lm")``, a stage and one of its groups."""
    stage, _, group = text.partition(":")
    if not stage.isdigit() or group not in STAGE_GROUPS.get(int(stage), ()):
        choices = ", ".join(f"{s}:{g}" for s, groups in STAGE_GROUPS.items() for g in groups)
        raise argparse.ArgumentTypeError(f"expected STAGE:GROUP, one of {choices}; got {text!r}")
    return int(stage), group


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--profile", type=stage_and_group, default=None, metavar="STAGE:GROUP",
                        help="profile this stage and group (e.g. 1:lm) instead of timing every one")
    parser.add_argument("--top", type=int, default=20, help="with --profile: how many ops to list")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.profile:
        stage, group = args.profile
        print(f"preset {args.preset}, stage {stage}, {group}, batch {args.batch_size}, {args.steps} profiled steps")
        print(profile(args.preset, stage, group, args.steps, args.batch_size, args.top))
        return
    print(f"preset {args.preset}, batch {args.batch_size}, {args.steps} timed steps, {torch.get_num_threads()} threads, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"{'stage':>5} {'group':>8} {'samples/s':>10}")
    for stage, groups in STAGE_GROUPS.items():
        for group in groups:
            print(f"{stage:>5} {group:>8} {measure(args.preset, stage, group, args.steps, args.batch_size):>10.2f}")


if __name__ == "__main__":
    main()
