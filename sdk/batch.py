"""``BatchPredictor``: the Session's verbs over many pictures, several conversations per forward.

    predictor = BatchPredictor.from_pretrained("shapes", batch_size=8)
    turns = predictor.detect(["red circle", "blue square"], images=paths)    # one Turn per picture
    turns = predictor.ground(["the red circle", "the small square"], images=two_paths)   # one each
    turns = predictor.ask("How many shapes are there?", images=paths)

    sessions = [Session(predictor.model) for _ in paths]                # conversations that go on
    found = predictor.detect(["red circle"], images=paths, sessions=sessions)
    masks = predictor.segment(prompts=[t.boxes for t in found], sessions=sessions)   # turn 2 of each

Without ``sessions``, each picture is a fresh one-turn conversation: ``turns[i]`` is what
``Session(model).detect(classes, image=images[i])`` returns, up to the rounding of batched matrix
products. With ``sessions``, the call is the next turn of each session, as calling the verb on it
would be (``images`` then optional: each session's current picture). A batch of ``batch_size``
conversations runs together: fresh pictures through the vision tower in one forward; the LLM over
all conversations at once (a verb's answer in one right-padded prefill, which causal attention
never lets a token see; ``ask`` decodes a left-padded batch, as exact); each decoder once per
picture size in the batch (decoders pad pictures to one size, so equal sizes keep the answers
exact). A failed batch leaves its sessions as they were; earlier batches of the call keep their turn.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch

from visionllm2.model.batch import collate
from visionllm2.model.errors import describe, is_integer
from visionllm2.model.images import ImageLike, load_image
from visionllm2.model.processor import Processor

from ._arguments import example_pairs, llm_options
from ._conversation import PlannedTurn, SessionImage
from ._decoding import run_decoders
from ._loading import load_model
from .errors import InvalidInputError, InvalidPromptError, VisionLLMError
from .results import Turn
from .session import Session

#: a verb on one conversation: (session, index of the request, the picture it brings or None) → its plan
Verb = Callable[[Session, int, Any], PlannedTurn]


class BatchPredictor:
    """The Session's verbs over many pictures, ``batch_size`` conversations at a time: fresh ones,
    or the next turn of each of ``sessions``. See the module docstring.

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
    def detect(self, classes: Sequence[str] | Sequence[Sequence[str]], images: Sequence[ImageLike] | None = None, *,
               sessions: Sequence[Session] | None = None) -> list[Turn]:
        """Boxes of every instance of each class, per picture (one class list, or one per picture)."""
        each = _each(classes, _count(images, sessions), "classes", nested=True)
        return self._run(images, sessions, lambda s, i, image: s.detect(each[i], image=image))

    def ground(self, expressions: str | Sequence[str], images: Sequence[ImageLike] | None = None, *,
               sessions: Sequence[Session] | None = None) -> list[Turn]:
        """The one box an expression names, per picture (one expression, or one per picture)."""
        each = _each(expressions, _count(images, sessions), "expressions")
        return self._run(images, sessions, lambda s, i, image: s.ground(each[i], image=image))

    def segment(self, classes: Sequence[str] | Sequence[Sequence[str]] | None = None,
                images: Sequence[ImageLike] | None = None, prompts: Sequence[Sequence[Any]] | None = None,
                examples: Sequence[tuple[ImageLike, Any]] | None = None, *,
                sessions: Sequence[Session] | None = None) -> list[Turn]:
        """Instance masks of classes, of the visual prompts marked on each picture (``prompts[i]``:
        picture i's prompts, e.g. ``[Box(…), Point(…)]`` or an earlier turn's ``boxes``), or of what
        ``examples`` mark on reference pictures (``[(reference, prompt), …]``, the same for every
        picture; for fresh conversations each reference is read and encoded once for the call)."""
        count = _count(images, sessions)
        chosen = [what for what, given in (("classes", bool(classes)), ("prompts", prompts is not None),
                                           ("examples", examples is not None)) if given]
        if len(chosen) > 1:
            raise InvalidPromptError(f"segment: pass one of classes, prompts or examples, got {' and '.join(chosen)}")
        if prompts is not None:
            marks = _per_picture(prompts, count, "prompts")
            return self._run(images, sessions, lambda s, i, image: s.segment(prompts=marks[i], image=image))
        if examples is not None:
            references = self._references(example_pairs(examples), encode=sessions is None)
            return self._run(images, sessions, lambda s, i, image: s.segment(examples=_lend(s, references, sessions),
                                                                            image=image))
        each = _each(classes, count, "classes", nested=True)
        return self._run(images, sessions, lambda s, i, image: s.segment(each[i], image=image))

    def pose(self, classes: Sequence[str] | Sequence[Sequence[str]] = ("person",),
             images: Sequence[ImageLike] | None = None, keypoints: Sequence[str] | Sequence[Sequence[str]] | None = None,
             *, sessions: Sequence[Session] | None = None) -> list[Turn]:
        """Instances of the classes with named keypoints, per picture (as :meth:`Session.pose`); the
        classes and the keypoint names may be one list for all pictures or one per picture."""
        count = _count(images, sessions)
        each_class = _each(classes, count, "classes", nested=True)
        each_keypoints = _each(keypoints, count, "keypoints", nested=True)
        return self._run(images, sessions, lambda s, i, image: s.pose(each_class[i], each_keypoints[i], image=image))

    def ask(self, text: str | Sequence[str], images: Sequence[ImageLike] | None = None, *,
            sessions: Sequence[Session] | None = None, **generation: Any) -> list[Turn]:
        """A free answer per picture (one question, or one per picture); the model picks the routes.
        Greedy answers equal one-at-a-time ones; sampled ones draw from one generator for the batch."""
        if generation.get("streamer") is not None:
            raise InvalidInputError("streamer: a batch writes many answers at once; stream one with Session.stream")
        each = _each(text, _count(images, sessions), "text")
        return self._run(images, sessions, lambda s, i, image: s.ask(each[i], image=image, **generation))

    def generate(self, captions: Sequence[str], *, sessions: Sequence[Session] | None = None,
                 **options: Any) -> list[Turn]:
        """An image per caption. ``seed=s`` gives caption i the seed ``s + i`` (what ``Session.generate``
        with that seed draws), a list of seeds one each; other options as :meth:`Session.generate`."""
        if isinstance(captions, str) or not isinstance(captions, Sequence):
            raise InvalidPromptError(f"captions: expected a list of captions, got {captions!r}")
        seeds = _seeds(options.pop("seed", None), _count([None] * len(captions), sessions))
        return self._run([None] * len(captions), sessions,
                         lambda s, i, image: s.generate(captions[i], **_with_seed(options, seeds[i])))

    def edit(self, instructions: str | Sequence[str], images: Sequence[ImageLike] | None = None, *,
             sessions: Sequence[Session] | None = None, **options: Any) -> list[Turn]:
        """Each picture edited by its instruction (one for all, or one per picture); ``seed`` as
        :meth:`generate`."""
        count = _count(images, sessions)
        each, seeds = _each(instructions, count, "instructions"), _seeds(options.pop("seed", None), count)
        return self._run(images, sessions, lambda s, i, image: s.edit(each[i], image=image, **_with_seed(options, seeds[i])))

    # ------------------------------------------------------------------ running
    def _run(self, images: Sequence[ImageLike | None] | None, sessions: Sequence[Session] | None, verb: Verb) -> list[Turn]:
        count = _count(images, sessions)
        if sessions is not None and any(session.model is not self.model for session in sessions):
            raise InvalidInputError("sessions: expected sessions on this predictor's model (BatchPredictor(session.model))")
        turns: list[Turn] = []
        with ExitStack() as held:
            held.enter_context(self.session._lock)  # one batch at a time on this predictor's model
            for session in sessions or ():  # and nobody else's turn on the sessions it continues
                held.enter_context(session._lock)
            while len(turns) < count:
                start = len(turns)
                chunk = range(start, min(start + self.batch_size, count))
                try:
                    turns += self._run_batch(images, sessions, chunk, verb)
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

    def _run_batch(self, images: Sequence[ImageLike | None] | None, given: Sequence[Session] | None, indices: range,
                   verb: Verb) -> list[Turn]:
        start = time.perf_counter()
        if given is None:  # fresh conversations, their pictures encoded together
            sessions = [self._session_with(images[i], i) for i in indices]
            self._encode([s for s in sessions if s.current_image is not None])
            pictures = [None] * len(sessions)  # each session's current image
        else:  # continued conversations: a new picture is staged by its session, as the verb's own image would be
            sessions = [given[i] for i in indices]
            pictures = [self._record(images[i], i) for i in indices] if images is not None else [None] * len(sessions)
            self._encode_records([p for p in pictures if p is not None])
        plans = []
        for session, picture, i in zip(sessions, pictures, indices):
            try:
                with session._planning():
                    plans.append(verb(session, i, picture))
            except VisionLLMError as error:
                raise type(error)(f"picture {i}: {error}") from error
        timings = {"encode": time.perf_counter() - start}
        size = len(plans)
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
        per_row, unusable = run_decoders(self.model, link, [p.picture for p in plans], [len(s.turns) for s in sessions],
                                         timings, [p.options for p in plans], interactive=first.interactive,
                                         captions=captions, marks=marks, free=not first.answer_given)
        turns = []
        for session, plan, (ids, routes, text), results, skipped in zip(sessions, plans, answers, per_row, unusable):
            plan.timings = {stage: seconds / size for stage, seconds in timings.items()}  # this turn's share
            turns.append(session._commit(plan, ids, routes, text, results, skipped))
        return turns

    def _session_with(self, image: ImageLike | None, index: int) -> Session:
        """A fresh one-turn session holding picture ``index`` (tiled, not yet encoded) as its current image."""
        # Room for the picture and every lent reference: none of them is evicted and encoded again.
        session = Session(self.model, self.processor, self.max_new_tokens, max_encoded_images=64)
        if image is not None:
            session.images["image1"] = self._record(image, index)
            session.current_image = "image1"
        return session

    def _record(self, image: ImageLike | None, index: int, what: str = "images") -> SessionImage | None:
        """Picture ``index`` read and tiled (not yet encoded); a bad one raises naming its index."""
        if image is None:
            return None
        try:
            picture = load_image(image, self.model.config.vision.max_image_pixels)
        except VisionLLMError as error:
            raise type(error)(f"{what}[{index}]: {error}") from error
        return SessionImage("image1", picture, self.processor.process_image(picture))

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

    def _references(self, pairs: list[tuple[Any, Any]], encode: bool = True) -> list[tuple[SessionImage, Any]]:
        """Example pictures read and tiled once (and encoded, to be lent to fresh conversations)."""
        records: dict[int, SessionImage] = {}
        lent = []
        for index, (image, prompt) in enumerate(pairs):
            key = os.fspath(image) if isinstance(image, (str, os.PathLike)) else id(image)  # one record per reference
            if key not in records:
                records[key] = self._record(image, index, "examples")
                records[key].image_id = f"reference{len(records)}"
            lent.append((records[key], prompt))
        if encode:
            self._encode_records(list(records.values()))
        return lent

    def _prefill(self, plans: Sequence[PlannedTurn]):
        """The verbs' answers are known: one right-padded forward over every conversation."""
        batch = collate([p.chat for p in plans], self.model.tokenizer.pad_id, "right").to(self.model.device)
        features = _features(plans)
        with torch.no_grad():
            embeds, groups = self.model.embed(batch, features)  # (B, T, H)
            groups = [g for g in groups if g.position >= int(batch.answer_start[g.row])]  # this answer's, not history's
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
        options = llm_options(plans[0].options, self.model.device, self.max_new_tokens)
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


