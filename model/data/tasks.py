"""ShapesWorld tasks: seeded conversations for every route, in the official answer formats.

:class:`ShapesWorld` is an endless, deterministic dataset: ``world.sample(i)`` is always the same
:class:`Sample`, and the ``train`` and ``heldout`` splits draw from disjoint seeds. Each task
renders a scene (shapes, stick figures or a domain pack) and writes the turn the Session's verbs
send (``model/templates.py``), so a model trained here answers those verbs word for word:

- ``chat``: VQA about the scene ("how many red circles are there?" → "two"), sometimes two turns;
- ``detect`` / ``segment``: several classes, present and absent, one ``[DET]`` / ``[SEG]`` group each;
- ``ground``: a referring expression that names exactly one shape ("the large blue square");
- ``interactive``: objects marked by a point, box, scribble or mask prompt → ``region1[DET]…``;
- ``pose``: stick figures with named keypoints → ``[POSE]`` groups (the class, then the keypoints);
- ``generate``: a one-shape picture from its caption; ``edit``: "make the circle green".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .. import templates
from .. import tokens as T
from ..decoders.detection_loss import DetectionTarget
from ..decoders.diffusion import DiffusionTarget
from ..decoders.pose_loss import PoseTarget
from ..processor import ImageSlot, Message, Processor, Segment
from .figures import FIGURE_KEYPOINTS, render_figures
from .samples import TASK_DECODERS, Sample
from .shapes import COLOURS, SHAPES, Scene, ShapeObject, render_scene

SPLITS = ("train", "heldout")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
PLURALS = {kind: kind + "s" for kind in SHAPES}
PROMPT_KINDS = ("point", "box", "scribble", "mask")
#: The default mix of tasks (relative weights) a ShapesWorld stream draws from.
DEFAULT_TASKS: dict[str, float] = {
    "chat": 1.0, "detect": 1.5, "segment": 1.0, "ground": 1.0, "interactive": 1.0, "pose": 1.0,
    "generate": 0.0, "edit": 0.0,
}


def split_seed(index: int, split: str) -> int:
    """The scene seed of the ``index``-th sample of a split: train even, held-out odd, never shared."""
    return 2 * index + SPLITS.index(split)


@dataclass
class ShapesWorld:
    """A seeded stream of training conversations.

    processor: builds the answers' super-link groups (their query counts come from its config).
    tasks: task name → weight; a task with weight 0 never appears. domains: domain packs mixed
    into detect / segment / ground scenes with probability ``domain_rate``, equally often, or a
    mapping pack → weight that draws some packs more often than others. image_size: the side
    of rendered scenes. generate_history_rate: share of training ``generate`` requests asked after
    an earlier detect or segment turn on another picture, as in a session (0: always first).
    """

    processor: Processor
    split: str = "train"
    tasks: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TASKS))
    domains: Sequence[str] | Mapping[str, float] = ()
    domain_rate: float = 0.25
    image_size: int = 128
    generate_history_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"ShapesWorld split: expected one of {SPLITS}, got {self.split!r}")
        unknown = sorted(set(self.tasks) - set(TASK_DECODERS))
        if unknown or not any(w > 0 for w in self.tasks.values()):
            raise ValueError(f"ShapesWorld tasks: expected positive weights for some of {sorted(TASK_DECODERS)}, "
                             f"got {dict(self.tasks)}")
        if not 0.0 <= self.generate_history_rate <= 1.0:
            raise ValueError(f"ShapesWorld generate_history_rate: expected a share in [0, 1], got {self.generate_history_rate!r}")
        names = [t for t, w in self.tasks.items() if w > 0]
        weights = np.array([self.tasks[t] for t in names], dtype=np.float64)
        self._names, self._weights = names, weights / weights.sum()
        self._packs, self._pack_weights = _domain_weights(self.domains)

    def seed(self, index: int) -> int:
        return split_seed(index, self.split)

    def sample(self, index: int, task: str | None = None) -> Sample:
        """The ``index``-th sample (of ``task``, or of a task drawn by weight)."""
        rng = np.random.default_rng([self.seed(index), 7])
        task = task or self._names[int(rng.choice(len(self._names), p=self._weights))]
        if task not in TASK_BUILDERS:
            raise ValueError(f"ShapesWorld task: expected one of {sorted(TASK_BUILDERS)}, got {task!r}")
        return TASK_BUILDERS[task](self, self.seed(index), rng)

    def samples_of(self, task: str, first: int, count: int) -> list[Sample]:
        """Samples ``first … first + count - 1`` of ``task``, less those that became another task (a
        grounding scene where every object is ambiguous is a detection sample instead)."""
        return [s for s in (self.sample(i, task) for i in range(first, first + count)) if s.task == task]

    # ------------------------------------------------------------------ scenes
    def scene(self, seed: int, rng: np.random.Generator, domain_ok: bool = True) -> Scene:
        if domain_ok and self._packs and rng.random() < self.domain_rate:
            from .domains import render_domain

            # Equal weights keep the integer draw, so unweighted streams are the ones they always were.
            pick = (rng.integers(len(self._packs)) if self._pack_weights is None
                    else rng.choice(len(self._packs), p=self._pack_weights))
            return render_domain(self._packs[int(pick)], seed, size=self.image_size)
        return render_scene(seed, size=self.image_size)


# ---------------------------------------------------------------------- helpers
def _user(question: str, image: bool = True, extra: Sequence[Segment] = ()) -> Message:
    return Message("user", [*([ImageSlot(0), "\n"] if image else []), question, *extra])


def _classes_turn(world: ShapesWorld, asked: Sequence[str], route: str, image: bool = True) -> list[Message]:
    """The user asking for ``asked`` by ``route`` (``[DET]``: detect, ``[SEG]``: segment) and the
    answer with one super-link group per class."""
    question = templates.detect_question if route == T.DET else templates.segment_question
    return [_user(question(asked), image=image), Message("assistant", templates.group_answer(world.processor, route, asked))]


def _target(objects: Sequence[ShapeObject], labels: Sequence[int], size: int) -> DetectionTarget:
    if not objects:
        return DetectionTarget(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros((0, size, size), bool))
    return DetectionTarget(np.stack([o.box for o in objects]).astype(np.float32), np.asarray(labels, np.int64),
                           np.stack([o.mask for o in objects]))


def _asked_classes(scene: Scene, rng: np.random.Generator, world: ShapesWorld) -> list[str]:
    """The present classes plus a few absent ones (so that "not there" is learned), shuffled, ≤ 5."""
    present = list(dict.fromkeys(o.name for o in scene.objects))
    packs = _domain_classes(world._packs)
    domain = next((d for d, classes in packs.items() if set(present) & set(classes)), None)
    vocabulary = packs[domain] if domain else [f"{c} {s}" for c in COLOURS for s in SHAPES]
    absent = [name for name in vocabulary if name not in present]
    extra = rng.permutation(absent)[: int(rng.integers(0 if present else 1, 3))].tolist() if absent else []
    asked = rng.permutation(present + extra).tolist()
    return asked[:5] if len(asked) > 5 else asked


def _domain_weights(domains: Sequence[str] | Mapping[str, float]) -> tuple[list[str], np.ndarray | None]:
    """The packs drawn from and their probabilities (None: equally often); checked against DOMAINS."""
    from .domains import DOMAINS

    if isinstance(domains, str):
        raise TypeError(f"ShapesWorld domains: expected a list of packs or a mapping pack → weight, got {domains!r}")
    weighted = isinstance(domains, Mapping)
    if weighted and not all(isinstance(w, (int, float)) and w >= 0 for w in domains.values()):
        raise ValueError(f"ShapesWorld domains: expected weights ≥ 0, got {dict(domains)}")
    unknown = sorted(set(domains) - set(DOMAINS))
    if unknown:
        raise ValueError(f"ShapesWorld domains: unknown packs {unknown}; expected some of {sorted(DOMAINS)}")
    if not weighted:
        return list(domains), None
    packs = [name for name, weight in domains.items() if weight > 0]
    if domains and not packs:
        raise ValueError(f"ShapesWorld domains: expected some weight above 0, got {dict(domains)}")
    weights = np.array([domains[name] for name in packs], dtype=np.float64)
    return packs, (weights / weights.sum() if packs else None)


def _domain_classes(domains: Sequence[str] | Mapping[str, float]) -> dict[str, list[str]]:
    if not domains:
        return {}
    from .domains import DOMAINS

    return {name: list(DOMAINS[name]) for name in domains}


# ---------------------------------------------------------------------- tasks
def _chat(world: ShapesWorld, seed: int, rng: np.random.Generator) -> Sample:
    scene = render_scene(seed, size=world.image_size)
    question, answer, form = _vqa(scene, rng)
    messages = [_user(question), Message("assistant", [answer])]
    if rng.random() < 0.3:  # a second question about the same picture: multi-turn context
        question, answer, form = _vqa(scene, rng)
        messages += [Message("user", [question]), Message("assistant", [answer])]
    return Sample("chat", messages, [scene.image], meta={"answer": answer, "form": form, "objects": scene.objects})


#: The kinds of question ``chat`` samples ask (``meta["form"]``), in the order they are drawn.
VQA_FORMS = ("count", "count_all", "colour", "shape", "exists")


def _vqa(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    """One question about the scene, its one-word answer, and its form (one of :data:`VQA_FORMS`;
    a colour or shape question with no unambiguous object becomes a count)."""
    objects = scene.objects
    kinds = [o.kind for o in objects]
    colours = [o.colour for o in objects]
    form = VQA_FORMS[int(rng.integers(len(VQA_FORMS)))]
    if form == "colour" and any(kinds.count(k) == 1 for k in kinds):
        kind = rng.choice([k for k in kinds if kinds.count(k) == 1])
        return f"What colour is the {kind}?", colours[kinds.index(kind)], form
    if form == "shape" and any(colours.count(c) == 1 for c in colours):
        colour = rng.choice([c for c in colours if colours.count(c) == 1])
        return f"What shape is the {colour} object?", kinds[colours.index(colour)], form
    if form == "exists":
        colour, kind = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        if rng.random() < 0.5 and objects:
            obj = objects[int(rng.integers(len(objects)))]
            colour, kind = obj.colour, obj.kind
        present = any(o.colour == colour and o.kind == kind for o in objects)
        return f"Is there a {colour} {kind} in the image?", "yes" if present else "no", form
    if form == "count_all":
        return "How many shapes are there?", NUMBER_WORDS[len(objects)], form
    kind = rng.choice(SHAPES) if rng.random() < 0.3 or not objects else objects[int(rng.integers(len(objects)))].kind
    return f"How many {PLURALS[kind]} are there?", NUMBER_WORDS[kinds.count(kind)], "count"


def _classes_task(task: str, route: str):
    def build(world: ShapesWorld, seed: int, rng: np.random.Generator) -> Sample:
        scene = world.scene(seed, rng)
        asked = _asked_classes(scene, rng, world)
        labelled = [(o, asked.index(o.name)) for o in scene.objects if o.name in asked]
        target = _target([o for o, _ in labelled], [i for _, i in labelled], world.image_size)
        messages = _classes_turn(world, asked, route)
        shapes_only = all(o.kind in SHAPES for o in scene.objects)
        if task == "detect" and shapes_only and rng.random() < 0.2:  # after a VQA turn on the same picture
            vqa_question, vqa_answer, _ = _vqa(scene, rng)
            messages = [_user(vqa_question), Message("assistant", [vqa_answer]),
                        *_classes_turn(world, asked, route, image=False)]
        return Sample(task, messages, [scene.image], targets={"gdino": target},
                      meta={"asked": asked, "objects": scene.objects})

    return build


def referring_expressions(obj: ShapeObject, objects: Sequence[ShapeObject]) -> list[str]:
    """Expressions (without "the") that name ``obj`` and no other object, most specific last."""
    same = [o for o in objects if o.kind == obj.kind and o.colour == obj.colour]
    name = obj.name
    candidates: list[tuple[str, list[ShapeObject]]] = [
        (name, same),
        (f"{obj.size} {name}", [o for o in same if o.size == obj.size]),
        (f"{name} on the {obj.place}" if obj.place != "centre" else f"{name} in the centre",
         [o for o in same if o.place == obj.place]),
    ]
    areas = [float(o.mask.sum()) for o in same]
    if len(same) > 1 and float(obj.mask.sum()) == max(areas):
        candidates.append((f"largest {name}", [obj]))
    if len(same) > 1 and float(obj.mask.sum()) == min(areas):
        candidates.append((f"smallest {name}", [obj]))
    return [text for text, matches in candidates if matches == [obj]]


def _ground(world: ShapesWorld, seed: int, rng: np.random.Generator) -> Sample:
    scene = world.scene(seed, rng)
    choices = [(o, e) for o in scene.objects for e in referring_expressions(o, scene.objects)]
    if not choices:  # every object is ambiguous: a detection sample instead keeps the stream going
        return TASK_BUILDERS["detect"](world, seed, rng)
    obj, expression = choices[int(rng.integers(len(choices)))]
    messages = [_user(templates.ground_question(expression)), Message("assistant", templates.single_answer(world.processor, T.GRD))]
    return Sample("ground", messages, [scene.image], targets={"gdino": _target([obj], [0], world.image_size)},
                  meta={"expression": expression, "box": obj.box})


def prompt_mask(obj: ShapeObject, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A visual prompt on ``obj`` as the SDK rasterises one: a dot, its box, a stroke, or its mask."""
    height, width = obj.mask.shape
    ys, xs = np.nonzero(obj.mask)
    if kind == "mask":
        return obj.mask.copy()
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "box":
        x0, y0, x1, y1 = obj.box.tolist()
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=1)
    elif kind == "point":
        i = int(rng.integers(len(xs)))
        draw.ellipse((xs[i] - 1, ys[i] - 1, xs[i] + 1, ys[i] + 1), fill=1)
    else:  # scribble: a short stroke through pixels of the object
        picks = rng.choice(len(xs), size=min(3, len(xs)), replace=False)
        draw.line([(float(xs[i]), float(ys[i])) for i in picks], fill=1, width=2)
    return np.asarray(canvas, dtype=bool)


