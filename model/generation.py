"""Decoding with the super link, batched.

Each step feeds every sequence one *chunk*: the token it just produced, followed — when that token
is a routing token — by the route's learned queries, all in the same forward. Chunks of different
lengths are right-padded with masked slots, and position ids count only real tokens, so a batch
decodes exactly as its samples would alone (the official code is limited to batch size 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

from . import tokens as T
from .batch import Batch
from .decoders.base import LinkStates
from .errors import InvalidInputError
from .options import check_decoding_options

if TYPE_CHECKING:
    from .visionllm import VisionLLMv2


@dataclass
class GeneratedGroup:
    """One routing token the model produced, with the hidden states at its queries ``(n, H)``."""

    route: str
    label: str
    label_ids: list[int]
    states: torch.Tensor


@dataclass
class Generation:
    """What one sequence produced: token ids (query slots included), text, routes, and groups."""

    token_ids: list[int]
    text: str
    routes: list[str]
    groups: list[GeneratedGroup] = field(default_factory=list)

    def link(self, decoder_of_route: dict[str, str]) -> dict[str, LinkStates]:
        """This sequence's groups as :class:`LinkStates` per decoder (sample index 0)."""
        out: dict[str, list[GeneratedGroup]] = {}
        for group in self.groups:
            out.setdefault(decoder_of_route.get(group.route, group.route), []).append(group)
        return {
            name: LinkStates(
                states=torch.stack([g.states for g in groups]), routes=[g.route for g in groups],
                labels=[g.label for g in groups], label_ids=[g.label_ids for g in groups],
                sample_index=torch.zeros(len(groups), dtype=torch.long, device=groups[0].states.device),
            )
            for name, groups in out.items()
        }


