"""Where a [GEN] picture goes wrong: the denoiser, the sampler, or the super link.

Two tables on held-out ShapesWorld generation samples, judged by the classical checker as
``visionllm2 eval`` judges them (``checker_scores``: the asked colour, shape and place):

1. **Checker accuracy per sampler**, for the denoiser alone (the caption through its own frozen
   text encoder: the best the link can hope to imitate) and for the whole model (the caption asked
   through ``Session.generate``, so through the LLM, the ``[GEN]`` slots and the mapper).
2. **Checker accuracy in a later turn**: the same captions asked through ``Session.generate`` first in
   a conversation, after a detect turn on another picture, and after detect → segment(prompts=boxes),
   as a session (and ``make demo``) asks them. A link trained on first turns only draws noise there;
   ``generate_history_rate`` trains it on later ones.
3. **What the ``[GEN]`` slots carry**: a ridge readout of the caption's colour, shape and place from
   the slot states the LLM hands the link, fitted on 70 % of the captions and scored on the rest, for
   first-turn requests and for requests after a detect turn. A word the readout cannot find in a later
   turn is one the LLM lost there, which no link training brings back.
4. **Which caption words the denoiser reads**: its prediction error (ε or v) at a few noise levels with the
   true caption, with one word swapped for another of its kind (colour, shape, place), and with the
   empty caption. A word whose swap leaves the error unchanged is a word the pictures ignore.

Run: ``python bench/generation_probe.py [--model shapes] [--samples 30] [--first 0] [--guidance 1.5,2]
[--samplers DDIMScheduler] [--slot-samples 150] [--skip-samplers]``; pick a guidance on captions ``eval``
does not score (``--first 1000``). On ``shapes`` the
denoiser reads the colour and the place (from 0q on) but hardly the shape, which caps what any link
can reach.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import contextmanager
from itertools import product
from types import SimpleNamespace

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from visionllm2.model import tokens as T
from visionllm2.model.data.shapes import COLOURS, SHAPES, render_scene
from visionllm2.model.data.tasks import ShapesWorld, caption_of
from visionllm2.model.decoders.diffusion_parts import build_scheduler, to_pixels
from visionllm2.recipes.evaluate import checker_scores
from visionllm2.sdk import Session

SAMPLERS = (("DDIMScheduler", 20), ("DDPMScheduler", 50), ("DPMSolverMultistepScheduler", 20))
PLACES = ("left", "right", "top", "bottom", "centre")
NOISE_LEVELS = (100, 300, 500, 700)


def denoiser_alone(decoder, metas, sampler: str, steps: int, guidance: float) -> dict[str, float]:
    embeds = decoder.encode_captions([meta["caption"] for meta in metas])  # (N, Q, d)
    pipeline = decoder.pipeline(build_scheduler(decoder.config, sampler))
    pipeline.set_progress_bar_config(disable=True)
    side = decoder.config.image_size
    pictures = pipeline(prompt_embeds=embeds, negative_prompt_embeds=decoder.null_embeds().expand_as(embeds),
                        generator=[torch.Generator().manual_seed(i) for i in range(len(metas))],
                        num_inference_steps=steps, guidance_scale=guidance,
                        height=side, width=side, output_type="pil").images
    return checker_scores(pictures, metas)


def through_the_link(session: Session, metas, sampler: str, steps: int, guidance: float) -> dict[str, float]:
    pictures = []
    for index, meta in enumerate(metas):
        session.reset()
        turn = session.generate(meta["caption"], seed=index, scheduler=sampler, num_inference_steps=steps,
                                guidance_scale=guidance)
        pictures.append(turn.images.images[0])
    return checker_scores(pictures, metas)


LATER_TURNS = ("first turn", "after a detect turn", "after detect → segment")


def ask_earlier_turn(session: Session, earlier: str, index: int, side: int = 128) -> None:
    """A fresh conversation, then the ``earlier`` turns (one of :data:`LATER_TURNS`) on a held-out
    ``side``² scene of the ``index``-th caption's own."""
    session.reset()
    if earlier != LATER_TURNS[0]:
        scene = render_scene(2 * (50_000 + index) + 1, size=side)  # odd seeds: held out
        found = session.detect(sorted({o.kind for o in scene.objects}) or ["circle"], image=scene.image).boxes
        if earlier == LATER_TURNS[2] and found is not None and len(found):
            session.segment(prompts=list(found)[:2])


