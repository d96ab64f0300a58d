"""A rule-based planner: common goals in plain English → a :class:`~visionllm2.agents.plan.Plan`, offline.

    RuleBasedPlanner().plan("find the red circles, segment them and make them green", image="image1")
    # detect_1  detect   classes=['red circle'], image_id='image1'
    # segment_1 segment  prompts=['$detect_1.boxes']
    # edit_1    edit     instruction='make the red circles green', region_id='$segment_1.masks', image_id='image1'

The goal is cut into clauses at commas, semicolons, sentence ends, "then" and "and" before a
verb. Each clause starts with a verb the planner knows:

=========  ===========================================================================
load       load / open / read ``<path>`` (the plan's image from then on)
detect     find / detect / locate / spot / count / look for / search for / how many …
ground     ground / point to / point at / pick out ``<one referring expression>``
segment    segment / cut out / mask / outline ``<classes>`` or ``them`` (what was found before)
pose       any clause about poses, keypoints or skeletons (``of <classes>``; people by default)
generate   generate / draw / create / render / imagine ``[an image of] <caption>``
edit       make / turn / change / recolour / paint / replace / remove / add … (confined to what
           was found or segmented before, when the clause refers to it)
chat       describe / what / why / who / which / how / is / are / tell / explain …
save       save / write / export … ``to <file.png|.json>`` (the last result)
inspect    inspect / examine ``<the part> [for <defects>]`` → ``inspect_parts``
measure    measure ``<structures>`` (or ``them``: what was found before) → ``measure_structures``
map        map ``<classes>`` → ``map_objects``
=========  ===========================================================================

The recipe clauses read a physical pixel size when the goal gives one ("at 0.05 mm per pixel",
"0.7 mm/px"); without one their areas stay in pixels. No defects / structures / classes named
(or only a word like "defects") means every one the recipe knows.

Pronouns (them, it, those …) refer to the objects of the last detect / ground / segment step.
Class names are singularised ("red circles" → "red circle") to match trained class words.
Anything else raises :class:`GoalNotUnderstoodError`; a chat model with
:class:`~visionllm2.agents.agent.ToolCallingAgent` handles open-ended goals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import GoalNotUnderstoodError
from .plan import Plan, PlanStep

_VERBS: dict[str, tuple[str, ...]] = {  # tool → the clause openings that select it, in matching order
    "load_image": ("load", "open", "read"),
    "save_result": ("save", "write", "export", "store"),
    "generate": ("generate", "draw", "create", "render", "imagine", "synthesise", "synthesize"),
    "segment": ("segment", "cut out", "mask", "outline"),
    "inspect_parts": ("inspect", "examine"),
    "measure_structures": ("measure",),
    "map_objects": ("map",),
    "ground": ("ground", "point to", "point at", "pick out"),
    "detect": ("find", "detect", "locate", "spot", "count", "look for", "search for", "how many", "where are",
               "where is"),
    "edit": ("make", "turn", "change", "recolour", "recolor", "colour", "color", "paint", "replace", "remove",
             "erase", "edit", "add", "put", "fill", "give"),
    "chat": ("describe", "what", "why", "who", "which", "how", "is", "are", "does", "do", "tell", "explain",
             "caption", "summarise", "summarize"),
}
_OPENING = {tool: re.compile(rf"^(?:{'|'.join(verbs)})\b\s*", re.IGNORECASE) for tool, verbs in _VERBS.items()}
_POSE = re.compile(r"\b(?:poses?|keypoints?|skeletons?|body parts)\b", re.IGNORECASE)
_ACTION = "|".join(verb for tool, verbs in _VERBS.items() if tool != "chat" for verb in verbs) + "|estimate"
_AND_VERB = re.compile(rf"\s+and\s+(?=(?:then\s+)?(?:{_ACTION})\b)", re.IGNORECASE)
_CLAUSE_BREAK = re.compile(r"\s*(?:[;!?,]|\.(?=\s|$))\s*|\s+then\s+", re.IGNORECASE)
_FILLER = re.compile(r"^(?:please|can you|could you|would you|now|then|also|first|next|finally|and|"
                     r"after that|afterwards)\b[\s,]*", re.IGNORECASE)
_ARTICLES = re.compile(r"^(?:(?:all|every|each|any)(?:\s+of)?\s+|the\s+|a\s+|an\s+)+", re.IGNORECASE)
_TRAILING = re.compile(r"\s+(?:(?:in|on|from|of)\s+(?:the|this|that|my)\s+(?:image|picture|photo|scene)|"
                       r"(?:in|on|of)\s+(?:it|them)|are there|is there|there are|there|present|visible|you can see|you see)$", re.IGNORECASE)
_PRONOUNS = r"them|it|they|those|these|each of them|all of them|the objects?|the results?|the detections?"
_PRONOUN = re.compile(rf"^(?:{_PRONOUNS})$", re.IGNORECASE)
_PRONOUN_IN = re.compile(rf"\b(?:{_PRONOUNS})\b", re.IGNORECASE)
_IMAGE_WORDS = re.compile(r"^(?:(?:an?|the)\s+)?(?:new\s+)?(?:image|picture|photo|drawing|painting)\s+"
                          r"(?:of|showing|with)\s+", re.IGNORECASE)
_FILE = re.compile(r"(\S+\.(?:png|jpe?g|webp|bmp|gif|tiff?|json))\b", re.IGNORECASE)
_IRREGULAR = {"people": "person", "persons": "person", "men": "man", "women": "woman", "children": "child",
              "mice": "mouse", "geese": "goose", "feet": "foot", "teeth": "tooth", "humans": "person"}
_PRIMARY = {"detect": "boxes", "ground": "boxes", "segment": "masks", "pose": "poses", "generate": "images",
            "edit": "images", "load_image": "image", "inspect_parts": "masks", "measure_structures": "masks",
            "map_objects": "masks"}
_PIXEL_SIZE = re.compile(r"\s*(?:,\s*)?(?:at|with|using)?\s*(\d+(?:\.\d+)?|\.\d+)\s*(?:mm|millimet(?:re|er)s?)\s*"
                         r"(?:per|/|a)\s*(?:pixel|px)\b", re.IGNORECASE)
_WHERE = re.compile(r"\s+(?:in|on|across|over|from|of|within)\s+(?:the|this|that|these|those|my|our|an?)\b.*$",
                    re.IGNORECASE)
_MEASURE_OF = re.compile(r"^(?:the\s+)?(?:sizes?|areas?|extents?|diameters?|dimensions?)\s+of\s+", re.IGNORECASE)
_GENERIC = {"defect", "damage", "flaw", "fault", "problem", "issue", "anything", "everything", "object", "thing",
            "structure", "finding"}


def singular(word: str) -> str:
    """English singular of a plural noun, for the common cases ("circles", "boxes", "people")."""
    lower = word.lower()
    if lower in _IRREGULAR:
        return _IRREGULAR[lower]
    if lower.endswith(("ss", "us", "is")) or len(lower) <= 3:
        return word
    if lower.endswith("ies"):
        return word[:-3] + "y"
    if lower.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    return word[:-1] if lower.endswith("s") else word


def _strip_object(phrase: str) -> str:
    phrase = phrase.strip(" ,.?!")
    while True:
        trimmed = _TRAILING.sub("", _ARTICLES.sub("", phrase)).strip(" ,.?!")
        if trimmed == phrase:
            return phrase
        phrase = trimmed


def classes_of(phrase: str) -> list[str]:
    """Class names in an object phrase: "the red circles and blue squares" → ['red circle', 'blue square']."""
    names = []
    for part in re.split(r"\s*(?:,|&|\band\b|\bor\b)\s*", _strip_object(phrase)):
        words = _strip_object(part).split()
        if words:
            names.append(" ".join([*words[:-1], singular(words[-1])]).lower())
    return list(dict.fromkeys(names))


def clauses_of(goal: str) -> list[str]:
    """The goal cut into clauses, each starting with its verb (filler words dropped)."""
    clauses: list[str] = []
    for piece in _CLAUSE_BREAK.split(goal.strip()):
        for part in _AND_VERB.split(piece):
            while (stripped := _FILLER.sub("", part.strip())) != part.strip():
                part = stripped
            part = re.sub(r"\s+and$", "", part.strip(), flags=re.IGNORECASE)
            if not part:
                continue
            if clauses and _tool_of(part) is None:
                clauses[-1] += ", " + part  # "find the red circles, blue squares": more objects
            else:
                clauses.append(part)
    return clauses


def _tool_of(clause: str) -> str | None:
    if _POSE.search(clause) and not _OPENING["save_result"].match(clause):
        return "pose"
    return next((tool for tool, opening in _OPENING.items() if opening.match(clause)), None)


@dataclass
class _Builder:
    image: str | None
    steps: list[PlanStep] = field(default_factory=list)
    region: str | None = None   # reference to the objects pronouns mean
    phrase: str | None = None   # the words for them, e.g. "the red circles"
    last: str | None = None     # reference to the latest result (what "save it" saves)

    def add(self, tool: str, args: dict, primary: bool = True) -> str:
        number = sum(step.tool == tool for step in self.steps) + 1
        step_id = f"{tool}_{number}"
        self.steps.append(PlanStep(id=step_id, tool=tool, args=args))
        if primary and tool in _PRIMARY:
            self.last = f"${step_id}.{_PRIMARY[tool]}"
        return step_id

    def with_image(self, args: dict) -> dict:
        return {**args, "image_id": self.image} if self.image else args

    def with_images(self, args: dict) -> dict:
        return {**args, "image_ids": [self.image]} if self.image else args

    def found(self, step_id: str, output: str, phrase: str | None) -> None:
        self.region = f"${step_id}.{output}"
        if phrase:
            self.phrase = "the " + _strip_object(phrase)

    def referent(self, clause: str) -> str:
        if self.region is None:
            raise GoalNotUnderstoodError(
                f"goal: {clause!r} refers to objects found earlier, got no detect / ground / segment step before it; "
                "start with e.g. 'find the red circles'")
        return self.region


def _rest(clause: str, tool: str) -> str:
    return _OPENING[tool].sub("", clause, count=1).strip()


class RuleBasedPlanner:
    """Plans common goals without a language model (see the module docstring for what it reads)."""

    def plan(self, goal: str, image: str | None = None) -> Plan:
        """A plan for ``goal``.

        image: a session image id (``"image1"``) the steps look at, or a file path, which becomes a
            first ``load_image`` step (the toolkit must allow its directory). None: the session's
            current image.
        """
        if not isinstance(goal, str) or not goal.strip():
            raise GoalNotUnderstoodError(f"goal: expected a non-empty sentence, got {goal!r}")
        builder = _Builder(image=None)
        if image is not None:
            if re.fullmatch(r"image\d+", image):
                builder.image = image
            else:
                builder.image = f"${builder.add('load_image', {'path': image})}.image"
        for clause in clauses_of(goal):
            tool = _tool_of(clause)
            if tool is None:
                raise GoalNotUnderstoodError(
                    f"goal: expected clauses starting with a verb the rule-based planner knows ({_known()}), got "
                    f"{clause!r}; rephrase it, or plan with a chat model (ToolCallingAgent)")
            getattr(self, f"_{tool}")(builder, clause)
        return Plan(goal=goal, steps=builder.steps)

    # one method per tool: each reads its clause and adds its step
    def _load_image(self, b: _Builder, clause: str) -> None:
        match = _FILE.search(clause)
        path = match.group(1) if match else _rest(clause, "load_image")
        b.image = f"${b.add('load_image', {'path': path})}.image"
        b.region = b.phrase = None

    def _detect(self, b: _Builder, clause: str) -> None:
        phrase = _rest(clause, "detect")
        classes = classes_of(phrase)
        if not classes or _PRONOUN.match(_strip_object(phrase)):
            raise GoalNotUnderstoodError(f"goal: expected class names to find in {clause!r}, e.g. 'find the red circles'")
        b.found(b.add("detect", b.with_image({"classes": classes})), "boxes", phrase)

    def _ground(self, b: _Builder, clause: str) -> None:
        expression = _strip_object(_rest(clause, "ground"))
        if not expression:
            raise GoalNotUnderstoodError(f"goal: expected an expression to ground in {clause!r}")
        b.found(b.add("ground", b.with_image({"expression": expression})), "boxes", expression)

    def _segment(self, b: _Builder, clause: str) -> None:
        phrase = _rest(clause, "segment")
        if not _strip_object(phrase) or _PRONOUN.match(_strip_object(phrase)):
            step_id = b.add("segment", {"prompts": [b.referent(clause)]})
            b.found(step_id, "masks", None)
        else:
            b.found(b.add("segment", b.with_image({"classes": classes_of(phrase)})), "masks", phrase)

    def _pose(self, b: _Builder, clause: str) -> None:
        match = re.search(r"\bof\s+(.+)$", clause, re.IGNORECASE)
        classes = classes_of(match.group(1)) if match else []
        if not classes or _PRONOUN.match(_strip_object(match.group(1) if match else "")):
            classes = ["person"]
        b.found(b.add("pose", b.with_image({"classes": classes})), "poses", match.group(1) if match else "people")

    def _generate(self, b: _Builder, clause: str) -> None:
        caption = _IMAGE_WORDS.sub("", _rest(clause, "generate")).strip()
        if not caption:
            raise GoalNotUnderstoodError(f"goal: expected a caption in {clause!r}, e.g. 'draw a red circle'")
        b.image = f"${b.add('generate', {'caption': caption})}.images"
        b.region = b.phrase = None

    def _edit(self, b: _Builder, clause: str) -> None:
        instruction, region = clause, None
        mentions = b.phrase is not None and _strip_object(b.phrase).lower() in clause.lower()
        if _PRONOUN_IN.search(clause) and b.phrase:
            instruction = _PRONOUN_IN.sub(b.phrase, clause, count=1)
        if b.region is not None and (_PRONOUN_IN.search(clause) or mentions):
            region = b.region
        args = b.with_image({"instruction": instruction})
        if region is not None:
            args["region_id"] = region
        b.image = f"${b.add('edit', args)}.images"
        b.region = b.phrase = None  # what was found lies on the old image

    def _chat(self, b: _Builder, clause: str) -> None:
        asks = re.match(r"(?:what|why|who|which|how|is|are|does|do)\b", clause, re.IGNORECASE)
        question = clause + "?" if asks else clause
        b.add("chat", b.with_image({"question": question}), primary=False)

    def _inspect_parts(self, b: _Builder, clause: str) -> None:
        rest, size = _pixel_size(_rest(clause, "inspect_parts"))
        match = re.search(r"\bfor\s+(.+)$", rest, re.IGNORECASE)
        phrase = _WHERE.sub("", match.group(1)) if match else ""
        args = _named({}, "defects", phrase) | ({"pixel_size": size} if size else {})
        b.found(b.add("inspect_parts", b.with_images(args)), "masks", phrase if "defects" in args else "defects")

    def _measure_structures(self, b: _Builder, clause: str) -> None:
        rest, size = _pixel_size(_rest(clause, "measure_structures"))
        phrase = _WHERE.sub("", _MEASURE_OF.sub("", rest))
        if _PRONOUN.match(_strip_object(phrase) or "it") and b.phrase:
            phrase = b.phrase  # "find the lesions and measure them"
        args = _named({}, "structures", phrase) | ({"pixel_spacing": size} if size else {})
        b.found(b.add("measure_structures", b.with_images(args)), "masks", phrase or "structures")

    def _map_objects(self, b: _Builder, clause: str) -> None:
        phrase = _WHERE.sub("", _rest(clause, "map_objects"))
        if _PRONOUN.match(_strip_object(phrase) or "it") and b.phrase:
            phrase = b.phrase
        b.found(b.add("map_objects", b.with_image(_named({}, "classes", phrase))), "masks", phrase or "objects")

    def _save_result(self, b: _Builder, clause: str) -> None:
        match = _FILE.search(clause)
        if match is None:
            raise GoalNotUnderstoodError(f"goal: expected a file name to save to in {clause!r}, e.g. 'out/result.png'")
        if b.last is None:
            raise GoalNotUnderstoodError(f"goal: {clause!r} saves the last result, got no step with a result before it")
        b.add("save_result", {"result_id": b.last, "path": match.group(1)}, primary=False)


def _pixel_size(text: str) -> tuple[str, float | None]:
    """``text`` without its "at 0.05 mm per pixel", and that size (None when it names none)."""
    match = _PIXEL_SIZE.search(text)
    if match is None or float(match.group(1)) <= 0:
        return text, None
    return (text[: match.start()] + text[match.end():]).strip(), float(match.group(1))


def _named(args: dict, field: str, phrase: str) -> dict:
    """``args`` with ``field`` set to the class names in ``phrase``, unless it names none (or only generic words)."""
    names = [] if _PRONOUN.match(_strip_object(phrase) or "it") else classes_of(phrase)
    return {**args, field: names} if names and not set(names) <= _GENERIC else args


def _known() -> str:
    return "; ".join(f"{tool}: {'/'.join(verbs)}" for tool, verbs in _VERBS.items()) + "; pose: …poses/keypoints…"
