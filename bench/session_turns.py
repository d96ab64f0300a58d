"""What a second turn on the same image costs, and what batching buys.

- ``turn 2 / turn 1``: a second ``detect`` on the same image (image features cached by the
  session) as a ratio of the first (which encodes the image);
- ``batch 8 / 8 single``: one batched ``generate`` over 8 images versus 8 calls of one.

Run: ``python bench/session_turns.py [--presets tiny,mid] [--repeats 3]``. Random weights; the
figures are costs, not accuracy. Ratios are measured within one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from visionllm2.model.batch import collate
from visionllm2.model.config import LLMConfig, VisionConfig, VisionLLMv2Config
from visionllm2.model.processor import ImageSlot, Message
from visionllm2.model.tokenizer import Tokenizer, builtin_vocab_size
from visionllm2.model.visionllm import VisionLLMv2
from visionllm2.sdk import Session


def mid_config() -> VisionLLMv2Config:
    """ViT 256 × 6 at 224², Llama 768 × 8 (~60 M parameters), the tiny detector."""
    config = VisionLLMv2Config.preset("tiny")
    config.vision = VisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=4,
                                 image_size=224, patch_size=14, max_tiles=4)
    config.llm = LLMConfig(vocab_size=builtin_vocab_size(), hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                           num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=8192)
    return config


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(name: str, config: VisionLLMv2Config, repeats: int) -> None:
    torch.manual_seed(0)
    model = VisionLLMv2.from_config(config, tokenizer=Tokenizer.builtin()).eval()
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (300, 400, 3), dtype=np.uint8) for _ in range(8)]

    def first_and_second() -> tuple[float, float]:
        session = Session(model)
        start = time.perf_counter()
        session.detect(["person", "dog"], image=photos[0])
        first = time.perf_counter() - start
        start = time.perf_counter()
        session.detect(["cat", "car"])
        return first, time.perf_counter() - start

    first_and_second()  # warm-up
    pairs = [first_and_second() for _ in range(repeats)]
    first, second = min(p[0] for p in pairs), min(p[1] for p in pairs)

    session = Session(model)
    chats = [session.processor.build([Message("user", [ImageSlot(0), "\ndescribe the image"])], [p],
                                     add_generation_prompt=True) for p in photos]
    pad = model.tokenizer.pad_id
    with torch.inference_mode():
        batched = best_of(lambda: model.generate(collate(chats, pad, "left"), max_new_tokens=16), repeats)
        single = best_of(lambda: [model.generate(collate([c], pad, "left"), max_new_tokens=16) for c in chats], repeats)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{name:>5} ({params:.0f} M params, {torch.get_num_threads()} threads): turn 1 {first:.3f} s, turn 2 {second:.3f} s, "
          f"turn 2 / turn 1 = {second / first:.2f}; batch of 8 {batched:.2f} s vs 8 single {single:.2f} s, "
          f"ratio {batched / single:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,mid")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configs = {"tiny": lambda: VisionLLMv2Config.preset("tiny"), "mid": mid_config}
    for name in args.presets.split(","):
        run(name, configs[name](), args.repeats)


if __name__ == "__main__":
    main()