def in_a_later_turn(session: Session, metas, earlier: str, side: int = 128) -> dict[str, float]:
    """Checker scores with each caption asked after ``earlier``; the model's sampler and guidance."""
    pictures = []
    for index, meta in enumerate(metas):
        ask_earlier_turn(session, earlier, index, side)
        pictures.append(session.generate(meta["caption"], seed=index).images.images[0])
    return checker_scores(pictures, metas)


@contextmanager
def recorded_slots(session: Session):
    """Collects the ``[GEN]`` groups' slot states ``(n, H)`` that each turn hands the link."""
    states: list[torch.Tensor] = []
    gather = session.model.gather_link

    def recording(*args, **kwargs):
        link = gather(*args, **kwargs)
        states.extend(s.float() for v in link.values() for s, route in zip(v.states, v.routes) if route == T.GEN)
        return link

    session.model.gather_link = recording
    try:
        yield states
    finally:
        del session.model.gather_link  # the class's method again


def slot_states(session: Session, metas, earlier: str, side: int = 128) -> np.ndarray:
    """``(N, n·H)`` the flattened slot states of each caption asked after ``earlier``."""
    with recorded_slots(session) as states, torch.no_grad():
        for index, meta in enumerate(metas):
            ask_earlier_turn(session, earlier, index, side)
            session.generate(meta["caption"], seed=index, num_inference_steps=1)  # the picture is not looked at
    return torch.stack(states).flatten(1).cpu().numpy()


def readout_accuracy(train: np.ndarray, train_labels: Sequence[str], test: np.ndarray,
                     test_labels: Sequence[str], ridge: float = 1.0) -> float:
    """Accuracy on ``test`` of a one-vs-all ridge classifier fitted on ``train`` (features standardised
    by the training set's statistics)."""
    classes = sorted(set(train_labels) | set(test_labels))
    mean, std = train.mean(0), train.std(0) + 1e-6
    def design(x: np.ndarray) -> np.ndarray:
        return np.c_[(x - mean) / std, np.ones(len(x))]
    x = design(train)
    onehot = np.eye(len(classes))[[classes.index(label) for label in train_labels]]
    weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ onehot)
    predicted = (design(test) @ weights).argmax(1)
    return float(np.mean([classes[p] == label for p, label in zip(predicted, test_labels)]))


def swapped(meta: dict, word: str, rng: np.random.Generator) -> str:
    """The caption with one word (``colour``, ``kind`` or ``place``) replaced by another of its kind."""
    choices = {"colour": list(COLOURS), "kind": list(SHAPES), "place": list(PLACES)}[word]
    other = {**meta, word: str(rng.choice([c for c in choices if c != meta[word]]))}
    return caption_of(SimpleNamespace(**other))


