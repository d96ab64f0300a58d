"""Where an [EDIT] picture goes wrong: the editor, its guidance, or the super link.

One table on held-out ShapesWorld edit samples ("make the circle green"), judged by the classical
checker as ``visionllm2 eval`` judges them (``checker_scores``: the asked colour, the edited object's
shape, and its place):

- **the truth**: the target picture itself at the editor's resolution, the checker's own ceiling;
- **editor alone**: the instruction through the editor's own frozen text encoder (the best the link
  can hope to imitate), for a grid of text / image guidance scales;
- **through the link**: the instruction asked through ``Session.edit`` (the LLM, the ``[EDIT]``
  slots and the mapper), for the same grid.

A gap between the two paths is the link's; a low "editor alone" row is the denoiser's, and a
guidance setting that lifts both is a setting to ship in the config.

Run: ``python bench/edit_probe.py [--model shapes] [--samples 60] [--first 1000] [--guidance 1.5,3]
[--image-guidance 1.5] [--sampler DDIMScheduler:20,DDPMScheduler:50] [--skip-link]``. ``visionllm2 eval`` scores held-out indices from 0, so pick a
setting on others (``--first 1000``) and confirm it there.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from visionllm2.model.data.tasks import ShapesWorld
from visionllm2.model.decoders.diffusion_parts import build_scheduler, parse_sampler
from visionllm2.recipes.evaluate import checker_scores
from visionllm2.sdk import Session

COLUMNS = ("colour", "kind", "place", "all")


def editor_alone(decoder, samples, guidance: float, image_guidance: float,
                 sampler: tuple[str, int]) -> dict[str, float]:
    """Checker scores of the editor sampled from its own text encoder's embeddings of each instruction,
    with ``sampler`` (a diffusers scheduler's name, its steps)."""
    scheduler, steps = sampler
    embeds = decoder.encode_captions([s.meta["caption"] for s in samples])  # (N, Q, d)
    pipeline = decoder.pipeline(build_scheduler(decoder.config, scheduler))
    pipeline.set_progress_bar_config(disable=True)
    side = decoder.config.image_size
    sources = [s.images[0].convert("RGB").resize((side, side), Image.BICUBIC) for s in samples]
    with torch.no_grad():
        pictures = pipeline(image=sources, prompt_embeds=embeds,
                            negative_prompt_embeds=decoder.null_embeds().expand_as(embeds),
                            generator=[torch.Generator().manual_seed(i) for i in range(len(samples))],
                            num_inference_steps=steps, guidance_scale=guidance,
                            image_guidance_scale=image_guidance, output_type="pil").images
    return checker_scores(pictures, [s.meta for s in samples])


def through_the_link(session: Session, samples, guidance: float, image_guidance: float,
                     sampler: tuple[str, int]) -> dict[str, float]:
    """Checker scores of ``Session.edit`` in a fresh conversation per sample, as ``visionllm2 eval`` asks."""
    chosen = {"scheduler": sampler[0], "num_inference_steps": sampler[1]}
    pictures = []
    for index, sample in enumerate(samples):
        session.reset()
        turn = session.edit(sample.meta["caption"], image=sample.images[0], seed=index,
                            guidance_scale=guidance, image_guidance_scale=image_guidance, **chosen)
        pictures.append(turn.images.images[0])
    return checker_scores(pictures, [s.meta for s in samples])


def the_truth(samples, side: int) -> dict[str, float]:
    pictures = [s.targets["ip2p"].image.convert("RGB").resize((side, side), Image.BICUBIC) for s in samples]
    return checker_scores(pictures, [s.meta for s in samples])


def scales(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def samplers(text: str) -> list[tuple[str, int]]:
    """``"DDIMScheduler:20,DDPMScheduler:50"`` → ``[("DDIMScheduler", 20), ("DDPMScheduler", 50)]``."""
    try:
        return [parse_sampler(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--first", type=int, default=0,
                        help="first held-out index (eval scores 0 onward: pick settings on others, e.g. 1000)")
    parser.add_argument("--guidance", type=scales, default=None, help="text guidance scales (default: the config's)")
    parser.add_argument("--image-guidance", type=scales, default=None, help="image guidance scales (default: the config's)")
    parser.add_argument("--sampler", type=samplers, default=None,
                        help="diffusers schedulers and steps, e.g. DDIMScheduler:20,DDPMScheduler:50 (default: the config's)")
    parser.add_argument("--skip-link", action="store_true", help="only the editor-alone rows (fast: one batch)")
    args = parser.parse_args(argv)
    session = Session.from_pretrained(args.model)
    decoder = session.model.decoders()["ip2p"]
    samples = [ShapesWorld(session.processor, "heldout").sample(index, "edit")
               for index in range(args.first, args.first + args.samples)]
    default_sampler = (decoder.config.scheduler, decoder.config.num_inference_steps)
    table = Table(title=f"[EDIT] checker accuracy, {args.samples} held-out instructions from "
                        f"{args.first}: {args.model} (the config's sampler: {default_sampler[0]}, "
                        f"{default_sampler[1]} steps)")
    for column in ("path", "sampler", "guidance", "image guidance", *COLUMNS, "± (95 %)"):
        table.add_column(column, justify="left" if column in ("path", "sampler") else "right")

    def add(path: str, sampler: str, guidance: str, image_guidance: str, scores: dict[str, float]) -> None:
        table.add_row(path, sampler, guidance, image_guidance, *(f"{scores[f'{k}_accuracy']:.2f}" for k in COLUMNS),
                      f"{1.96 * scores['checker_accuracy_stderr']:.2f}")

    add("the truth", "–", "–", "–", the_truth(samples, decoder.config.image_size))
    for sampler in args.sampler or [default_sampler]:
        name = f"{sampler[0]}:{sampler[1]}"
        for guidance in args.guidance or [decoder.config.guidance_scale]:
            for image_guidance in args.image_guidance or [decoder.config.image_guidance_scale]:
                add("editor alone", name, f"{guidance:g}", f"{image_guidance:g}",
                    editor_alone(decoder, samples, guidance, image_guidance, sampler))
                if not args.skip_link:
                    add("through the link", name, f"{guidance:g}", f"{image_guidance:g}",
                        through_the_link(session, samples, guidance, image_guidance, sampler))
    Console().print(table)


if __name__ == "__main__":
    main()