def _next_tokens(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Greedy, or nucleus sampling at ``temperature``: ``(B, V)`` → ``(B,)``."""
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / max(temperature, 1e-5), dim=-1)
    sorted_probs, order = probs.sort(-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    if generator is not None:  # sample where the caller's generator lives (a CPU one for a GPU model, say)
        sorted_probs = sorted_probs.to(generator.device)
    choice = torch.multinomial(sorted_probs, 1, generator=generator)
    return order.gather(-1, choice.to(order.device))[:, 0]


def generate(model: VisionLLMv2, batch: Batch, max_new_tokens: int = 64, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None,
             image_features: torch.Tensor | None = None,
             logits_processor: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
             cache: DynamicCache | None = None, cached_tokens: int = 0, streamer: Any = None) -> list[Generation]:
    """Decode every sequence of a left-padded batch (``collate(..., padding_side="left")``).

    ``max_new_tokens`` counts the tokens the model chose; query slots come on top. Decoding stops at
    ``</s>``. ``logits_processor(step, logits)`` may reshape the ``(B, V)`` next-token logits (to
    constrain or script decoding). ``cache`` may hold the KV of the first ``cached_tokens`` tokens of a
    single unpadded sequence (an earlier turn of the same conversation): only the rest is prefilled,
    and the cache is extended in place with everything fed. ``streamer`` (transformers'
    ``TextStreamer`` / ``TextIteratorStreamer``, or any object with ``put`` and ``end``; one sequence
    only) gets the prompt's ids, then each step's new ids as they are chosen — a routing token with
    its query slots, the closing ``</s>`` left out, so the text it decodes is the answer's ``text`` —
    and ``end()`` when decoding stops. Returns one :class:`Generation` per sequence, with the link
    states of every group.
    """
    check_decoding_options(max_new_tokens, do_sample, temperature, top_p)
    if streamer is not None and batch.input_ids.shape[0] != 1:
        raise InvalidInputError(f"generate: a streamer follows one sequence, got a batch of {batch.input_ids.shape[0]}")
    if bool((batch.attention_mask[:, -1] == 0).any()):
        raise InvalidInputError("generate: expected a left-padded batch (collate with padding_side='left')")
    device = model.device
    batch = batch.to(device)
    size = batch.input_ids.shape[0]
    embeds, _ = model.embed(batch, image_features)
    mask = batch.attention_mask
    lengths = mask.sum(1)  # (B,) real tokens so far = next position id
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    if cache is None:
        cache, cached_tokens = DynamicCache(), 0
    if cached_tokens and (size != 1 or cached_tokens >= embeds.shape[1] or cache.get_seq_length() != cached_tokens):
        raise InvalidInputError(
            f"generate: a prefix cache needs one unpadded sequence longer than its {cached_tokens} cached tokens "
            f"and a cache of exactly that length (got batch {size}, {embeds.shape[1]} tokens, cache {cache.get_seq_length()})"
        )
    out = model.llm.model(inputs_embeds=embeds[:, cached_tokens:], attention_mask=mask,
                          position_ids=positions[:, cached_tokens:], cache=cache, use_cache=True)
    logits = model.llm.lm_head(out.last_hidden_state[:, -1])  # (B, V)
    # Tokens only the processor may place (image/region slots, padding, query slots): never sampled.
    banned = torch.tensor([model.special_ids[t] for t in (T.PAD, T.IMAGE, T.IMAGE_PATCH, T.REGION, T.IMAGE_START,
                                                          T.IMAGE_END, *T.QUERY_TOKENS)], device=device)
    results = [Generation([], "", []) for _ in range(size)]
    finished = [False] * size
    if streamer is not None:
        streamer.put(batch.input_ids.cpu())  # the prompt first, as transformers' generate does (skip_prompt drops it)
    try:
        _decode_steps(model, results, finished, logits, embeds, mask, lengths, cache, banned, max_new_tokens,
                      do_sample, temperature, top_p, generator, logits_processor, streamer)
    finally:
        if streamer is not None:
            streamer.end()
    _fill_text_and_labels(model, results)
    return results


def _decode_steps(model: VisionLLMv2, results: list[Generation], finished: list[bool], logits: torch.Tensor,
                  embeds: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, cache: DynamicCache,
                  banned: torch.Tensor, max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
                  generator: torch.Generator | None, logits_processor: Callable | None, streamer: Any) -> None:
    """The decoding loop: each step chooses every unfinished sequence's next token and feeds it back."""
    size, device, eos = len(results), model.device, 2
    embedding = model.llm.get_input_embeddings()
    for step in range(max_new_tokens):
        logits = logits.index_fill(-1, banned.to(logits.device), float("-inf"))  # lm_head may sit on another GPU
        if logits_processor is not None:
            logits = logits_processor(step, logits)
        chosen = _next_tokens(logits, do_sample, temperature, top_p, generator).tolist()
        chunks: list[torch.Tensor] = []
        pending: list[tuple[int, str, int]] = []  # (row, route, query count)
        for row, token in enumerate(chosen):
            if finished[row]:
                chunks.append(embeds.new_zeros(0, embeds.shape[-1]))
                continue
            results[row].token_ids.append(token)
            pieces = [embedding(torch.tensor([token], device=device))]
            route = model.route_of_id.get(token)
            if route is not None:
                count = model.query_table(route).num_embeddings
                pieces.append(model.query_embeddings(route, count, pieces[0]))
                pending.append((row, route, count))
                results[row].routes.append(route)
                results[row].token_ids += [model.special_ids[q] for q in T.query_tokens(count)]
            chunks.append(torch.cat(pieces))
            finished[row] = token == eos
            if streamer is not None and token != eos:
                streamer.put(torch.tensor(results[row].token_ids[-(1 + (count if route is not None else 0)):]))
        width = max(len(c) for c in chunks)
        if width == 0:
            break
        chunk_embeds = embeds.new_zeros(size, width, embeds.shape[-1])
        chunk_mask = mask.new_zeros(size, width)
        for row, chunk in enumerate(chunks):
            chunk_embeds[row, : len(chunk)] = chunk
            chunk_mask[row, : len(chunk)] = 1
        mask = torch.cat([mask, chunk_mask], dim=1)
        positions = lengths[:, None] + torch.arange(width, device=device)[None]
        out = model.llm.model(inputs_embeds=chunk_embeds, attention_mask=mask, position_ids=positions,
                              cache=cache, use_cache=True)
        hidden = out.last_hidden_state  # (B, W, H)
        for row, route, count in pending:
            results[row].groups.append(GeneratedGroup(route, "", [], hidden[row, 1: 1 + count]))
        last = (chunk_mask.sum(1) - 1).clamp(min=0)
        logits = model.llm.lm_head(hidden[torch.arange(size, device=hidden.device), last.to(hidden.device)])
        lengths = lengths + chunk_mask.sum(1)
        if all(finished):
            break


def _fill_text_and_labels(model: VisionLLMv2, results: list[Generation]) -> None:
    from .visionllm import clean_label

    special = set(model.special_ids.values()) | {1, 2}
    for result in results:
        ids = result.token_ids
        route_positions = [i for i, t in enumerate(ids) if t in model.route_of_id]
        for group, position in zip(result.groups, route_positions):
            start = position
            while start > 0 and ids[start - 1] not in special:
                start -= 1
            group.label_ids = ids[start:position]
            if model.tokenizer is not None:
                group.label = clean_label(model.tokenizer.decode(group.label_ids))
        if model.tokenizer is not None:
            text_ids = ids[:-1] if ids and ids[-1] == 2 else ids
            result.text = model.tokenizer.decode(text_ids)