def _interactive(world: ShapesWorld, seed: int, rng: np.random.Generator) -> Sample:
    scene = world.scene(seed, rng)
    if not scene.objects:  # a flawless part: nothing to point at, use a shapes scene
        scene = render_scene(seed, size=world.image_size)
    picked = [scene.objects[i] for i in rng.permutation(len(scene.objects))[: int(rng.integers(1, 3))]]
    kind = PROMPT_KINDS[int(rng.integers(len(PROMPT_KINDS)))]
    names = [f"region{i}" for i in range(1, len(picked) + 1)]
    question = _user(templates.INTERACTIVE_QUESTION, extra=templates.region_segments(names))
    answer = templates.group_answer(world.processor, T.DET, names, "Sure, ")
    regions = [(0, prompt_mask(o, kind, rng)) for o in picked]
    messages = [question, Message("assistant", answer)]
    target = _target(picked, list(range(len(picked))), world.image_size)
    history = np.random.default_rng([seed, 11])  # its own stream: the sample itself stays as it was
    if world.split == "train" and history.random() < 0.3:
        # After a detection turn on the same picture, as in detect → segment(prompts=boxes): the
        # marks' groups follow that turn's, and the target holds both turns' objects.
        asked = _asked_classes(scene, history, world)
        found = [o for o in scene.objects if o.name in asked]
        messages = [*_classes_turn(world, asked, T.DET), _user(templates.INTERACTIVE_QUESTION, image=False,
                    extra=templates.region_segments(names)), *messages[1:]]
        target = _target([*found, *picked], [asked.index(o.name) for o in found] +
                         [len(asked) + i for i in range(len(picked))], world.image_size)
    return Sample("interactive", messages, [scene.image], regions, {"gdino": target},
                  meta={"prompt": kind, "objects": picked})


