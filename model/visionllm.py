"""``VisionLLMv2``: the composite model. Its attribute names are the released checkpoint's prefixes.

``vis_encoder`` (CLIP) → ``vl_bridge`` → ``<im_patch>`` embeddings; ``region_encoder`` → ``<region>``
embeddings; ``llm`` (Llama) reads the sequence; after each routing token its learned queries
(``emb_embeddings_{det,pose,gen,edit}``) fill the query slots, and the last hidden states there —
the *super link* — go to the decoder registered for that route (``gdino``, ``unipose``, ``sd``,
``ip2p``), whose losses join the LM loss so gradients reach everything upstream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import tokens as T
from .batch import Batch
from .config import VisionLLMv2Config
from .decoders.base import DecoderOutput, LinkStates, TaskDecoder
from .errors import CheckpointError, InvalidInputError, TooManyGroupsError
from .llm import build_llm, build_query_tables
from .processor import IGNORE_INDEX
from .region import RegionEncoder
from .tokenizer import Tokenizer
from .vision import build_bridge, build_vision_tower, patch_features, run_vision_tower


@dataclass
class Group:
    """One routing token in a sequence: batch row, its position, route and query count."""

    row: int
    position: int
    route: str
    count: int


ROTARY_BUFFERS = ("inv_freq", "original_inv_freq")  # kept float32 by VisionLLMv2._apply


@dataclass
class VisionLLMv2Output:
    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    logits: torch.Tensor                        # (B, T, V)
    link: dict[str, LinkStates]                 # decoder name → its groups
    decoder_outputs: dict[str, DecoderOutput] = field(default_factory=dict)


class VisionLLMv2(nn.Module):
    def __init__(self, config: VisionLLMv2Config, vis_encoder: nn.Module, vl_bridge: nn.Module,
                 region_encoder: RegionEncoder, llm: nn.Module, query_tables: Mapping[str, nn.Embedding],
                 decoders: Mapping[str, TaskDecoder] | None = None, tokenizer: Tokenizer | None = None) -> None:
        super().__init__()
        self.config = config
        self.vis_encoder = vis_encoder
        self.vl_bridge = vl_bridge
        self.region_encoder = region_encoder
        self.llm = llm
        self.emb_embeddings_det = query_tables["det"]
        self.emb_embeddings_pose = query_tables["pose"]
        self.emb_embeddings_gen = query_tables["gen"]
        self.emb_embeddings_edit = query_tables["edit"]
        self.tokenizer = tokenizer
        self.decoder_of_route: dict[str, str] = {}
        for name, decoder in (decoders or {}).items():
            self.add_module(name, decoder)
            for route in decoder.routes:
                if route in self.decoder_of_route:
                    raise CheckpointError(f"route {route} is served by both {self.decoder_of_route[route]} and {name}")
                self.decoder_of_route[route] = name
        # The 26 special tokens are always the last ids of the vocabulary, in DESIGN order.
        first = config.llm.vocab_size - len(T.SPECIAL_TOKENS)
        self.special_ids = {token: first + i for i, token in enumerate(T.SPECIAL_TOKENS)}
        self.route_of_id = {self.special_ids[route]: route for route in T.ROUTES}
        if tokenizer is not None and tokenizer.token_id(T.PAD) != first:
            raise CheckpointError(
                f"tokenizer puts {T.PAD} at id {tokenizer.token_id(T.PAD)}, the model expects {first} "
                f"(vocab_size {config.llm.vocab_size} − 26)"
            )

    @classmethod
    def from_config(cls, config: VisionLLMv2Config, decoders: Mapping[str, TaskDecoder] | None = None,
                    tokenizer: Tokenizer | None = None) -> VisionLLMv2:
        """Build every part with random weights (under accelerate's ``init_empty_weights`` to allocate nothing).

        ``decoders=None`` builds the decoders the config names (:func:`build_decoders`); pass a dict
        to supply your own, or ``{}`` for none.
        """
        if decoders is None:
            from .decoders import build_decoders

            decoders = build_decoders(config)
        width = config.llm.hidden_size
        return cls(
            config,
            vis_encoder=build_vision_tower(config.vision),
            vl_bridge=build_bridge(config.vision.hidden_size, width),
            region_encoder=RegionEncoder(config.region, config.vision.hidden_size, width),
            llm=build_llm(config.llm),
            query_tables=build_query_tables(config.link, width),
            decoders=decoders,
            tokenizer=tokenizer,
        )

    # ------------------------------------------------------------------ helpers
    def _apply(self, fn, recurse: bool = True):
        """``.to()``, ``.bfloat16()``, ``.cuda()`` … move everything but keep the LLM's rotary
        frequencies in float32, as transformers' own loading does: rounded to bfloat16 they drift
        by up to 2⁻⁹ each, a rotation off by over a radian at position 1,000 of a 7B prompt."""
        kept = {name: buffer for name, buffer in self.named_buffers() if name.rpartition(".")[2] in ROTARY_BUFFERS}
        super()._apply(fn, recurse)
        for name, buffer in kept.items():
            path, _, leaf = name.rpartition(".")
            module = self.get_submodule(path)
            module._buffers[leaf] = buffer.to(module._buffers[leaf].device)  # the new device, float32
        return self

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device, or, when an accelerate device map offloads
        it (its weight then lies on the meta device), the device its hook runs it on."""
        embedding = self.llm.get_input_embeddings()
        if embedding.weight.is_meta:
            for module in (embedding, self.llm.model, self.llm):
                hook = getattr(module, "_hf_hook", None)
                if getattr(hook, "execution_device", None) is not None:
                    return torch.device(hook.execution_device)
        return embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def decoders(self) -> dict[str, TaskDecoder]:
        names = set(self.decoder_of_route.values())
        return {name: getattr(self, name) for name in sorted(names)}

    def query_table(self, route: str) -> nn.Embedding:
        return getattr(self, f"emb_embeddings_{T.QUERY_TABLE_OF_ROUTE[route]}")

    def query_embeddings(self, route: str, count: int, like: torch.Tensor) -> torch.Tensor:
        """The first ``count`` rows of the route's query table ``(count, H)``, on ``like``'s device and
        dtype. Read by calling the table, not through ``.weight``: under an accelerate device map that
        offloads it, the weight is an empty meta tensor outside the call."""
        return self.query_table(route)(torch.arange(count, device=like.device)).to(like.device, like.dtype)

    # ------------------------------------------------------------------ embedding
    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Tiles ``(N, 3, S, S)`` → bridged patch features ``(N, P, H)`` and the tower's hidden states."""
        hidden_states = run_vision_tower(self.vis_encoder, pixel_values)
        features = self.vl_bridge(patch_features(hidden_states, self.config.vision.select_layer))
        return features, hidden_states

    def embed(self, batch: Batch, image_features: torch.Tensor | None = None) -> tuple[torch.Tensor, list[Group]]:
        """Input embeddings ``(B, T, H)`` with images, regions and queries in place, and the groups found.

        ``image_features`` may be passed pre-computed (``encode_images``) to encode an image once.
        """
        ids = batch.input_ids
        embeds = self.llm.get_input_embeddings()(ids)  # (B, T, H)
        patch_slots = ids == self.special_ids[T.IMAGE_PATCH]
        hidden_states = None
        if batch.pixel_values is not None and image_features is None:
            image_features, hidden_states = self.encode_images(batch.pixel_values)
        if image_features is not None:
            flat = image_features.reshape(-1, embeds.shape[-1]).to(embeds.device, embeds.dtype)
            if int(patch_slots.sum()) != flat.shape[0]:
                raise InvalidInputError(
                    f"image slots: the text holds {int(patch_slots.sum())} <im_patch> tokens, the images give {flat.shape[0]}"
                )
            embeds = embeds.masked_scatter(patch_slots[..., None], flat)
        elif bool(patch_slots.any()):
            raise InvalidInputError("image slots: the text holds <im_patch> tokens but no image was given")
        embeds = self._embed_regions(batch, embeds, hidden_states)
        groups = self.find_groups(ids)
        if groups:
            rows = torch.tensor([g.row for g in groups for _ in range(g.count)], device=ids.device)
            cols = torch.tensor([g.position + 1 + i for g in groups for i in range(g.count)], device=ids.device)
            values = torch.cat([self.query_embeddings(g.route, g.count, embeds) for g in groups])
            embeds = embeds.index_put((rows, cols), values)
        return embeds, groups

    def _embed_regions(self, batch: Batch, embeds: torch.Tensor, hidden_states: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
        region_slots = batch.input_ids == self.special_ids[T.REGION]
        count = 0 if batch.region_masks is None else batch.region_masks.shape[0]
        if int(region_slots.sum()) != count:
            raise InvalidInputError(f"visual prompts: the text holds {int(region_slots.sum())} <region> tokens, got {count} masks")
        if count == 0:
            return embeds
        thumbnail_of_image = torch.tensor(batch.tiles_per_image, device=embeds.device).cumsum(0) - 1
        tiles = thumbnail_of_image[batch.region_image]  # (R,) index of each region's thumbnail tile
        thumbnails = batch.pixel_values[tiles]
        if hidden_states is None:
            hidden_states = run_vision_tower(self.vis_encoder, thumbnails)
        else:
            hidden_states = tuple(h[tiles] for h in hidden_states)
        dtype = next(self.region_encoder.parameters()).dtype
        regions = self.region_encoder(thumbnails.to(dtype), batch.region_masks.to(dtype), hidden_states)  # (R, H)
        return embeds.masked_scatter(region_slots[..., None], regions.to(embeds.device, embeds.dtype))

    def find_groups(self, ids: torch.Tensor) -> list[Group]:
        """Every routing token followed by its full run of query slots, row by row."""
        ids = ids.cpu()  # read token by token: on a GPU each read would be a sync
        query_ids = {self.special_ids[q] for q in T.QUERY_TOKENS}
        groups = []
        for row, position in (torch.isin(ids, torch.tensor(list(self.route_of_id)))).nonzero().tolist():
            route = self.route_of_id[int(ids[row, position])]
            count = self.query_table(route).num_embeddings
            slots = ids[row, position + 1: position + 1 + count].tolist()
            if len(slots) == count and all(s in query_ids for s in slots):
                groups.append(Group(row, position, route, count))
        return groups

    # ------------------------------------------------------------------ link
    def gather_link(self, hidden: torch.Tensor, ids: torch.Tensor, groups: Sequence[Group],
                    answer_start: torch.Tensor) -> dict[str, LinkStates]:
        """Hidden states ``(B, T, H)`` at each group's query slots, grouped by the decoder they go to.

        Routes without a registered decoder are collected under the route's own name.
        """
        by_decoder: dict[str, list[Group]] = {}
        for group in groups:
            by_decoder.setdefault(self.decoder_of_route.get(group.route, group.route), []).append(group)
        link = {}
        if not by_decoder:
            return link
        host_ids, host_starts = ids.cpu(), answer_start.cpu()  # the labels are read token by token
        for name, members in by_decoder.items():
            if len(members) > self.config.link.max_groups * ids.shape[0]:
                raise TooManyGroupsError(
                    f"{len(members)} groups for {name}: at most {self.config.link.max_groups} per image; split the request"
                )
            states = torch.stack([hidden[g.row, g.position + 1: g.position + 1 + g.count] for g in members])
            label_ids = [self._label_ids(host_ids[g.row], g.position, int(host_starts[g.row])) for g in members]
            labels = [clean_label(self.tokenizer.decode(x)) if self.tokenizer else "" for x in label_ids]
            link[name] = LinkStates(
                states=states, routes=[g.route for g in members], labels=labels, label_ids=label_ids,
                sample_index=torch.tensor([g.row for g in members], device=hidden.device),
            )
        return link

    def _label_ids(self, row: torch.Tensor, position: int, stop: int) -> list[int]:
        """The words right before a routing token, back to the previous special token or ``stop``."""
        special = set(self.special_ids.values()) | {1, 2}
        start = position
        while start > stop and int(row[start - 1]) not in special:
            start -= 1
        return row[start:position].tolist()

    # ------------------------------------------------------------------ training forward
    def forward(self, batch: Batch, images: Sequence[Any] | None = None,
                targets: Mapping[str, Sequence[Any]] | None = None) -> VisionLLMv2Output:
        """Teacher-forced forward: LM loss (query slots ignored) + the decoders' losses.

        images: each sample's original image, for decoders that read their own copy.
        targets: decoder name → one target per sample; a decoder without targets only predicts.
        """
        hidden, link = self.hidden_and_link(batch)  # (B, T, H), decoder name → LinkStates
        logits = self.llm.lm_head(hidden)  # (B, T, V)
        lm_loss = None
        if batch.labels is not None:
            lm_loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), batch.labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        outputs = self.run_decoders(link, images, targets)
        losses = [x for x in [lm_loss, *(o.loss for o in outputs.values())] if x is not None]
        loss = torch.stack([x.float() for x in losses]).sum() if losses else None
        return VisionLLMv2Output(loss, lm_loss, logits, link, outputs)

    def hidden_and_link(self, batch: Batch) -> tuple[torch.Tensor, dict[str, LinkStates]]:
        """The LLM's last hidden states ``(B, T, H)`` over a teacher-forced batch, and its link states
        by decoder (what a decoder would receive), without running the decoders."""
        embeds, groups = self.embed(batch)
        hidden = self.llm.model(inputs_embeds=embeds, attention_mask=batch.attention_mask).last_hidden_state
        return hidden, self.gather_link(hidden, batch.input_ids, groups, batch.answer_start)

    def run_decoders(self, link: Mapping[str, LinkStates], images: Sequence[Any] | None = None,
                     targets: Mapping[str, Sequence[Any]] | None = None) -> dict[str, DecoderOutput]:
        """One batched forward of each decoder that has groups."""
        decoders = self.decoders()
        return {
            name: decoders[name](states, images, (targets or {}).get(name))
            for name, states in link.items() if name in decoders
        }

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str, max_shard_size: str = "2GB") -> None:
        """Write ``config.json``, ``tokenizer.json`` and safetensors weights to ``directory``."""
        from .checkpoint import save_pretrained

        save_pretrained(self, directory, max_shard_size)

    @classmethod
    def from_pretrained(cls, directory: str, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, device_map: Any = None,
                        offload_folder: str | None = None) -> VisionLLMv2:
        """Load a local model directory; see :func:`visionllm2.model.checkpoint.from_pretrained`."""
        from .checkpoint import from_pretrained

        return from_pretrained(directory, torch_dtype=torch_dtype, device=device, device_map=device_map,
                               offload_folder=offload_folder)

    @torch.no_grad()
    def generate(self, batch: Batch, **options: Any) -> list[Any]:
        """KV-cached decoding with super-link queries; see :func:`visionllm2.model.generation.generate`."""
        from .generation import generate

        return generate(self, batch, **options)


def clean_label(text: str) -> str:
    """``"Yes, here are the results for person"`` → ``"person"``: the last phrase before a route."""
    text = text.split(",")[-1].strip()
    for lead in (" for ", ":"):
        if lead in f" {text}":
            text = f" {text}".rsplit(lead, 1)[-1]
    return text.strip(" .:;")