@torch.no_grad()
def words_read(decoder, world: ShapesWorld, samples: int) -> dict[int, dict[str, float]]:
    """The UNet's error (on its ε or v target) per noise level per caption variant, on training-split pictures."""
    metas, images = [], []
    for index in range(samples):
        sample = world.sample(index, "generate")
        metas.append(sample.meta)
        images.append(sample.targets["sd"].image)
    side = decoder.config.image_size
    clean = to_pixels(images, (side, side))  # (N, 3, s, s): pixel space
    if decoder.config.vae is not None:
        clean = decoder.sd_vae.encode(clean).latent_dist.mode() * decoder.sd_vae.config.scaling_factor
    rng = np.random.default_rng(0)
    variants = {"true caption": [m["caption"] for m in metas], "empty caption": [""] * samples}
    for word, name in (("colour", "colour"), ("kind", "shape"), ("place", "place")):
        variants[f"{name} swapped"] = [swapped(m, word, rng) for m in metas]
    table: dict[int, dict[str, float]] = {}
    for level in NOISE_LEVELS:
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(level))
        steps = torch.full((samples,), level)
        noisy = decoder.noise_scheduler.add_noise(clean, noise, steps)
        target = decoder.unet_target(clean, noise, steps)
        table[level] = {}
        for name, captions in variants.items():
            predicted = decoder.sd_unet(noisy, steps, encoder_hidden_states=decoder.encode_captions(captions)).sample
            table[level][name] = float(((predicted - target) ** 2).mean())
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--slot-samples", type=int, default=150, help="captions for the slot readout (0: skip it)")
    parser.add_argument("--first", type=int, default=0,
                        help="first held-out caption (eval scores 0 onward: pick settings on others, e.g. 1000)")
    parser.add_argument("--guidance", default="", help="guidance scales for the sampler table, e.g. 1.5,2,2.5 "
                                                       "(default: the config's)")
    parser.add_argument("--samplers", default=",".join(name for name, _ in SAMPLERS),
                        help="the sampler table's samplers, comma-separated")
    parser.add_argument("--skip-samplers", action="store_true", help="only the later-turn, slot and word tables")
    args = parser.parse_args()
    console = Console()
    session = Session.from_pretrained(args.model)
    decoder = session.model.decoders()["sd"]
    world = ShapesWorld(session.processor, "heldout")
    metas = [world.sample(index, "generate").meta for index in range(args.first, args.first + args.samples)]

    table = Table(title=f"[GEN] checker accuracy, {args.samples} held-out captions from {args.first}: {args.model}")
    for column in ("path", "sampler", "steps", "guidance", "colour", "shape", "place", "all"):
        table.add_column(column, justify="left" if column in ("path", "sampler") else "right")
    asked, known = set(args.samplers.split(",")), [name for name, _ in SAMPLERS]
    if unknown := sorted(asked - set(known)):
        parser.error(f"--samplers: expected names among {known}, got {unknown}")
    samplers = [(name, steps) for name, steps in SAMPLERS if name in asked]
    guidances = [float(g) for g in args.guidance.split(",") if g.strip()] or [decoder.config.guidance_scale]
    for (sampler, steps), guidance in () if args.skip_samplers else product(samplers, guidances):
        for path, scores in (("denoiser alone", denoiser_alone(decoder, metas, sampler, steps, guidance)),
                             ("through the link", through_the_link(session, metas, sampler, steps, guidance))):
            table.add_row(path, sampler.replace("MultistepScheduler", "").removesuffix("Scheduler"), str(steps),
                          f"{guidance:g}", *(f"{scores[f'{k}_accuracy']:.2f}" for k in ("colour", "kind", "place", "all")))
    if not args.skip_samplers:
        console.print(table)

    table = Table(title=f"[GEN] checker accuracy by the turn it is asked in, {args.samples} held-out captions from {args.first}: "
                        f"{args.model}")
    for column in ("asked", "colour", "shape", "place", "all"):
        table.add_column(column, justify="left" if column == "asked" else "right")
    for earlier in LATER_TURNS:
        scores = in_a_later_turn(session, metas, earlier, world.image_size)
        table.add_row(earlier, *(f"{scores[f'{k}_accuracy']:.2f}" for k in ("colour", "kind", "place", "all")))
    console.print(table)

    if args.slot_samples:
        slot_metas = [world.sample(index, "generate").meta for index in range(args.slot_samples)]
        cut = int(0.7 * len(slot_metas))
        first, later = (slot_states(session, slot_metas, earlier, world.image_size) for earlier in LATER_TURNS[:2])
        table = Table(title=f"Caption words read back from the [GEN] slot states (ridge readout, {cut} fitted, "
                            f"{len(slot_metas) - cut} scored): {args.model}")
        for column in ("slots of", "readout fitted on", "colour", "shape", "place"):
            table.add_column(column, justify="left" if column in ("slots of", "readout fitted on") else "right")
        for scored, fitted, name, fit_name in ((first, first, LATER_TURNS[0], LATER_TURNS[0]),
                                               (later, later, LATER_TURNS[1], LATER_TURNS[1]),
                                               (later, first, LATER_TURNS[1], LATER_TURNS[0])):
            row = [readout_accuracy(fitted[:cut], [m[k] for m in slot_metas[:cut]], scored[cut:],
                                    [m[k] for m in slot_metas[cut:]]) for k in ("colour", "kind", "place")]
            table.add_row(name, fit_name, *(f"{v:.2f}" for v in row))
        console.print(table)

    errors = words_read(decoder, ShapesWorld(session.processor, "train"), args.samples)
    names = list(next(iter(errors.values())))
    table = Table(title=f"denoiser {decoder.config.prediction_type} MSE, and its change, with the caption changed (an ignored word changes nothing)")
    table.add_column("noise level t", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for level, row in errors.items():
        true = row["true caption"]
        table.add_row(str(level), f"{true:.5f}",
                      *(f"{row[name]:.5f} ({100 * (row[name] / true - 1):+.1f} %)" for name in names[1:]))
    console.print(table)


if __name__ == "__main__":
    main()