def _pose(world: ShapesWorld, seed: int, rng: np.random.Generator) -> Sample:
    scene = render_figures(seed, size=world.image_size)
    names = list(FIGURE_KEYPOINTS[scene.kind])
    question = templates.pose_question([scene.kind], names)
    answer = templates.group_answer(world.processor, T.POSE, [scene.kind, *names])
    figures = scene.figures
    target = PoseTarget(1, np.stack([f.box for f in figures]).astype(np.float32), np.zeros(len(figures), np.int64),
                        np.stack([f.keypoints for f in figures]).astype(np.float32))
    return Sample("pose", [_user(question), Message("assistant", answer)], [scene.image], targets={"unipose": target},
                  meta={"kind": scene.kind, "keypoint_names": names})


def caption_of(obj: ShapeObject) -> str:
    where = "in the centre" if obj.place == "centre" else f"on the {obj.place}"
    return f"{obj.colour} {obj.kind} {where}"


def _generate(world: ShapesWorld, seed: int, rng: np.random.Generator) -> Sample:
    scene = render_scene(seed, size=world.image_size, count=(1, 1), background="plain", jpeg=False)
    obj = scene.objects[0]
    caption = caption_of(obj)
    messages = [_user(templates.generate_question(caption), image=False),
                Message("assistant", templates.single_answer(world.processor, T.GEN))]
    images = []
    history = np.random.default_rng([seed, 13])  # its own stream: the sample itself stays as it was
    if world.split == "train" and history.random() < world.generate_history_rate:
        # A caption asked later in a conversation: the [GEN] slots then read past a picture and its
        # detections, and the link must learn to pass those by (a first-turn-only link draws noise).
        earlier = render_scene(int(history.integers(2**31)) * 2, size=world.image_size)  # even: a train seed
        asked = _asked_classes(earlier, history, world)
        messages = [*_classes_turn(world, asked, T.DET if history.random() < 0.5 else T.SEG), *messages]
        images = [earlier.image]
    return Sample("generate", messages, images, targets={"sd": DiffusionTarget(scene.image, caption)},
                  meta={"caption": caption, "colour": obj.colour, "kind": obj.kind, "place": obj.place})


