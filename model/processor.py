"""From a conversation to model inputs: images → tiles, visual prompts → masks, text → token ids.

A message is a list of *segments*: ``str`` is text someone typed (never special tokens),
:class:`Special` names a special token, :class:`ImageSlot` stands for one image and
:class:`RegionSlot` for one visual prompt. The chat template is Vicuna v1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import tokens as T
from .config import VisionLLMv2Config
from .errors import InvalidPromptError, describe
from .images import ImageLike, choose_grid, load_image, normalize, tile_image
from .tokenizer import Tokenizer

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Special:
    """A special token inserted by template code, e.g. ``Special("[DET]")``."""

    token: str


@dataclass(frozen=True)
class ImageSlot:
    """Where an image's ``<im_patch>`` run goes: ``<img>`` + N·P patches + ``</img>``."""

    image_index: int = 0


@dataclass(frozen=True)
class RegionSlot:
    """A visual prompt: ``<reg>{name}<region></reg>``; the ``<region>`` embedding comes from the encoder."""

    name: str


@dataclass(frozen=True)
class TokenIds:
    """Token ids the model itself produced (an earlier answer fed back as history)."""

    ids: tuple[int, ...]


Segment = str | Special | ImageSlot | RegionSlot | TokenIds


@dataclass
class Message:
    role: str  # "user" or "assistant"
    segments: list[Segment]


@dataclass
class ImageInput:
    """One processed image: tiles ``(N, 3, S, S)`` (thumbnail last) and its original size (w, h)."""

    pixel_values: torch.Tensor
    size: tuple[int, int]
    grid: tuple[int, int]


@dataclass
class RegionInput:
    """One visual prompt: the image it is drawn on and its mask on that image's thumbnail ``(S, S)``."""

    image_index: int
    mask: torch.Tensor


@dataclass
class ChatInput:
    """One conversation, ready for the model."""

    input_ids: list[int]
    labels: list[int] | None = None
    images: list[ImageInput] = field(default_factory=list)
    regions: list[RegionInput] = field(default_factory=list)
    answer_start: int = 0  # index of the first token the assistant wrote in its last turn


def query_count(route: str, config: VisionLLMv2Config) -> int:
    table = T.QUERY_TABLE_OF_ROUTE[route]
    return getattr(config.link, f"{table}_queries")