def _count(images: Any, sessions: Any = None) -> int:
    """How many conversations a call runs: one per picture, or per session it continues."""
    for what, value in (("images", images), ("sessions", sessions)):
        if value is not None and (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not len(value)):
            kind = "pictures" if what == "images" else "Session objects"
            raise InvalidInputError(f"{what}: expected a non-empty list of {kind}, got {describe(value)}")
    if images is None and sessions is None:
        raise InvalidInputError("images: expected a non-empty list of pictures, got none")
    if sessions is not None:
        if not all(isinstance(s, Session) for s in sessions) or len({id(s) for s in sessions}) != len(sessions):
            raise InvalidInputError("sessions: expected Session objects, each at most once in a call")
        if images is not None and len(images) != len(sessions):
            raise InvalidInputError(f"images: expected one per session ({len(sessions)}), got {len(images)}")
    return len(images) if images is not None else len(sessions)


def _each(value: Any, count: int, what: str, nested: bool = False) -> list[Any]:
    """One argument per picture: ``value`` for every picture, or its entries when it holds one per
    picture (a list of strings for ``str`` arguments; a list of lists for ``nested`` ones)."""
    per_picture = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
                   and (not nested or not isinstance(value[0], str)))
    if not per_picture:
        return [value] * count
    if len(value) != count:
        raise InvalidPromptError(f"{what}: expected one for all pictures or one per picture ({count}), got {len(value)}")
    return list(value)


