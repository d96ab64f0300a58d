"""``BatchPredictor``: the Session's verbs over many pictures, several conversations per forward.

    predictor = BatchPredictor.from_pretrained("shapes", batch_size=8)
    turns = predictor.detect(["red circle", "blue square"], images=paths)    # one Turn per picture
    turns = predictor.ground(["the red circle", "the small square"], images=two_paths)   # one each
    turns = predictor.ask("How many shapes are there?", images=paths)

Each picture is a fresh one-turn conversation: ``turns[i]`` is what ``Session(model).detect(classes,
image=images[i])`` returns, up to the rounding of batched matrix products. A batch of ``batch_size``
pictures is encoded by the vision tower in one forward; the LLM runs their conversations together
(a verb's answer in one right-padded prefill, which causal attention never lets a token see;
``ask`` decodes a left-padded batch, as exact); each decoder runs once per picture size in the
batch (decoders pad pictures to one size, so equal sizes keep the answers exact).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from visionllm2.model.batch import collate
from visionllm2.model.errors import is_integer
from visionllm2.model.images import ImageLike, load_image
from visionllm2.model.processor import Processor

from ._arguments import DIFFUSION_OPTIONS, SESSION_OPTIONS, example_pairs
from ._decoding import run_decoders
from ._loading import load_model
from .errors import InvalidInputError, InvalidPromptError, VisionLLMError
from .results import Turn
from .session import PlannedTurn, Session, SessionImage


class _Planner(Session):
    """A one-turn Session whose verbs return their :class:`PlannedTurn` instead of running it."""

    def _turn(self, text, image, prompts, examples, answer, generation, interactive=False, needs=(), labels=None,
              shows_image=True) -> PlannedTurn:  # type: ignore[override]
        return self._plan(text, image, prompts, examples, answer, generation, interactive, needs, labels, shows_image)


class BatchPredictor:
    """One-turn requests over many pictures, ``batch_size`` at a time. See the module docstring.

    Per-picture arguments take one value for every picture or a list with one per picture
    (``ground``'s expressions, ``segment``'s prompts, ``edit``'s instructions …). A bad picture or
    argument raises a typed error naming its index before anything runs for its batch. A batch that
    runs out of device memory runs again at half the size, and ``batch_size`` stays halved (with a
    ``RuntimeWarning``); the answers are the same.
    """

    def __init__(self, model: Any, batch_size: int = 8, processor: Processor | None = None,
                 max_new_tokens: int = 256) -> None:
        if not is_integer(batch_size) or batch_size < 1:
            raise InvalidInputError(f"batch_size: expected an integer ≥ 1, got {batch_size!r}")
        self.session = Session(model, processor, max_new_tokens=max_new_tokens)  # checks the model once
        self.model, self.processor = self.session.model, self.session.processor
        self.batch_size = int(batch_size)
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(cls, path_or_preset: str, batch_size: int = 8, device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None, device_map: Any = None,
                        offload_folder: str | None = None, **options: Any) -> BatchPredictor:
        """As :meth:`Session.from_pretrained` (same presets, device and dtype defaults)."""
        return cls(load_model(path_or_preset, device, dtype, device_map, offload_folder), batch_size, **options)

    # ------------------------------------------------------------------ verbs
    def detect(self, classes: Sequence[str] | Sequence[Sequence[str]], images: Sequence[ImageLike]) -> list[Turn]:
        """Boxes of every instance of each class, per picture (one class list, or one per picture)."""
        each = _each(classes, images, "classes", nested=True)
        return self._run(images, lambda s, i: s.detect(each[i]))

    def ground(self, expressions: str | Sequence[str], images: Sequence[ImageLike]) -> list[Turn]:
        """The one box an expression names, per picture (one expression, or one per picture)."""
        each = _each(expressions, images, "expressions")
        return self._run(images, lambda s, i: s.ground(each[i]))

    def segment(self, classes: Sequence[str] | Sequence[Sequence[str]] | None = None, images: Sequence[ImageLike] = (),
                prompts: Sequence[Sequence[Any]] | None = None,
                examples: Sequence[tuple[ImageLike, Any]] | None = None) -> list[Turn]:
        """Instance masks of classes, of the visual prompts marked on each picture (``prompts[i]``:
        picture i's prompts, e.g. ``[Box(…), Point(…)]``), or of what ``examples`` mark on reference
        pictures (``[(reference, prompt), …]``, the same for every picture; each reference is read
        and encoded once for the whole call)."""
        chosen = [what for what, given in (("classes", bool(classes)), ("prompts", prompts is not None),
                                           ("examples", examples is not None)) if given]
        if len(chosen) > 1:
            raise InvalidPromptError(f"segment: pass one of classes, prompts or examples, got {' and '.join(chosen)}")
        if prompts is not None:
            marks = _per_picture(prompts, images, "prompts")
            return self._run(images, lambda s, i: s.segment(prompts=marks[i]))
        if examples is not None:
            _count(images)
            references = self._references(example_pairs(examples))
            return self._run(images, lambda s, i: s.segment(examples=_lend(s, references)))
        each = _each(classes, images, "classes", nested=True)
        return self._run(images, lambda s, i: s.segment(each[i]))

    def pose(self, classes: Sequence[str] | Sequence[Sequence[str]] = ("person",), images: Sequence[ImageLike] = (),
             keypoints: Sequence[str] | Sequence[Sequence[str]] | None = None) -> list[Turn]:
        """Instances of the classes with named keypoints, per picture (as :meth:`Session.pose`); the
        classes and the keypoint names may be one list for all pictures or one per picture."""
        each_class = _each(classes, images, "classes", nested=True)
        each_keypoints = _each(keypoints, images, "keypoints", nested=True)
        return self._run(images, lambda s, i: s.pose(each_class[i], each_keypoints[i]))

    def ask(self, text: str | Sequence[str], images: Sequence[ImageLike], **generation: Any) -> list[Turn]:
        """A free answer per picture (one question, or one per picture); the model picks the routes.
        Greedy answers equal one-at-a-time ones; sampled ones draw from one generator for the batch."""
        if generation.get("streamer") is not None:
            raise InvalidInputError("streamer: a batch writes many answers at once; stream one with Session.stream")
        each = _each(text, images, "text")
        return self._run(images, lambda s, i: s.ask(each[i], **generation))

    def generate(self, captions: Sequence[str], **options: Any) -> list[Turn]:
        """An image per caption. ``seed=s`` gives caption i the seed ``s + i`` (what ``Session.generate``
        with that seed draws); other options as :meth:`Session.generate`."""
        if isinstance(captions, str) or not isinstance(captions, Sequence):
            raise InvalidPromptError(f"captions: expected a list of captions, got {captions!r}")
        seed = options.pop("seed", None)
        return self._run([None] * len(captions), lambda s, i: s.generate(captions[i], **_seeded(options, seed, i)))

    def edit(self, instructions: str | Sequence[str], images: Sequence[ImageLike], **options: Any) -> list[Turn]:
        """Each picture edited by its instruction (one for all, or one per picture); ``seed`` as
        :meth:`generate`."""
        seed = options.pop("seed", None)
        each = _each(instructions, images, "instructions")
        return self._run(images, lambda s, i: s.edit(each[i], **_seeded(options, seed, i)))

    # ------------------------------------------------------------------ running
    def _run(self, images: Sequence[ImageLike | None], verb: Callable[[Session, int], PlannedTurn]) -> list[Turn]:
        _count(images)
        turns: list[Turn] = []
        with self.session._lock:  # one batch at a time on this predictor's model
            while len(turns) < len(images):
                start = len(turns)
                try:
                    turns += self._run_batch(images, range(start, min(start + self.batch_size, len(images))), verb)
                except RuntimeError as error:  # the device ran out of memory: halve the batch, run it again
                    if not self._smaller_batch(error):
                        raise
        return turns

    def _smaller_batch(self, error: RuntimeError) -> bool:
        """After an out-of-memory error (accelerate's test): halve ``batch_size`` for this and later
        batches and free the cache. False when it cannot shrink (or the error is another one)."""
        from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size

        if self.batch_size == 1 or not should_reduce_batch_size(error):
            return False
        self.batch_size //= 2
        clear_device_cache(garbage_collection=True)
        warnings.warn(f"BatchPredictor: out of memory; batch_size is now {self.batch_size}", RuntimeWarning,
                      stacklevel=4)
        return True

    def _run_batch(self, images: Sequence[ImageLike | None], indices: range,
                   verb: Callable[[Session, int], PlannedTurn]) -> list[Turn]:
        start = time.perf_counter()
        sessions = [self._session_with(images[i], i) for i in indices]
        self._encode([s for s in sessions if s.current_image is not None])
        encoded = time.perf_counter() - start
        plans = []
        for session, i in zip(sessions, indices):
            try:
                plans.append(verb(session, i))
            except VisionLLMError as error:
                raise type(error)(f"picture {i}: {error}") from error
        size = len(plans)
        timings = {"encode": encoded}
        if plans[0].answer_given:
            start = time.perf_counter()
            answers, link = self._prefill(plans)
            timings["prefill"] = time.perf_counter() - start
        else:
            start = time.perf_counter()
            answers, link = self._generate(plans)
            timings["generate"] = time.perf_counter() - start
        first = plans[0]
        captions = [label for plan in plans for label in (plan.labels or [])] if first.labels else None
        marks = [plan.marks for plan in plans] if first.marks is not None else None
        per_row, unusable = run_decoders(self.model, link, [p.picture for p in plans], 0, timings, [p.options for p in plans],
                                         interactive=first.interactive, captions=captions, marks=marks,
                                         free=not first.answer_given)
        turns = []
        for session, plan, (ids, routes, text), results, skipped in zip(sessions, plans, answers, per_row, unusable):
            plan.timings = {stage: seconds / size for stage, seconds in timings.items()}  # this turn's share
            turns.append(session._commit(plan, ids, routes, text, results, skipped))
        return turns

    def _session_with(self, image: ImageLike | None, index: int) -> _Planner:
        """A fresh one-turn session holding picture ``index`` (tiled, not yet encoded) as its current image."""
        # Room for the picture and every lent reference: none of them is evicted and encoded again.
        session = _Planner(self.model, self.processor, self.max_new_tokens, max_encoded_images=64)
        if image is not None:
            try:
                picture = load_image(image, self.model.config.vision.max_image_pixels)
            except VisionLLMError as error:
                raise type(error)(f"images[{index}]: {error}") from error
            session.images["image1"] = SessionImage("image1", picture, self.processor.process_image(picture))
            session.current_image = "image1"
        return session

    def _encode(self, sessions: Sequence[Session]) -> None:
        """Every picture's tiles through the vision tower and bridge in one forward."""
        self._encode_records([s.images[s.current_image] for s in sessions])

    def _encode_records(self, records: Sequence[SessionImage]) -> None:
        if not records:
            return
        pixels = torch.cat([r.tiles.pixel_values for r in records]).to(self.model.device)
        with torch.no_grad():
            features = self.model.encode_images(pixels)[0]  # (ΣN, P, H)
        for record, part in zip(records, features.split([r.tiles.pixel_values.shape[0] for r in records])):
            record.features = part

    def _references(self, pairs: list[tuple[Any, Any]]) -> list[tuple[SessionImage, Any]]:
        """Example pictures read, tiled and encoded once, to be lent to every conversation of the call."""
        records: dict[int, SessionImage] = {}
        lent = []
        for index, (image, prompt) in enumerate(pairs):
            key = os.fspath(image) if isinstance(image, (str, os.PathLike)) else id(image)  # one record per reference
            if key not in records:
                try:
                    picture = load_image(image, self.model.config.vision.max_image_pixels)
                except VisionLLMError as error:
                    raise type(error)(f"examples[{index}]: {error}") from error
                records[key] = SessionImage(f"reference{len(records) + 1}", picture, self.processor.process_image(picture))
            lent.append((records[key], prompt))
        self._encode_records(list(records.values()))
        return lent

    def _prefill(self, plans: Sequence[PlannedTurn]):
        """The verbs' answers are known: one right-padded forward over every conversation."""
        batch = collate([p.chat for p in plans], self.model.tokenizer.pad_id, "right").to(self.model.device)
        features = _features(plans)
        with torch.no_grad():
            embeds, groups = self.model.embed(batch, features)  # (B, T, H)
            positions = torch.arange(embeds.shape[1], device=embeds.device)[None].expand(len(plans), -1)
            hidden = self.model.llm.model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                                          position_ids=positions).last_hidden_state
            link = self.model.gather_link(hidden, batch.input_ids, groups, batch.answer_start)
        answers = []
        for row, plan in enumerate(plans):
            ids = plan.chat.input_ids[plan.chat.answer_start:-1]  # without the closing </s>
            answers.append((ids, [g.route for g in groups if g.row == row], self.model.tokenizer.decode(ids)))
        return answers, link

    def _generate(self, plans: Sequence[PlannedTurn]):
        """Free answers: one left-padded batch decoded together (``model.generate``)."""
        options = dict(plans[0].options)
        seed = options.pop("seed", None)
        for key in (*DIFFUSION_OPTIONS, *SESSION_OPTIONS):  # the decoders', not the LLM's
            options.pop(key, None)
        if seed is not None:
            options["generator"] = torch.Generator(device=self.model.device).manual_seed(int(seed))
        options.setdefault("max_new_tokens", self.max_new_tokens)
        batch = collate([p.chat for p in plans], self.model.tokenizer.pad_id, "left")
        generations = self.model.generate(batch, image_features=_features(plans), **options)
        eos = self.model.tokenizer.eos_id
        answers = [([t for t in g.token_ids if t != eos], g.routes, g.text) for g in generations]
        return answers, merge_links([g.link(self.model.decoder_of_route) for g in generations], self.model.decoders())


def _features(plans: Sequence[PlannedTurn]) -> torch.Tensor | None:
    parts = [p.features for p in plans if p.features is not None]
    return torch.cat(parts) if parts else None  # row after row: the order of the batch's image slots


def merge_links(per_row: Sequence[dict[str, Any]], decoders: dict[str, Any]) -> dict[str, Any]:
    """One sequence's link states per row → the batch's, ``sample_index`` set to the row."""
    from visionllm2.model.decoders.base import LinkStates

    merged: dict[str, list[tuple[int, Any]]] = {}
    for row, link in enumerate(per_row):
        for name, states in link.items():
            if name in decoders:  # a route the loaded model cannot serve is listed, not run
                merged.setdefault(name, []).append((row, states))
    return {
        name: LinkStates(
            states=torch.cat([s.states for _, s in parts]), routes=[r for _, s in parts for r in s.routes],
            labels=[x for _, s in parts for x in s.labels], label_ids=[x for _, s in parts for x in s.label_ids],
            sample_index=torch.cat([torch.full_like(s.sample_index, row) for row, s in parts]),
        )
        for name, parts in merged.items()
    }


def _count(images: Any) -> int:
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence) or not len(images):
        raise InvalidInputError(f"images: expected a non-empty list of pictures, got {type(images).__name__}")
    return len(images)


def _each(value: Any, images: Any, what: str, nested: bool = False) -> list[Any]:
    """One argument per picture: ``value`` for every picture, or its entries when it holds one per
    picture (a list of strings for ``str`` arguments; a list of lists for ``nested`` ones)."""
    count = _count(images)
    per_picture = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
                   and (not nested or not isinstance(value[0], str)))
    if not per_picture:
        return [value] * count
    if len(value) != count:
        raise InvalidPromptError(f"{what}: expected one for all pictures or one per picture ({count}), got {len(value)}")
    return list(value)


def _per_picture(value: Any, images: Any, what: str) -> list[Any]:
    count = _count(images)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != count:
        raise InvalidPromptError(f"{what}: expected a list with one entry per picture ({count}), got {value!r}")
    return list(value)


def _lend(session: Session, references: list[tuple[SessionImage, Any]]) -> list[tuple[str, Any]]:
    """The shared reference records put in ``session`` (after its own picture, as ``segment(examples=…)``
    would add them); the example pairs by their ids there."""
    pairs = []
    for record, prompt in references:
        image_id = next((i for i, r in session.images.items() if r is record), None)
        if image_id is None:
            image_id = f"image{len(session.images) + 1}"
            session.images[image_id] = record
        pairs.append((image_id, prompt))
    return pairs


def _seeded(options: dict[str, Any], seed: Any, index: int) -> dict[str, Any]:
    if seed is None:
        return dict(options)
    if not is_integer(seed) or seed < 0:
        raise InvalidInputError(f"seed: expected an integer ≥ 0, got {seed!r}")
    return {**options, "seed": int(seed) + index}


__all__ = ["BatchPredictor"]
