"""How a free ``Session.ask`` routes: in the phrasing the model was trained on, and in others.

The task verbs (``detect``, ``segment``, ``ground``, ``generate``, ``edit``) write the trained
answer template themselves, so their routing never fails. A free ``ask`` leaves the answer to the
LLM: it must choose the route token and, for detection and segmentation, write each asked class
before its token. This probe asks held-out ShapesWorld requests through ``ask`` in the trained
phrasing (``visionllm2.model.templates``) and in a few other phrasings, and prints per task and
phrasing how often the answer used the right route and nothing else, and which share of the asked
classes (and of their colours) it wrote in their places. A model that has only seen its templates
routes well in them and poorly elsewhere; the official 7B saw many phrasings of each task. Captions
are also asked after a detection turn on a picture, and after ``reset()`` with that picture still
current. A second table reads the trained detection answer teacher-forced: how often the LLM would
itself write each colour word, shape word and other word of it.

Run: ``python bench/ask_probe.py [--model shapes] [--samples 40] [--first 1000] [--tasks detect,generate]``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from visionllm2.model import templates
from visionllm2.model import tokens as T
from visionllm2.model.data.samples import Sample
from visionllm2.model.data.shapes import COLOURS, SHAPES, Scene, render_scene
from visionllm2.model.data.tasks import ShapesWorld
from visionllm2.model.training.trainer import samples_to_inputs
from visionllm2.sdk import Session

ROUTE_OF_TASK = {"detect": T.DET, "segment": T.SEG, "ground": T.GRD, "generate": T.GEN, "edit": T.EDIT}
# What each phrasing fills in: the asked classes (comma-separated), the expression or the caption.
PHRASINGS: dict[str, dict[str, Callable[[str], str]]] = {
    "detect": {"trained": lambda asked: templates.detect_question(asked.split(", ")),
               "please detect": lambda asked: f"Please detect the {asked}.",
               "find … in the image": lambda asked: f"Find the {asked} in the image.",
               "where are": lambda asked: f"Where are the {asked}?"},
    "segment": {"trained": lambda asked: templates.segment_question(asked.split(", ")),
                "please segment": lambda asked: f"Please segment the {asked}.",
                "masks of": lambda asked: f"Give me the masks of the {asked}."},
    "ground": {"trained": templates.ground_question,
               "find": lambda expression: f"Find the {expression}.",
               "which object": lambda expression: f"Which object is the {expression}?"},
    "generate": {"trained": templates.generate_question,
                 "draw": lambda caption: f"Draw a {caption}.",
                 "picture of": lambda caption: f"Make a picture of a {caption}."},
    "edit": {"trained": templates.edit_question,
             "please": lambda caption: f"Please {caption}.",
             "change": lambda caption: f"Change the image: {caption}."},
}


def request(sample: Sample) -> str:
    """What a phrasing fills in for ``sample``: its asked classes, expression or caption."""
    if sample.task in ("detect", "segment"):
        return ", ".join(sample.meta["asked"])
    return sample.meta["expression" if sample.task == "ground" else "caption"]


def named_classes(text: str, route: str) -> list[str]:
    """The labels a free answer wrote before each ``route`` token ("… for red circle[DET]…, …")."""
    body = re.split(r"results for ", text, flags=re.IGNORECASE)[-1]
    return [name.lower() for name in re.findall(rf"([a-z][a-z ]*?)\s*{re.escape(route)}", body, flags=re.IGNORECASE)]


def ask_once(loaded: Session, sample: Sample, question: str,
             before: Callable[[Session], Any] | None = None) -> dict[str, float]:
    """One free ``ask`` in a fresh session on ``loaded``'s model (after ``before(session)``, if given):
    did it use only the task's route, and (detect / segment) which share of the asked classes, and of
    their colours, did it write in their places?"""
    route = ROUTE_OF_TASK[sample.task]
    session = Session(loaded.model, loaded.processor)
    if before is not None:
        before(session)
    turn = session.ask(question, image=sample.images[0] if sample.images else None, max_new_tokens=48)
    routed = bool(turn.routes) and set(turn.routes) == {route}
    outcome = {"route": float(routed)}
    if sample.task in ("detect", "segment"):  # each asked class against the label written in its place
        asked = sample.meta["asked"]
        named = named_classes(turn.text, route) if routed else []
        named += [""] * (len(asked) - len(named))
        outcome["names"] = float(np.mean([a == b for a, b in zip(asked, named)]))
        outcome["colours"] = float(np.mean([a.split()[0] == (b.split() or [""])[0] for a, b in zip(asked, named)]))
    return outcome


def _detect_first(session: Session, scene: Scene) -> None:
    session.detect([o.name for o in scene.objects], image=scene.image)


def _detect_then_reset(session: Session, scene: Scene) -> None:
    _detect_first(session, scene)
    session.reset()  # the picture stays current, so the next question shows it afresh


# A caption asked in the same conversation after a detection turn on a picture (trained for: the
# picture is in the history), or after reset() with that picture still current (the question shows it).
LATER_REQUESTS = {"after a detection turn": _detect_first, "after reset()": _detect_then_reset}


def probe(session: Session, tasks: Sequence[str], samples: int, first: int) -> list[tuple[str, str, dict[str, float]]]:
    """Rows of (task, phrasing, mean of each :func:`ask_once` outcome) over ``samples`` requests per task."""
    world = ShapesWorld(session.processor, "heldout")
    rows = []
    for task in tasks:
        drawn = world.samples_of(task, first, samples)
        for phrasing, phrase in PHRASINGS[task].items():
            outcomes = [ask_once(session, s, phrase(request(s))) for s in drawn]
            rows.append((task, phrasing, {key: float(np.mean([o[key] for o in outcomes])) for key in outcomes[0]}))
        if task == "generate":  # a caption asked where a picture came before
            scenes = [render_scene(world.seed(i), size=world.image_size) for i in range(first, first + len(drawn))]
            for situation, before in LATER_REQUESTS.items():
                outcomes = [ask_once(session, s, PHRASINGS[task]["trained"](request(s)), partial(before, scene=scene))
                            for s, scene in zip(drawn, scenes)]
                rows.append((task, f"trained, {situation}", {"route": float(np.mean([o["route"] for o in outcomes]))}))
    return rows



def teacher_forced_words(session: Session, samples: Sequence[Sample]) -> dict[str, float]:
    """Over the trained answers of detection ``samples``, teacher-forced: how often the LLM's next
    token is the answer's own, for colour words, shape words and every other word. The answer
    repeats the question's classes in order, so a model that copies them scores 1 on both."""
    model, right = session.model, {kind: [] for kind in ("colour", "shape", "other")}
    for sample in samples:
        batch, _, _ = samples_to_inputs(session.processor, [sample], model.tokenizer.pad_id)
        with torch.no_grad():
            hidden, _ = model.hidden_and_link(batch.to(model.device))
            predicted = model.llm.lm_head(hidden)[0, :-1].argmax(-1).tolist()
        for guess, label in zip(predicted, batch.labels[0, 1:].tolist()):
            if label >= 0:  # query slots and the question are not predicted
                word = model.tokenizer.decode([label]).strip()
                right["colour" if word in COLOURS else "shape" if word in SHAPES else "other"].append(guess == label)
    return {kind: float(np.mean(hits)) for kind, hits in right.items() if hits}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--samples", type=int, default=40, help="held-out requests per task")
    parser.add_argument("--first", type=int, default=1000, help="first held-out index")
    parser.add_argument("--tasks", default=",".join(PHRASINGS), help="comma-separated, of " + ", ".join(PHRASINGS))
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(PHRASINGS))
    if unknown:
        parser.error(f"--tasks: unknown {unknown}; expected some of {list(PHRASINGS)}")
    session = Session.from_pretrained(args.model)
    table = Table(title=f"free ask, {args.samples} held-out requests per task from {args.first}: {args.model}")
    columns = {"route": "right route only", "names": "asked classes written", "colours": "their colours written"}
    for column in ("task", "phrasing", *columns.values()):
        table.add_column(column, justify="left" if column in ("task", "phrasing") else "right")
    for task, phrasing, means in probe(session, tasks, args.samples, args.first):
        table.add_row(task, phrasing, *(f"{means[key]:.2f}" if key in means else "" for key in columns))
    Console().print(table)
    world = ShapesWorld(session.processor, "heldout")
    detections = world.samples_of("detect", args.first, args.samples)
    table = Table(title=f"the trained detection answer, teacher-forced over {len(detections)} held-out samples: "
                        "the LLM's next word is the answer's own")
    for column in ("colour words", "shape words", "other words"):
        table.add_column(column, justify="right")
    words = teacher_forced_words(session, detections)
    table.add_row(*(f"{words[kind]:.2f}" if kind in words else "" for kind in ("colour", "shape", "other")))
    Console().print(table)


if __name__ == "__main__":
    main()
