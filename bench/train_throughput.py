"""Training throughput per stage: samples a second for each decoder group, on this machine.

    python bench/train_throughput.py --preset shapes --steps 6 --batch-size 8

Each stage is set up as `visionllm2 train` sets it up (stage 0 denoisers on captions, stage 1 chat,
stage 2 LoRA + decoders, stage 3 decoders only); every group is timed over the same number of steps after one warm-up step. Figures
are absolute for this machine; compare stages and groups as ratios within one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from visionllm2.model.training import TrainConfig, Trainer
from visionllm2.model.training.sources import ShapesSource

GROUP_TASKS = {"lm": {"chat": 1.0}, "gdino": {"detect": 1.0, "segment": 1.0, "ground": 1.0, "interactive": 1.0},
               "unipose": {"pose": 1.0}, "sd": {"generate": 1.0}, "ip2p": {"edit": 1.0}}
STAGE_GROUPS = {0: ("sd", "ip2p"), 1: ("lm",), 2: ("lm", "gdino", "unipose"), 3: ("gdino", "unipose", "sd", "ip2p")}


def measure(preset: str, stage: int, group: str, steps: int, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(stage=stage, preset=preset, output_dir=folder, steps=steps + 1, batch_size=batch_size,
                             save_every=10_000, log_every=10_000, tasks=GROUP_TASKS[group])
        trainer = Trainer(config)
        trainer.source = ShapesSource(trainer.processor, GROUP_TASKS[group], seed=0)
        trainer.train_step()  # warm-up: first-call allocations
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"preset {args.preset}, batch {args.batch_size}, {args.steps} timed steps, {torch.get_num_threads()} threads, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"{'stage':>5} {'group':>8} {'samples/s':>10}")
    for stage, groups in STAGE_GROUPS.items():
        for group in groups:
            print(f"{stage:>5} {group:>8} {measure(args.preset, stage, group, args.steps, args.batch_size):>10.2f}")


if __name__ == "__main__":
    main()
