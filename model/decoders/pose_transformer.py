"""UniPose's deformable transformer, in plain PyTorch, under the released checkpoint's module names.

- Encoder: per layer, image↔link-text bi-attention (``fusion_layers``), a text self-attention layer
  (``text_layers``) and a multi-scale deformable self-attention layer on the image (``layers``).
- Two-stage proposals: every encoder position proposes a box (``enc_output``, ``enc_out_bbox_embed``);
  the ``num_queries`` best by class score become the decoder's reference boxes.
- Decoder, box stage (layers ``< box_decoder_layers``): instance queries refine boxes. At its end the
  ``num_select`` best instances are kept and each gets one query per keypoint name, its content the
  keypoint's link feature, its reference a small box placed by ``pose_embed[-1]`` inside the instance.
- Decoder, keypoint stage: queries come in groups ``[instance, kpt_1 … kpt_J]``; a keypoint attends to
  its own group only, instances also to each other. Boxes refine with ``bbox_embed``, keypoint
  positions with ``pose_embed``, their sizes with ``pose_hw_embed`` (one head each, shared by layers).

Deformable attention is transformers' pure-PyTorch ``GroundingDinoMultiscaleDeformableAttention``
(same parameter names as the official ``MSDeformAttn``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.grounding_dino.modeling_grounding_dino import (
    GroundingDinoMultiscaleDeformableAttention,
)

from ..config import PoseConfig
from .layers import MLP, sample_deformable_in_float32

Classifier = Callable[[torch.Tensor], torch.Tensor]  # (B, N, d) query states → (B, N, C) class logits


def deformable_attention(d: int, heads: int, levels: int, points: int) -> GroundingDinoMultiscaleDeformableAttention:
    config = SimpleNamespace(d_model=d, num_feature_levels=levels, disable_custom_kernels=True)
    return sample_deformable_in_float32(GroundingDinoMultiscaleDeformableAttention(config, num_heads=heads, n_points=points))


def sine_embedding(boxes: torch.Tensor, d: int) -> torch.Tensor:
    """DINO's sine embedding of (cx, cy, w, h) in [0, 1]: ``(…, 4)`` → ``(…, 2d)``, ordered y, x, w, h."""
    half = d // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=boxes.device)
    dim_t = 10000 ** (2 * (dim_t // 2) / half)
    parts = []
    for index in (1, 0, 2, 3):
        angle = boxes[..., index, None].float() * 2 * math.pi / dim_t  # (…, half)
        parts.append(torch.stack([angle[..., 0::2].sin(), angle[..., 1::2].cos()], -1).flatten(-2))
    return torch.cat(parts, -1).to(boxes.dtype)


def sine_position(valid: torch.Tensor, d: int, temperature: float = 20.0) -> torch.Tensor:
    """Normalised sine position of each valid pixel: ``(B, H, W)`` bool → ``(B, d, H, W)`` (y then x)."""
    half = d // 2
    y = valid.cumsum(1, dtype=torch.float32)
    x = valid.cumsum(2, dtype=torch.float32)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = torch.arange(half, dtype=torch.float32, device=valid.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    pos = []
    for coord in (y, x):
        angle = coord[..., None] / dim_t  # (B, H, W, half)
        pos.append(torch.stack([angle[..., 0::2].sin(), angle[..., 1::2].cos()], -1).flatten(-2))
    return torch.cat(pos, -1).permute(0, 3, 1, 2)


@dataclass
class Memory:
    """The flattened multi-scale image: ``states`` ``(B, S, d)``, ``valid`` ``(B, S)``, level shapes."""

    states: torch.Tensor
    valid: torch.Tensor
    shapes: torch.Tensor          # (L, 2) h, w
    shapes_list: list[tuple[int, int]]
    level_start: torch.Tensor     # (L,)
    valid_ratios: torch.Tensor    # (B, L, 2) valid fraction of width, height


class DeformableEncoderLayer(nn.Module):
    def __init__(self, cfg: PoseConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = deformable_attention(d, cfg.attention_heads, cfg.num_feature_levels, cfg.n_points)
        self.norm1 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, cfg.ffn_dim)
        self.linear2 = nn.Linear(cfg.ffn_dim, d)
        self.norm2 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference: torch.Tensor, memory: Memory) -> torch.Tensor:
        attended, _ = self.self_attn(
            hidden_states=src, attention_mask=memory.valid, encoder_hidden_states=src, position_embeddings=pos,
            reference_points=reference, spatial_shapes=memory.shapes, spatial_shapes_list=memory.shapes_list,
            level_start_index=memory.level_start,
        )
        src = self.norm1(src + self.dropout(attended))
        return self.norm2(src + self.dropout(self.linear2(F.relu(self.linear1(src)))))


class TextLayer(nn.Module):
    """Self-attention over the link tokens. Each group is its own phrase (as in the detector), so a
    token attends to itself only; the layer still transforms every token."""

    def __init__(self, cfg: PoseConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = nn.MultiheadAttention(d, cfg.attention_heads // 2, dropout=cfg.dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, cfg.text_ffn_dim)
        self.linear2 = nn.Linear(cfg.text_ffn_dim, d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        tokens = text.shape[1]
        own_phrase_only = ~torch.eye(tokens, dtype=torch.bool, device=text.device)  # True = masked
        attended, _ = self.self_attn(text, text, text, attn_mask=own_phrase_only, need_weights=False)
        text = self.norm1(text + attended)
        return self.norm2(text + self.linear2(F.relu(self.linear1(text))))


class BiAttention(nn.Module):
    """Image ↔ text cross attention in both directions (Grounding DINO's fusion)."""

    def __init__(self, d: int, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.v_proj = nn.Linear(d, width)
        self.l_proj = nn.Linear(d, width)
        self.values_v_proj = nn.Linear(d, width)
        self.values_l_proj = nn.Linear(d, width)
        self.out_v_proj = nn.Linear(width, d)
        self.out_l_proj = nn.Linear(width, d)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)  # (B, h, N, dh)

    def forward(self, image: torch.Tensor, text: torch.Tensor, image_valid: torch.Tensor,
                text_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = self._split(self.v_proj(image)) * self.head_dim ** -0.5   # (B, h, S, dh)
        key = self._split(self.l_proj(text))                               # (B, h, T, dh)
        logits = (query @ key.transpose(-1, -2)).clamp(-5e4, 5e4)           # (B, h, S, T)
        to_image = logits.masked_fill(~text_valid[:, None, None, :], float("-inf")).softmax(-1)
        to_text = logits.transpose(-1, -2).masked_fill(~image_valid[:, None, None, :], float("-inf")).softmax(-1)
        image_out = (to_image @ self._split(self.values_l_proj(text))).transpose(1, 2).flatten(2)  # (B, S, width)
        text_out = (to_text @ self._split(self.values_v_proj(image))).transpose(1, 2).flatten(2)   # (B, T, width)
        return self.out_v_proj(image_out), self.out_l_proj(text_out)


class FusionLayer(nn.Module):
    def __init__(self, cfg: PoseConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.layer_norm_v = nn.LayerNorm(d)
        self.layer_norm_l = nn.LayerNorm(d)
        self.attn = BiAttention(d, cfg.fusion_dim, max(1, cfg.attention_heads // 2))
        self.gam_v = nn.Parameter(torch.full((d,), 1e-4))
        self.gam_l = nn.Parameter(torch.full((d,), 1e-4))

    def forward(self, image: torch.Tensor, text: torch.Tensor, image_valid: torch.Tensor,
                text_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d_image, d_text = self.attn(self.layer_norm_v(image), self.layer_norm_l(text), image_valid, text_valid)
        return image + self.gam_v * d_image, text + self.gam_l * d_text


class PoseEncoder(nn.Module):
    def __init__(self, cfg: PoseConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.text_layers = nn.ModuleList(TextLayer(cfg) for _ in range(cfg.encoder_layers))
        self.fusion_layers = nn.ModuleList(FusionLayer(cfg) for _ in range(cfg.encoder_layers))

    @staticmethod
    def reference_points(memory: Memory) -> torch.Tensor:
        """Each position's pixel centre, normalised by the valid size, per level: ``(B, S, L, 2)``."""
        points = []
        for level, (h, w) in enumerate(memory.shapes_list):
            ys, xs = torch.meshgrid(torch.arange(h, device=memory.states.device) + 0.5,
                                    torch.arange(w, device=memory.states.device) + 0.5, indexing="ij")
            ratio = memory.valid_ratios[:, level]  # (B, 2) w, h
            points.append(torch.stack([xs.reshape(1, -1) / (ratio[:, 0:1] * w), ys.reshape(1, -1) / (ratio[:, 1:2] * h)], -1))
        points = torch.cat(points, 1)  # (B, S, 2)
        return points[:, :, None] * memory.valid_ratios[:, None]

    def forward(self, memory: Memory, pos: torch.Tensor, text: torch.Tensor,
                text_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reference = self.reference_points(memory).to(memory.states.dtype)
        image = memory.states
        for fusion, text_layer, layer in zip(self.fusion_layers, self.text_layers, self.layers):
            image, text = fusion(image, text, memory.valid, text_valid)
            text = text_layer(text)
            image = layer(image, pos, reference, memory)
        return image, text


class PoseDecoderLayer(nn.Module):
    """Self-attention → link-text cross-attention → deformable image cross-attention → FFN."""

    def __init__(self, cfg: PoseConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.cross_attn = deformable_attention(d, cfg.attention_heads, cfg.num_feature_levels, cfg.n_points)
        self.norm1 = nn.LayerNorm(d)
        self.ca_text = nn.MultiheadAttention(d, cfg.attention_heads, dropout=cfg.dropout, batch_first=True)
        self.catext_norm = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, cfg.attention_heads, dropout=cfg.dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, cfg.ffn_dim)
        self.linear2 = nn.Linear(cfg.ffn_dim, d)
        self.norm3 = nn.LayerNorm(d)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, reference: torch.Tensor, memory: Memory,
                text: torch.Tensor, text_valid: torch.Tensor, self_mask: torch.Tensor | None,
                padding: torch.Tensor | None) -> torch.Tensor:
        q = tgt + query_pos
        attended, _ = self.self_attn(q, q, tgt, attn_mask=self_mask, key_padding_mask=padding, need_weights=False)
        tgt = self.norm2(tgt + attended)
        attended, _ = self.ca_text(tgt + query_pos, text, text, key_padding_mask=~text_valid, need_weights=False)
        tgt = self.catext_norm(tgt + attended)
        attended, _ = self.cross_attn(
            hidden_states=tgt, attention_mask=memory.valid, encoder_hidden_states=memory.states,
            position_embeddings=query_pos, reference_points=reference, spatial_shapes=memory.shapes,
            spatial_shapes_list=memory.shapes_list, level_start_index=memory.level_start,
        )
        tgt = self.norm1(tgt + attended)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


@dataclass
class DecoderStages:
    """Per-layer predictions. Box stage: ``box_states`` ``(Lb, B, Q, d)`` (normed), ``box_boxes``
    ``(Lb, B, Q, 4)``. Keypoint stage: ``instance_states`` ``(Lk, B, N, d)``, ``keypoint_states``
    ``(Lk, B, N, J, d)`` (normed), ``boxes`` ``(Lk, B, N, 4)``, ``keypoints`` ``(Lk, B, N, J, 2)``;
    all coordinates cxcywh / xy in [0, 1] of the image."""

    box_states: torch.Tensor
    box_boxes: torch.Tensor
    instance_states: torch.Tensor
    keypoint_states: torch.Tensor
    boxes: torch.Tensor
    keypoints: torch.Tensor


class PoseTransformerDecoder(nn.Module):
    def __init__(self, cfg: PoseConfig) -> None:
        super().__init__()
        d = cfg.d_model
        if cfg.max_keypoints < 17:
            raise ValueError("PoseConfig.max_keypoints: at least 17 (the checkpoint's 17 + 51 size priors)")
        if not 0 < cfg.box_decoder_layers < cfg.decoder_layers:
            raise ValueError("PoseConfig.box_decoder_layers: expected between 1 and decoder_layers - 1")
        self.box_layers = cfg.box_decoder_layers
        self.layers = nn.ModuleList(PoseDecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.ref_point_head = MLP(2 * d, d, d, 2)
        box_head, pose_head, pose_hw_head = MLP(d, d, 4, 3), MLP(d, d, 2, 3), MLP(d, d, 2, 3)
        for head in (box_head, pose_head, pose_hw_head):
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
        keypoint_layers = cfg.decoder_layers - cfg.box_decoder_layers
        self.bbox_embed = nn.ModuleList([box_head] * cfg.decoder_layers)
        self.pose_embed = nn.ModuleList([pose_head] * (keypoint_layers + 1))  # the last one places new keypoints
        self.pose_hw_embed = nn.ModuleList([pose_hw_head] * keypoint_layers)
        self.hw = nn.Embedding(17, 2)                          # keypoint box size / instance size, logits
        self.hw_append = nn.Embedding(cfg.max_keypoints - 17, 2)

    def keypoint_sizes(self, count: int) -> torch.Tensor:
        return torch.cat([self.hw.weight, self.hw_append.weight])[:count]  # (J, 2)

    @staticmethod
    def group_mask(instances: int, keypoints: int, device: torch.device) -> torch.Tensor:
        """``(N(1+J), N(1+J))`` True where attention is blocked: across groups, except instance ↔ instance."""
        size = 1 + keypoints
        group = torch.arange(instances * size, device=device) // size
        is_instance = torch.arange(instances * size, device=device) % size == 0
        allowed = (group[:, None] == group[None, :]) | (is_instance[:, None] & is_instance[None, :])
        return ~allowed

    def forward(self, tgt: torch.Tensor, reference: torch.Tensor, memory: Memory, text: torch.Tensor,
                text_valid: torch.Tensor, keypoint_text: torch.Tensor, keypoint_valid: torch.Tensor,
                classify: Classifier, num_select: int) -> DecoderStages:
        """tgt ``(B, Q, d)``, reference ``(B, Q, 4)`` in [0, 1]; keypoint_text ``(B, J, d)``."""
        b, _, d = tgt.shape
        j = keypoint_text.shape[1]
        logit = torch.special.logit
        scale = torch.cat([memory.valid_ratios, memory.valid_ratios], -1)[:, None]  # (B, 1, L, 4)
        box_states, box_boxes, instance_states, keypoint_states, boxes, keypoints = [], [], [], [], [], []
        self_mask = padding = None
        output, n = tgt, None
        for index, layer in enumerate(self.layers):
            reference_input = reference[:, :, None] * scale  # (B, Nq, L, 4)
            query_pos = self.ref_point_head(sine_embedding(reference_input[:, :, 0], d))  # (B, Nq, d)
            output = layer(output, query_pos, reference_input, memory, text, text_valid, self_mask, padding)
            normed = self.norm(output)
            if index < self.box_layers:
                new_reference = (self.bbox_embed[index](output) + logit(reference, eps=1e-5)).sigmoid()  # (B, Q, 4)
                box_states.append(normed)
                box_boxes.append(new_reference)
                if index == self.box_layers - 1:  # enter the keypoint stage
                    n = min(num_select, output.shape[1])
                    top = classify(normed).max(-1).values.topk(n, dim=1).indices  # (B, N)
                    instance = output.gather(1, top[..., None].expand(-1, -1, d))            # (B, N, d)
                    instance_ref = new_reference.detach().gather(1, top[..., None].expand(-1, -1, 4))  # (B, N, 4)
                    content = keypoint_text[:, None].expand(-1, n, -1, -1)                # (B, N, J, d)
                    xy = (logit(instance_ref[:, :, None, :2], eps=1e-5) + self.pose_embed[-1](content)).sigmoid()
                    wh = self.keypoint_sizes(j).sigmoid() * instance_ref[:, :, None, 2:]  # (B, N, J, 2)
                    output = torch.cat([instance[:, :, None], content], 2).flatten(1, 2)  # (B, N(1+J), d)
                    new_reference = torch.cat([instance_ref[:, :, None], torch.cat([xy, wh], -1)], 2).flatten(1, 2)
                    self_mask = self.group_mask(n, j, output.device)
                    padding = torch.cat([keypoint_valid.new_zeros(b, 1), ~keypoint_valid], 1).repeat(1, n)  # (B, N(1+J))
            else:
                k = index - self.box_layers
                grouped = output.view(b, n, 1 + j, d)
                grouped_ref = logit(reference.view(b, n, 1 + j, 4), eps=1e-5)
                box = (self.bbox_embed[index](grouped[:, :, 0]) + grouped_ref[:, :, 0]).sigmoid()  # (B, N, 4)
                points = grouped[:, :, 1:]
                delta = torch.cat([self.pose_embed[k](points), self.pose_hw_embed[k](points)], -1)  # (B, N, J, 4)
                kpt = (grouped_ref[:, :, 1:] + delta).sigmoid()  # (B, N, J, 4)
                new_reference = torch.cat([box[:, :, None], kpt], 2).flatten(1, 2)
                normed = normed.view(b, n, 1 + j, d)
                instance_states.append(normed[:, :, 0])
                keypoint_states.append(normed[:, :, 1:])
                boxes.append(box)
                keypoints.append(kpt[..., :2])
            reference = new_reference.detach()
        return DecoderStages(torch.stack(box_states), torch.stack(box_boxes), torch.stack(instance_states),
                             torch.stack(keypoint_states), torch.stack(boxes), torch.stack(keypoints))


class PoseTransformer(nn.Module):
    """``unipose.transformer``: encoder, two-stage proposals, two-stage decoder."""

    def __init__(self, cfg: PoseConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.config = cfg
        self.level_embed = nn.Parameter(torch.randn(cfg.num_feature_levels, d) * 0.02)
        self.encoder = PoseEncoder(cfg)
        self.decoder = PoseTransformerDecoder(cfg)
        self.tgt_embed = nn.Embedding(cfg.num_queries, d)
        self.enc_output = nn.Linear(d, d)
        self.enc_output_norm = nn.LayerNorm(d)
        self.enc_out_bbox_embed = MLP(d, d, 4, 3)

    @staticmethod
    def flatten(features: list[torch.Tensor], valid: list[torch.Tensor], positions: list[torch.Tensor],
                level_embed: torch.Tensor) -> tuple[Memory, torch.Tensor]:
        """Levels ``(B, d, H_l, W_l)`` → one sequence; position + level embedding ``(B, S, d)``."""
        states, masks, pos, shapes = [], [], [], []
        for level, (feature, mask, position) in enumerate(zip(features, valid, positions)):
            shapes.append(tuple(feature.shape[-2:]))
            states.append(feature.flatten(2).transpose(1, 2))
            masks.append(mask.flatten(1))
            pos.append(position.flatten(2).transpose(1, 2) + level_embed[level])
        device = features[0].device
        shape_tensor = torch.tensor(shapes, dtype=torch.long, device=device)
        starts = torch.cat([shape_tensor.new_zeros(1), shape_tensor.prod(1).cumsum(0)[:-1]])
        ratios = torch.stack([torch.stack([m[:, 0, :].sum(1) / m.shape[2], m[:, :, 0].sum(1) / m.shape[1]], -1)
                              for m in valid], 1).to(features[0].dtype)  # (B, L, 2) w, h
        memory = Memory(torch.cat(states, 1), torch.cat(masks, 1), shape_tensor, shapes, starts, ratios)
        return memory, torch.cat(pos, 1)

    def proposals(self, memory: Memory, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder states → proposal features ``(B, S, d)``, box logits ``(B, S, 4)``, usable ``(B, S)``."""
        b = states.shape[0]
        anchors, start = [], 0
        for level, (h, w) in enumerate(memory.shapes_list):
            valid = memory.valid[:, start: start + h * w].view(b, h, w)
            start += h * w
            size = torch.stack([valid[:, 0, :].sum(1), valid[:, :, 0].sum(1)], -1).clamp(min=1)  # (B, 2) w, h
            ys, xs = torch.meshgrid(torch.arange(h, device=states.device) + 0.5,
                                    torch.arange(w, device=states.device) + 0.5, indexing="ij")
            xy = torch.stack([xs, ys], -1).view(1, -1, 2) / size[:, None]  # (B, hw, 2)
            anchors.append(torch.cat([xy, torch.full_like(xy, 0.05 * 2 ** level)], -1))
        anchors = torch.cat(anchors, 1)  # (B, S, 4)
        usable = ((anchors > 0.01) & (anchors < 0.99)).all(-1) & memory.valid
        anchors = torch.special.logit(anchors.clamp(0.01, 0.99)).to(states.dtype).masked_fill(~usable[..., None], 0.0)
        features = self.enc_output_norm(self.enc_output(states.masked_fill(~usable[..., None], 0.0)))
        return features, self.enc_out_bbox_embed(features) + anchors, usable

    def forward(self, features: list[torch.Tensor], valid: list[torch.Tensor], positions: list[torch.Tensor],
                text: torch.Tensor, text_valid: torch.Tensor, objects: int, keypoint_valid: torch.Tensor,
                classify_with: Callable[[torch.Tensor, torch.Tensor], Classifier]):
        """text ``(B, C + J, d)``: object tokens then keypoint tokens (``objects`` = C); returns the
        decoder stages, encoder proposal states / boxes ``(B, Q, d)`` / ``(B, Q, 4)`` and the encoded text."""
        memory, pos = self.flatten(features, valid, positions, self.level_embed)
        memory.states, text = self.encoder(memory, pos, text, text_valid)
        object_text, keypoint_text = text[:, :objects], text[:, objects:]
        classify = classify_with(object_text, text_valid[:, :objects])
        proposal_states, proposal_boxes, usable = self.proposals(memory, memory.states)
        scores = classify(proposal_states).max(-1).values  # (B, S)
        scores = scores.masked_fill(~usable, torch.finfo(scores.dtype).min)  # last; -1e9 overflows float16
        q = min(self.config.num_queries, scores.shape[1])
        top = scores.topk(q, dim=1).indices  # (B, Q)
        d = text.shape[-1]
        encoder_states = proposal_states.gather(1, top[..., None].expand(-1, -1, d))
        encoder_boxes = proposal_boxes.gather(1, top[..., None].expand(-1, -1, 4)).sigmoid()  # (B, Q, 4)
        tgt = self.tgt_embed.weight[None, :q].expand(len(top), -1, -1)
        stages = self.decoder(tgt, encoder_boxes.detach(), memory, text, text_valid, keypoint_text, keypoint_valid,
                              classify, self.config.num_select)
        return stages, encoder_states, encoder_boxes, text
