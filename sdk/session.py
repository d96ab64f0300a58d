"""``Session``: a multi-turn conversation with VisionLLM v2 that returns typed results.

    session = Session.from_pretrained("path/to/model")
    turn = session.detect(["person", "dog"], image="street.jpg")   # Boxes, one prefill
    turn = session.segment(prompts=[turn.boxes[0]])                 # Masks of the first box
    turn = session.ask("What is the dog doing?")                    # text

Each image is encoded once (vision tower + bridge) and reused by later turns. A turn that fails
raises a typed error and leaves the session exactly as it was; concurrent calls are serialised.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from visionllm2.model import templates
from visionllm2.model import tokens as T
from visionllm2.model.batch import collate
from visionllm2.model.errors import is_integer
from visionllm2.model.images import ImageLike, load_image
from visionllm2.model.options import check_decoding_options
from visionllm2.model.processor import (
    ImageSlot,
    Message,
    Processor,
    RegionInput,
    RegionSlot,
    Segment,
    TokenIds,
)

from ._arguments import (
    as_list,
    check_options,
    checked_names,
    example_pairs,
    llm_options,
    relabel,
)
from ._conversation import Exchange, ImageRef, PlannedTurn, SessionImage
from ._decoding import run_decoders
from ._loading import load_model
from .errors import (
    CapabilityError,
    GenerationLimitError,
    InvalidInputError,
    InvalidPromptError,
)
from .prompts import as_visual_prompt
from .results import Result, Turn

if TYPE_CHECKING:
    from .streaming import TurnStream


class Session:
    """A conversation with one model. See the module docstring for an example."""

    def __init__(self, model: Any, processor: Processor | None = None, max_new_tokens: int = 256,
                 max_encoded_images: int = 8) -> None:
        """``max_encoded_images``: how many images keep their encoded features (on the model's device)
        at once; the least recently used beyond that are encoded again when next used. A loop over a
        thousand pictures in one session would otherwise hold a thousand images' features on the GPU."""
        if model.tokenizer is None:
            raise InvalidInputError("Session: the model has no tokenizer attached; load it with from_pretrained")
        check_decoding_options(max_new_tokens=max_new_tokens)
        if not is_integer(max_encoded_images) or max_encoded_images < 1:
            raise InvalidInputError(f"max_encoded_images: expected an integer ≥ 1, got {max_encoded_images!r}")
        self.model = model.eval()
        self.processor = processor or Processor(model.config, model.tokenizer)
        self.max_new_tokens = max_new_tokens
        self.max_encoded_images = int(max_encoded_images)
        self._encoded: OrderedDict[str, SessionImage] = OrderedDict()  # images holding features, oldest use first
        self.images: dict[str, SessionImage] = {}
        self.current_image: str | None = None
        self.exchanges: list[Exchange] = []
        self.turns: list[Turn] = []
        self._lock = threading.Lock()
        # The KV cache of the conversation so far and the token ids it holds: the next verb turn
        # runs only the tokens after them. `_pending_cache` becomes it when a turn commits.
        self._prefix_cache: tuple[tuple[int, ...], Any] = ((), None)
        self._pending_cache: tuple[tuple[int, ...], Any] = ((), None)
        self._cache_where: tuple[torch.device, torch.dtype] | None = None  # the model's device and dtype then
        self._planner = threading.local()  # see _planning: per thread, so that another thread's turn waits its turn

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path_or_preset: str, device: str | torch.device | None = None,
                        dtype: torch.dtype | str | None = None, device_map: Any = None,
                        offload_folder: str | None = None, **options: Any) -> Session:
        """A local model directory, or a preset name: ``shapes`` (the model trained on ShapesWorld and
        shipped inside the package, offline), ``tiny`` (random weights, for trying the API).

        Device: CUDA when present, else CPU. Dtype (a torch dtype or its name, "bfloat16"): bfloat16 on
        CUDA (float16 on GPUs without native bfloat16), float32 on CPU. ``device_map`` ("auto", a dict
        …) spreads a large model over GPUs and CPU through accelerate; parts it maps to "disk" go to
        ``offload_folder``; a map that names no GPU loads float32 by default. ``options`` go to the
        constructor.
        """
        model = load_model(path_or_preset, device, dtype, device_map, offload_folder)
        return cls(model, **options)

    # ------------------------------------------------------------------ images
    def set_image(self, image: ImageLike) -> str:
        """Add an image and make it current; returns its id. The image is encoded on first use."""
        with self._lock:
            record = self._new_image(image)
            self.images[record.image_id] = record
            self.current_image = record.image_id
            return record.image_id

    def _new_image(self, image: ImageLike) -> SessionImage:
        picture = load_image(image, self.model.config.vision.max_image_pixels)
        image_id = f"image{len(self.images) + 1}"
        return SessionImage(image_id, picture, self.processor.process_image(picture))

    def _resolve_image(self, image: ImageLike | str | None, staged: dict[str, SessionImage]) -> str | None:
        if image is None:
            return self.current_image
        if isinstance(image, str) and image in self.images:
            return image
        # A SessionImage is a picture BatchPredictor already read and encoded, with others, for this turn.
        record = image if isinstance(image, SessionImage) else self._new_image(image)
        record.image_id = f"image{len(self.images) + len(staged) + 1}"
        staged[record.image_id] = record
        return record.image_id

    def _features(self, record: SessionImage) -> torch.Tensor:
        if record.features is None:
            pixels = record.tiles.pixel_values.to(self.model.device)
            with torch.no_grad():
                record.features = self.model.encode_images(pixels)[0]  # (N, P, H)
        self._encoded[record.image_id] = record
        self._encoded.move_to_end(record.image_id)
        while len(self._encoded) > self.max_encoded_images:  # the least recently used gives its memory back
            _, oldest = self._encoded.popitem(last=False)
            oldest.features = None
        return record.features

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str) -> None:
        """Write the conversation, its images, prompts and results to ``directory``."""
        from .persistence import save_session

        with self._lock:
            save_session(self, directory)

    @classmethod
    def load(cls, directory: str, model: Any) -> Session:
        """A session saved by :meth:`save`, continued with ``model`` (the same weights replay identically)."""
        from .persistence import load_session

        return load_session(directory, model)

    # ------------------------------------------------------------------ the conversation
    @property
    def history(self) -> list[tuple[str, str]]:
        """(user text, assistant text) of every turn so far."""
        return [(turn.prompt, turn.text) for turn in self.turns]

    def reset(self, images: bool = False) -> None:
        """Forget the conversation; images stay loaded (and encoded) unless ``images`` is true."""
        with self._lock:
            self.exchanges, self.turns = [], []
            self._prefix_cache = ((), None)
            if images:  # ids restart at image1
                self.images, self.current_image, self._encoded = {}, None, OrderedDict()

    def _build(self, exchanges: Sequence[Exchange], images: dict[str, SessionImage], answer: list[Segment] | None):
        order: list[str] = []
        messages, regions = [], []
        for exchange in exchanges:
            segments: list[Segment] = []
            for segment in exchange.user:
                if isinstance(segment, ImageRef):
                    if segment.image_id not in order:
                        order.append(segment.image_id)
                        segments.append(ImageSlot(order.index(segment.image_id)))
                else:
                    segments.append(segment)
            messages.append(Message("user", segments))
            for image_id, mask in exchange.regions:
                thumbnail = self.processor.region_mask(mask, images[image_id].picture.size)
                regions.append(RegionInput(order.index(image_id), thumbnail))
            if exchange.answer:
                messages.append(Message("assistant", [TokenIds(exchange.answer)]))
        if answer is not None:
            messages.append(Message("assistant", answer))
        chat = self.processor.build(messages, [images[i].tiles for i in order], regions,
                                    add_generation_prompt=answer is None)
        features = torch.cat([self._features(images[i]) for i in order]) if order else None
        return chat, features, order

    def _user_turn(self, text: str, image_id: str | None, images: dict[str, SessionImage], prompts: Sequence[Any],
                   examples: Sequence[tuple[Any, Any]], staged: dict[str, SessionImage]) -> Exchange:
        if not isinstance(text, str) or not text.strip():
            raise InvalidPromptError(f"text: expected a non-empty question, got {text!r}")
        shown = {s.image_id for e in self.exchanges for s in e.user if isinstance(s, ImageRef)}
        user: list[Segment | ImageRef] = []
        regions: list[tuple[str, np.ndarray]] = []
        for index, (example_image, example_prompt) in enumerate(example_pairs(examples), start=1):
            example_id = self._resolve_image(example_image, staged)
            images.update(staged)
            mask = example_prompt.to_mask(images[example_id].picture.size)
            user += [ImageRef(example_id), f"\nexample {index}: ", RegionSlot(f"example{index}")]
            regions.append((example_id, mask))
            shown.add(example_id)
        if image_id is not None and image_id not in shown:
            user += [ImageRef(image_id), "\n"]
        user.append(text)
        for prompt in prompts:
            if image_id is None:
                raise InvalidPromptError("visual prompts need an image: pass image= or call set_image first")
            mask = as_visual_prompt(prompt).to_mask(images[image_id].picture.size)
            regions.append((image_id, mask))
        user += templates.region_segments([f"region{i}" for i in range(1, len(prompts) + 1)])
        return Exchange(user, regions)

    # ------------------------------------------------------------------ turns
    def ask(self, text: str, image: ImageLike | str | None = None, prompts: Sequence[Any] = (),
            examples: Sequence[tuple[Any, Any]] = (), **generation: Any) -> Turn:
        """Ask anything; the model decides the routes. Options: ``max_new_tokens``, ``do_sample``,
        ``temperature``, ``top_p``, ``seed``, ``logits_processor``, ``streamer`` (a transformers
        ``TextStreamer`` …: gets the answer's ids as they are chosen)."""
        return self._turn(text, image, prompts, examples, answer=None, generation=generation)

    def stream(self, text: str, image: ImageLike | str | None = None, prompts: Sequence[Any] = (),
               examples: Sequence[tuple[Any, Any]] = (), **generation: Any) -> TurnStream:
        """:meth:`ask`, read while it is written: iterate for the text, then ``.turn`` (``sdk.streaming``)."""
        from .streaming import TurnStream

        return TurnStream(self, text, image, prompts, examples, generation)

    def _turn(self, text: str, image: ImageLike | str | None, prompts: Sequence[Any], examples: Sequence[Any],
              answer: list[Segment] | None, generation: dict[str, Any], interactive: bool = False,
              needs: Sequence[str] = (), labels: list[str] | None = None, shows_image: bool = True) -> Turn:
        """One exchange. ``shows_image`` False (a caption → picture request): no picture is put in the
        question, not even the current one, and the current image stays current for the next verb."""
        if getattr(self._planner, "active", False):  # this thread's BatchPredictor holds the lock and runs the plan
            return self._plan(text, image, prompts, examples, answer, generation, interactive, needs, labels, shows_image)
        with self._lock:
            plan = self._plan(text, image, prompts, examples, answer, generation, interactive, needs, labels, shows_image)
            if plan.answer_given:
                answer_ids, routes, link, raw_text, seconds = self._prefill(plan.chat, plan.features)
                plan.timings["prefill"] = seconds
            else:
                answer_ids, routes, link, raw_text, seconds = self._generate(plan.chat, plan.features, generation)
                plan.timings["generate"] = seconds
            marks = None if plan.marks is None else [plan.marks]
            per_row, unusable = run_decoders(self.model, link, [plan.picture], len(self.turns), plan.timings, plan.options,
                                             interactive=plan.interactive, captions=plan.labels, marks=marks,
                                             free=not plan.answer_given)
            return self._commit(plan, answer_ids, routes, raw_text, per_row[0], unusable[0])

    @contextmanager
    def _planning(self) -> Iterator[None]:
        """Inside, a verb returns its :class:`PlannedTurn` instead of running it: ``BatchPredictor``
        runs the plans of many sessions together, then commits each turn to its session."""
        self._planner.active = True
        try:
            yield
        finally:
            self._planner.active = False

    def _plan(self, text: str, image: ImageLike | str | None, prompts: Sequence[Any], examples: Sequence[Any],
              answer: list[Segment] | None, generation: dict[str, Any], interactive: bool, needs: Sequence[str],
              labels: list[str] | None, shows_image: bool) -> PlannedTurn:
        """Everything a turn does before the LLM runs: checks, images, the conversation built. Changes nothing."""
        check_options(generation)
        missing = [r for r in needs if r not in self.model.decoder_of_route]
        if missing:
            raise CapabilityError(f"this model has no decoder for {missing}; loaded: {sorted(self.model.decoder_of_route)}")
        staged: dict[str, SessionImage] = {}
        image_id = self._resolve_image(image, staged) if shows_image else None
        images = {**self.images, **staged}
        exchange = self._user_turn(text, image_id, images, as_list(prompts, "prompts"), examples, staged)
        images.update(staged)
        start = time.perf_counter()
        chat, features, _ = self._build([*self.exchanges, exchange], images, answer)
        timings = {"encode": time.perf_counter() - start}
        room = self.model.config.llm.max_position_embeddings
        needed = len(chat.input_ids) + (0 if answer is not None else generation.get("max_new_tokens", self.max_new_tokens))
        if needed > room:
            raise GenerationLimitError(
                f"this turn needs {needed} positions (conversation {len(chat.input_ids)} tokens + answer), the model "
                f"has {room}; call reset() to start a new conversation, use fewer image tiles, or lower max_new_tokens"
            )
        # A verb's visual prompts on the picture itself: the masks answering them must agree with them.
        marks = np.stack([mask for _, mask in exchange.regions]) if interactive and prompts else None
        return PlannedTurn(text, exchange, staged, image_id, images[image_id].picture if image_id else None, chat,
                           features, answer is not None, labels, marks, shows_image, timings, dict(generation), interactive)

    def _commit(self, plan: PlannedTurn, answer_ids: list[int], routes: list[str], raw_text: str,
                results: list[Result], unusable: set[str]) -> Turn:
        """The turn's results become the session's: only now, so a failure before leaves it as it was."""
        if plan.labels is not None:  # the verb knows the words better than the answer template does
            results = [relabel(r, plan.labels) for r in results]
        skipped = [r for r in routes if r not in self.model.decoder_of_route or r in unusable]
        turn = Turn(index=len(self.turns), prompt=plan.text, text=raw_text, routes=routes, results=results,
                    image_id=plan.image_id, timings=plan.timings, skipped_routes=skipped)
        self._prefix_cache, self._pending_cache = self._pending_cache, ((), None)
        plan.exchange.answer = tuple(answer_ids)
        self.images.update(plan.staged)
        if plan.shows_image:
            self.current_image = plan.image_id
        self.exchanges.append(plan.exchange)
        self.turns.append(turn)
        return turn

    def _generate(self, chat, features, options: dict[str, Any]):
        options = llm_options(options, self.model.device, self.max_new_tokens)
        start = time.perf_counter()
        batch = collate([chat], self.model.tokenizer.pad_id, "left")
        cache, reuse = self._reusable_cache(tuple(chat.input_ids))
        generation = self.model.generate(batch, image_features=features, cache=cache, cached_tokens=reuse, **options)[0]
        seconds = time.perf_counter() - start
        # The cache now holds the prompt and every token fed back, the answer's </s> included.
        self._pending_cache = (tuple(chat.input_ids) + tuple(generation.token_ids), cache)
        ids = [t for t in generation.token_ids if t != self.model.tokenizer.eos_id]
        # Routes the model chose but this model cannot serve are kept in `turn.routes` and listed in
        # `turn.skipped_routes`: the model's choice, not the user's error (verbs raise CapabilityError).
        link = {name: states for name, states in generation.link(self.model.decoder_of_route).items()
                if name in self.model.decoders()}
        return ids, generation.routes, link, generation.text, seconds

    def _reusable_cache(self, ids: tuple[int, ...]):
        """The conversation's KV cache cut to the longest cached prefix of ``ids`` (or a fresh one)."""
        from transformers import DynamicCache

        cached_ids, cache = self._prefix_cache
        reuse = len(cached_ids) if cache is not None and ids[: len(cached_ids)] == cached_ids else 0
        if reuse >= len(ids):
            reuse = 0  # nothing new to run: recompute rather than special-case an empty forward
        where = (self.model.device, self.model.dtype)
        if where != self._cache_where:  # the model moved or was cast since: its cached keys no longer fit
            reuse = 0
        if not reuse:
            self._cache_where = where
            return DynamicCache(), 0
        if cache.get_seq_length() > reuse:
            cache.crop(reuse - cache.get_seq_length())  # drop what a failed turn appended after the prefix
        return cache, reuse

    def _prefill(self, chat, features):
        """The verbs' path: the whole answer is known, so one forward over what the cache lacks."""
        start = time.perf_counter()
        batch = collate([chat], self.model.tokenizer.pad_id).to(self.model.device)
        ids = tuple(chat.input_ids)
        cache, reuse = self._reusable_cache(ids)
        with torch.no_grad():
            embeds, groups = self.model.embed(batch, features)  # (1, T, H); cheap: features are cached
            groups = [g for g in groups if g.position >= chat.answer_start]  # this answer's, not history's
            positions = torch.arange(reuse, len(ids), device=embeds.device)[None]
            suffix = self.model.llm.model(inputs_embeds=embeds[:, reuse:], position_ids=positions, cache=cache,
                                          use_cache=True).last_hidden_state  # (1, T - reuse, H)
            hidden = torch.cat([suffix.new_zeros(1, reuse, suffix.shape[-1]), suffix], dim=1)
            link = self.model.gather_link(hidden, batch.input_ids, groups, batch.answer_start)
        self._pending_cache = (ids, cache)
        answer_ids = chat.input_ids[chat.answer_start:-1]  # without the closing </s>
        routes = [g.route for g in groups]
        return answer_ids, routes, link, self.model.tokenizer.decode(answer_ids), time.perf_counter() - start

    # ------------------------------------------------------------------ task verbs (one prefill)
    def detect(self, classes: Sequence[str], image: ImageLike | str | None = None) -> Turn:
        """Boxes of every instance of each class (xyxy pixels of the original image)."""
        classes = checked_names(classes, "classes")
        answer = templates.group_answer(self.processor, T.DET, classes)
        return self._turn(templates.detect_question(classes), image, (), (), answer, {}, needs=[T.DET])

    def ground(self, expression: str, image: ImageLike | str | None = None) -> Turn:
        """The one box that the referring expression names."""
        expression = checked_names([expression], "expression")[0]
        if expression.lower().startswith("the "):  # the question already says "the"
            expression = expression[4:]
        answer = templates.single_answer(self.processor, T.GRD)
        return self._turn(templates.ground_question(expression), image, (), (), answer, {},
                          needs=[T.GRD], labels=[expression])

    def segment(self, classes: Sequence[str] | None = None, prompts: Sequence[Any] = (),
                image: ImageLike | str | None = None, examples: Sequence[tuple[Any, Any]] = ()) -> Turn:
        """Instance masks of classes, or the masks of objects marked by visual prompts / examples.

        Each visual prompt gets one mask (``Masks`` in prompt order): the object the model scores for
        that prompt's group, among those whose mask covers the mark (``mark_agreement`` in the
        detection config: score × the share of the mark covered). Examples mark other pictures,
        so their answers are by score alone."""
        if classes:
            classes = checked_names(classes, "classes")
            answer = templates.group_answer(self.processor, T.SEG, classes)
            return self._turn(templates.segment_question(classes), image, (), (), answer, {}, needs=[T.SEG])
        prompts = [as_visual_prompt(prompt) for prompt in as_list(prompts, "prompts")]
        examples = example_pairs(examples)
        if not prompts and not examples:
            raise InvalidPromptError("segment: expected classes, prompts or examples, got none of them")
        marks = prompts or [prompt for _, prompt in examples]
        names = [f"region{i}" if prompts else f"example{i}" for i in range(1, len(marks) + 1)]
        answer = templates.group_answer(self.processor, T.DET, names, "Sure, ")
        question = templates.INTERACTIVE_QUESTION if prompts else templates.EXAMPLES_QUESTION
        # The model answers by region; a labelled mark (e.g. one taken from turn.boxes[2]) names its masks.
        labels = [mark.label or name for mark, name in zip(marks, names)]
        return self._turn(question, image, prompts, examples, answer, {}, interactive=True, needs=[T.DET], labels=labels)

    def pose(self, classes: Sequence[str] = ("person",), keypoints: Sequence[str] | None = None,
             image: ImageLike | str | None = None) -> Turn:
        """Instances of the classes with named keypoints (COCO's 17 for people by default).

        Keypoints are ``(x, y, score)`` in pixels of the original image; any names work (animals,
        hands, … up to 68 a class), they come from the request, not a fixed list.
        """
        from .results import COCO_KEYPOINT_NAMES

        classes = checked_names(classes, "classes")
        if keypoints is None:
            if any(c != "person" for c in classes):
                raise InvalidPromptError(f"pose: pass keypoints= for classes other than 'person', got {classes}")
            keypoints = list(COCO_KEYPOINT_NAMES)
        keypoints = checked_names(keypoints, "keypoints")
        spoken = [name.replace("_", " ") for name in keypoints]  # "left_eye" is asked as "left eye"
        question = templates.pose_question(classes, spoken)
        answer = templates.group_answer(self.processor, T.POSE, [*classes, *spoken])
        options = {"pose_objects": len(classes), "keypoint_names": keypoints}
        return self._turn(question, image, (), (), answer, options, needs=[T.POSE], labels=classes)

    def generate(self, caption: str, **options: Any) -> Turn:
        """An image from a caption (``[GEN]``). Options: ``seed``, ``num_inference_steps``,
        ``guidance_scale``, ``height``, ``width``, ``scheduler`` (a diffusers scheduler's class name)."""
        caption = checked_names([caption], "caption")[0]
        answer = templates.single_answer(self.processor, T.GEN)
        # No picture in the question: after reset() the current image would otherwise be shown anew,
        # a prompt no [GEN] request is trained on ("blue square in the centre" on `shapes`: 3 of 4 seeds
        # right without it, 0 of 4 with it).
        return self._turn(templates.generate_question(caption), None, (), (), answer, options, needs=[T.GEN],
                          labels=[caption], shows_image=False)

    def edit(self, caption: str, image: ImageLike | str | None = None, **options: Any) -> Turn:
        """The current image edited by an instruction (``[EDIT]``). Options: as :meth:`generate`, and
        ``image_guidance_scale``."""
        caption = checked_names([caption], "caption")[0]
        if image is None and self.current_image is None:
            raise InvalidPromptError("edit: expected an image to edit: pass image= or call set_image first")
        answer = templates.single_answer(self.processor, T.EDIT)
        return self._turn(templates.edit_question(caption), image, (), (), answer, options,
                          needs=[T.EDIT], labels=[caption])

    def chat(self, text: str, image: ImageLike | str | None = None, **generation: Any) -> Turn:
        """A text answer (the model may still route, as in :meth:`ask`)."""
        return self.ask(text, image=image, **generation)