def _per_picture(value: Any, count: int, what: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != count:
        raise InvalidPromptError(f"{what}: expected a list with one entry per picture ({count}), got {value!r}")
    return list(value)


def _lend(session: Session, references: list[tuple[SessionImage, Any]],
          continued: Sequence[Session] | None) -> list[tuple[Any, Any]]:
    """Example pairs for ``session``. A fresh one borrows the call's encoded reference records (put
    after its own picture, as ``segment(examples=…)`` would add them); a continued one gets the
    pictures, which it stages like any verb's, so that a failed batch leaves it as it was."""
    if continued is not None:
        return [(record.picture, prompt) for record, prompt in references]
    pairs = []
    for record, prompt in references:
        image_id = next((i for i, r in session.images.items() if r is record), None)
        if image_id is None:
            image_id = f"image{len(session.images) + 1}"
            session.images[image_id] = record
        pairs.append((image_id, prompt))
    return pairs


def _seeds(seed: Any, count: int) -> list[Any]:
    """Each picture's seed: ``seed + i`` for one int, its own from a list of ``count``, or None."""
    if seed is None:
        return [None] * count
    if isinstance(seed, Sequence) and not isinstance(seed, str):
        if len(seed) != count:
            raise InvalidInputError(f"seed: expected one int, or one per picture ({count}), got {len(seed)}")
        return list(seed)  # each checked by the verb like any seed
    if not is_integer(seed) or seed < 0:
        raise InvalidInputError(f"seed: expected an integer ≥ 0, got {seed!r}")
    return [int(seed) + i for i in range(count)]


def _with_seed(options: dict[str, Any], seed: Any) -> dict[str, Any]:
    return dict(options) if seed is None else {**options, "seed": seed}


__all__ = ["BatchPredictor"]