class Processor:
    """Turns images, visual prompts and messages into :class:`ChatInput`."""

    def __init__(self, config: VisionLLMv2Config, tokenizer: Tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------ images
    def process_image(self, image: ImageLike) -> ImageInput:
        vision = self.config.vision
        picture = load_image(image, vision.max_image_pixels)
        tiles = tile_image(picture, vision.image_size, vision.min_tiles, vision.max_tiles, vision.use_thumbnail)
        grid = choose_grid(*picture.size, vision.image_size, vision.min_tiles, vision.max_tiles)
        return ImageInput(normalize(tiles, vision.image_mean, vision.image_std), picture.size, grid)

    def region_mask(self, mask: np.ndarray | torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """A boolean mask ``(H, W)`` on the original image → ``(S, S)`` on the thumbnail.

        Downscaling uses max-pooling so that a 1-pixel prompt survives; an empty mask is refused.
        """
        tensor = torch.as_tensor(np.asarray(mask)) if not isinstance(mask, torch.Tensor) else mask.detach().cpu()
        width, height = image_size
        if tensor.ndim != 2 or tuple(tensor.shape) != (height, width):
            raise InvalidPromptError(f"region mask: expected shape {(height, width)} (H, W), got {describe(tensor)}")
        if not bool(tensor.bool().any()):
            raise InvalidPromptError("region mask: expected at least one pixel set, got an empty mask")
        side = self.config.vision.image_size
        grid = tensor.bool().float()[None, None]
        # Max-pool where the thumbnail is smaller than the image, nearest where it is larger.
        pooled = F.adaptive_max_pool2d(grid, (min(side, height), min(side, width)))
        return F.interpolate(pooled, size=(side, side), mode="nearest")[0, 0] > 0

    # ------------------------------------------------------------------ text
    def encode_segments(self, segments: Sequence[Segment], images: Sequence[ImageInput]) -> list[int]:
        ids: list[int] = []
        tok = self.tokenizer
        for segment in segments:
            if isinstance(segment, str):
                ids += tok.encode_text(segment)
            elif isinstance(segment, Special):
                ids.append(tok.token_id(segment.token))
            elif isinstance(segment, ImageSlot):
                if not 0 <= segment.image_index < len(images):
                    raise InvalidPromptError(
                        f"image slot {segment.image_index}: expected an index below {len(images)} images"
                    )
                tiles = images[segment.image_index].pixel_values.shape[0]
                patches = tiles * self.config.vision.tokens_per_tile
                ids += [tok.token_id(T.IMAGE_START), *[tok.token_id(T.IMAGE_PATCH)] * patches, tok.token_id(T.IMAGE_END)]
            elif isinstance(segment, TokenIds):
                ids += list(segment.ids)
            elif isinstance(segment, RegionSlot):
                ids += [tok.token_id(T.REGION_START), *tok.encode_text(segment.name), tok.token_id(T.REGION), tok.token_id(T.REGION_END)]
            else:
                raise InvalidPromptError(f"message segment: expected str, Special, ImageSlot, RegionSlot or TokenIds, got {describe(segment)}")
        return ids

    def route_segments(self, route: str, label: str = "") -> list[Segment]:
        """``label[ROUTE][EMB]…`` with the route's query count: how answers name their groups."""
        queries = T.query_tokens(query_count(route, self.config))
        return [*([label] if label else []), Special(route), *[Special(q) for q in queries]]

    def build(self, messages: Sequence[Message], images: Sequence[ImageLike | ImageInput] = (),
              regions: Sequence[RegionInput] = (), add_generation_prompt: bool = False) -> ChatInput:
        """Vicuna v1: ``SYSTEM USER: … ASSISTANT: …</s>USER: … ASSISTANT:``.

        Labels cover the assistant's words and its ``</s>``; everything else, and query slots, is ignored.
        With ``add_generation_prompt`` the conversation must end on a user message and the result
        ends with ``ASSISTANT:``, ready for :meth:`VisionLLMv2.generate`.
        """
        if not messages:
            raise InvalidPromptError("messages: expected at least one message, got none")
        processed = [im if isinstance(im, ImageInput) else self.process_image(im) for im in images]
        tok = self.tokenizer
        ids: list[int] = [tok.bos_id, *tok.encode_text(SYSTEM_PROMPT)]
        labels: list[int] = [IGNORE_INDEX] * len(ids)
        answer_start = len(ids)
        for message in messages:
            if message.role == "user":
                part = tok.encode_text(" USER: ") + self.encode_segments(message.segments, processed) + tok.encode_text(" ASSISTANT:")
                ids += part
                labels += [IGNORE_INDEX] * len(part)
            elif message.role == "assistant":
                answer_start = len(ids)
                part = self.encode_segments(message.segments, processed) + [tok.eos_id]
                ids += part
                labels += part
            else:
                raise InvalidPromptError(f"message role: expected 'user' or 'assistant', got {message.role!r}")
        if add_generation_prompt:
            if messages[-1].role != "user":
                raise InvalidPromptError("add_generation_prompt: expected the conversation to end on a user message")
            answer_start = len(ids)
        labels = _ignore_query_slots(ids, labels, tok)
        for region in regions:
            if not 0 <= region.image_index < len(processed):
                raise InvalidPromptError(f"region on image {region.image_index}: only {len(processed)} images given")
        region_count = ids.count(tok.token_id(T.REGION))
        if region_count != len(regions):
            raise InvalidPromptError(f"visual prompts: the text names {region_count} regions, got {len(regions)} masks")
        return ChatInput(ids, None if add_generation_prompt else labels, processed, list(regions), answer_start)


def _ignore_query_slots(ids: list[int], labels: list[int], tok: Tokenizer) -> list[int]:
    """Query slots carry learned embeddings, not words: the LM is never asked to predict them."""
    query_ids = {tok.token_id(q) for q in T.QUERY_TOKENS}
    return [IGNORE_INDEX if token in query_ids else label for token, label in zip(ids, labels)]
