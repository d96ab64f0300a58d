"""Train one stage for a wall-clock budget, then write the tensors it changed (float16) and its log.

    python bench/train_budget.py CONFIG.json SECONDS OUT_PREFIX

For a lent GPU whose time is counted: the learning rate warms up over ``warmup_steps`` and then
follows the trainer's cosine (to 0.1) over the budget's seconds rather than over ``steps``, no
checkpoint is written, and what comes back is small: ``OUT_PREFIX.safetensors`` holds only the
tensors that moved, ready to graft onto the ``init`` model, and ``OUT_PREFIX.jsonl`` a summary line
(steps, samples a second, peak GPU memory) and then one record per step.
"""
import json
import sys
import time

import torch
from safetensors.torch import save_file

from visionllm2.model.training import TrainConfig, Trainer
from visionllm2.model.training.trainer import lr_factor

config_path, budget, prefix = sys.argv[1], float(sys.argv[2]), sys.argv[3]
config = TrainConfig.load(config_path)
start = time.perf_counter()
trainer = Trainer(config)
model = trainer.accelerator.unwrap_model(trainer.model)
trainable = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
print(f"{config_path}: device {trainer.accelerator.device}, precision {trainer.accelerator.mixed_precision}, "
      f"{sum(t.numel() for t in trainable.values()) / 1e6:.2f} M trainable, set up in {time.perf_counter() - start:.1f} s",
      flush=True)
bases = [group["initial_lr"] if "initial_lr" in group else group["lr"] for group in trainer.optimizer.param_groups]
warmup = config.warmup_steps
records = []
train_start = time.perf_counter()
while True:
    elapsed = time.perf_counter() - train_start
    if elapsed >= budget:
        break
    factor = lr_factor(trainer.step, warmup, elapsed / budget)  # the trainer's schedule, over the seconds
    for group, base in zip(trainer.optimizer.param_groups, bases):
        group["lr"] = base * factor
    record = trainer.train_step()
    record["elapsed"] = round(elapsed, 2)
    records.append(record)
    if trainer.step % 200 == 0:
        print(f"step {trainer.step} {elapsed:.0f}s loss {record['loss']:.4f} {record['samples_per_s']:.1f} samples/s", flush=True)
seconds = time.perf_counter() - train_start
changed = {}
for name, parameter in model.named_parameters():
    if name in trainable and not torch.equal(parameter.detach().cpu(), trainable[name]):
        changed[name] = parameter.detach().to("cpu", torch.float16).contiguous()
save_file(changed, f"{prefix}.safetensors")
summary = {"config": json.loads(config.to_json()), "steps": trainer.step, "seconds": round(seconds, 1),
           "samples_per_s": round(trainer.step * config.batch_size / seconds, 2), "changed_tensors": len(changed),
           "device": str(trainer.accelerator.device),
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "max_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}
with open(f"{prefix}.jsonl", "w") as log:
    log.write(json.dumps(summary) + "\n")
    for record in records:
        log.write(json.dumps(record) + "\n")
print(json.dumps(summary), flush=True)