def _edit(world: ShapesWorld, seed: int, rng: np.random.Generator) -> Sample:
    source = render_scene(seed, size=world.image_size, count=(1, 2), background="plain", jpeg=False)
    kinds = [o.kind for o in source.objects]
    kind = kinds[int(rng.integers(len(kinds)))]
    old = next(o.colour for o in source.objects if o.kind == kind)
    colour = rng.choice([c for c in COLOURS if c != old])
    edited = render_scene(seed, size=world.image_size, count=(1, 2), background="plain", jpeg=False,
                          recolour={kind: str(colour)})
    instruction = f"make the {kind if kinds.count(kind) == 1 else PLURALS[kind]} {colour}"
    messages = [_user(templates.edit_question(instruction)), Message("assistant", templates.single_answer(world.processor, T.EDIT))]
    obj = next(o for o in edited.objects if o.kind == kind)
    return Sample("edit", messages, [source.image], targets={"ip2p": DiffusionTarget(edited.image, instruction)},
                  meta={"caption": instruction, "colour": str(colour), "kind": kind, "place": obj.place,
                        "box": (obj.box / world.image_size).tolist()})  # the edited object, in fractions


#: What a ``count`` sample counts in its picture: each shape, each colour, each (colour, shape) pair.
COUNTED = (*SHAPES, *COLOURS, *(f"{colour} {kind}" for colour in COLOURS for kind in SHAPES))
MOST_COUNTED = 4  # counts are classes 0 … 4, the last meaning "4 or more"


def count_classes(objects: Sequence[ShapeObject]) -> list[int]:
    """How many of each of :data:`COUNTED` the objects hold, capped at :data:`MOST_COUNTED`."""
    names = [*(o.kind for o in objects), *(o.colour for o in objects), *(f"{o.colour} {o.kind}" for o in objects)]
    return [min(MOST_COUNTED, names.count(thing)) for thing in COUNTED]


def _count(world: ShapesWorld, seed: int, rng: np.random.Generator) -> Sample:
    """A picture and how many of each shape, colour and coloured shape it holds: the vision tower's
    pre-training target (stage 0), which teaches it what VQA later asks the LLM about."""
    scene = render_scene(seed, size=world.image_size)
    return Sample("count", [], [scene.image], targets={"tower": count_classes(scene.objects)},
                  meta={"objects": scene.objects})


TASK_BUILDERS = {
    "chat": _chat, "detect": _classes_task("detect", T.DET), "segment": _classes_task("segment", T.SEG),
    "ground": _ground, "interactive": _interactive, "pose": _pose, "generate": _generate, "edit": _edit,
    "count": _count,
}

