"""Super link vs boxes as text: the cost of answering N groups (classes) in one turn.

For N = 1, 8, 64 groups it times, on the same model and prompt (random weights; decoding is
scripted so every path produces the same answer length it would when trained):

- ``text coords``: the model writes each box as text, ``label [0.123, 0.456, 0.789, 0.321]`` with
  digits one token each (as Llama's tokenizer splits them): ~26 decode steps a box;
- ``free link``: the model writes ``label[DET]`` and its 4 queries go in the same forward: ~4 steps;
- ``one prefill``: the task verbs' path — the answer template is known and runs in one forward.

Run: ``python bench/superlink_scaling.py [--presets tiny,mid] [--repeats 3]``. Prints seconds and
ratios to the text-coordinate path, measured within one run. LLM side only (no decoder): the
link paths add one batched decoder forward for all N groups.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from visionllm2.model import tokens as T
from visionllm2.model.batch import collate
from visionllm2.model.config import LLMConfig, VisionConfig, VisionLLMv2Config
from visionllm2.model.processor import ImageSlot, Message, Processor
from visionllm2.model.tokenizer import Tokenizer, builtin_vocab_size
from visionllm2.model.visionllm import VisionLLMv2

LABELS = ["red circle", "blue star", "green square", "yellow triangle", "white hexagon", "black star", "orange circle", "purple square"]


def mid_config() -> VisionLLMv2Config:
    """A mid-size model: ViT 256 wide × 6, Llama 768 wide × 8 layers (~60 M parameters)."""
    return VisionLLMv2Config(
        vision=VisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=4,
                            image_size=224, patch_size=14, max_tiles=1),
        llm=LLMConfig(vocab_size=builtin_vocab_size(), hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
                      num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=4096),
    )


def answer_scripts(tokenizer: Tokenizer, n: int) -> tuple[list[int], list[int]]:
    """Token ids the model would write for N groups: as text coordinates, and through the link."""
    rng = np.random.default_rng(n)
    coords, link = [], []
    for i in range(n):
        label = tokenizer.encode_text(LABELS[i % len(LABELS)])
        numbers = " , ".join(" ".join(f"0.{int(v):03d}") for v in rng.integers(0, 1000, 4))
        box_text = "[ " + " ".join(numbers.replace(".", " . ")) + " ]"
        coords += label + tokenizer.encode_text(box_text) + tokenizer.encode_text(",")
        link += label + [tokenizer.token_id(T.DET)] + tokenizer.encode_text(",")
    return coords, link


def forcing(script: list[int]):
    def force(step: int, logits: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(logits, -1e4)
        forced[:, script[step] if step < len(script) else 2] = 0.0
        return forced

    return force


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(name: str, config: VisionLLMv2Config, repeats: int) -> None:
    torch.manual_seed(0)
    tokenizer = Tokenizer.builtin()
    # The LLM side only: both paths then pay one batched decoder forward for the N boxes.
    model = VisionLLMv2.from_config(config, decoders={}, tokenizer=tokenizer).eval()
    processor = Processor(config, tokenizer)
    image = processor.process_image(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    question = Message("user", [ImageSlot(0), "\nCan you analyze the image and identify the shapes present?"])
    prompt = processor.build([question], [image], add_generation_prompt=True)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"\n{name}: {params:.1f} M parameters, prompt {len(prompt.input_ids)} tokens, {torch.get_num_threads()} threads")
    print(f"{'N':>4} {'text coords s':>14} {'free link s':>12} {'one prefill s':>14} {'link/text':>10} {'prefill/text':>13}"
          f" {'steps text/link':>16}")
    for n in (1, 8, 64):
        coords, link = answer_scripts(tokenizer, n)
        batch = collate([prompt], tokenizer.pad_id, "left")
        segments = []
        for i in range(n):
            segments += [*processor.route_segments(T.DET, LABELS[i % len(LABELS)]), ","]
        full = processor.build([question, Message("assistant", segments)], [image])
        full_batch = collate([full], tokenizer.pad_id)
        with torch.inference_mode():
            text_s = timed(lambda b=batch, c=coords: model.generate(b, max_new_tokens=len(c), logits_processor=forcing(c)), repeats)
            link_s = timed(lambda b=batch, k=link: model.generate(b, max_new_tokens=len(k), logits_processor=forcing(k)), repeats)
            prefill_s = timed(lambda f=full_batch: model(f), repeats)
        print(f"{n:>4} {text_s:>14.3f} {link_s:>12.3f} {prefill_s:>14.3f} {link_s / text_s:>10.2f} "
              f"{prefill_s / text_s:>13.3f} {len(coords) / len(link):>16.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,mid", help="comma-separated: tiny, mid")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configs = {"tiny": lambda: VisionLLMv2Config.preset("tiny"), "mid": mid_config}
    for name in args.presets.split(","):
        run(name, configs[name](), args.repeats)


if __name__ == "__main__":
    main()
