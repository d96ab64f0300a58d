"""Grounding DINO behind ``[DET]`` / ``[GRD]`` / ``[SEG]``, its text encoder replaced by the super link.

Transformers' ``GroundingDinoModel`` does the work. What changes (and why):

- ``text_backbone`` (BERT) becomes :class:`LinkTextFeatures`, which returns the link embeddings:
  one 256-d "text token" per group, made by ``patch2query`` from the group's 4 query states.
  Every token is a phrase of its own (all ids are the "." delimiter), so groups do not mix in
  the text enhancer, and ``text_projection`` is the identity.
- As in the official model, Swin stages 2–4 (+ one stride-2 conv) feed the transformer and
  stage 1 feeds the Mask-DINO mask head (``lateral_convs``, ``output_convs``, ``mask_features``,
  per-layer ``mask_embed``), so masks come at 1/4 of the input.
- One box head and one mask head are shared by all decoder layers (the official checkpoint stores
  them under several aliases).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GroundingDinoConfig, GroundingDinoModel, SwinConfig
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoConvModel

from .. import tokens as T
from ..config import DetectionConfig
from ..errors import InvalidInputError, TooManyGroupsError
from ..images import load_image
from .base import DecoderOutput, LinkStates, TaskDecoder
from .layers import MLP, ConvNorm, contrastive_logits, sample_deformable_in_float32

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DELIMITER_ID = 1012  # BERT's "." — Grounding DINO's phrase separator
MAX_GROUPS = 256     # Grounding DINO's max_text_len


class LinkTextFeatures(nn.Module):
    """Stands in for BERT: returns the link features set on it for the current forward."""

    def __init__(self) -> None:
        super().__init__()
        self.features: torch.Tensor | None = None

    def forward(self, *args: Any, **kwargs: Any) -> BaseModelOutput:
        if self.features is None:
            raise RuntimeError("LinkTextFeatures: no link features were set for this forward")
        return BaseModelOutput(last_hidden_state=self.features)


class StageSplitBackbone(GroundingDinoConvModel):
    """Swin with out_indices 1–4: stages 2–4 go to the transformer, stage 1 is kept for the mask head."""

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor):
        features, positions = super().forward(pixel_values, pixel_mask)
        self.stage1 = features[0][0]  # (B, C1, H/4, W/4)
        return features[1:], positions[1:]


def grounding_dino_config(config: DetectionConfig) -> GroundingDinoConfig:
    swin = SwinConfig(
        embed_dim=config.swin_embed_dim, depths=list(config.swin_depths), num_heads=list(config.swin_heads),
        window_size=config.swin_window, out_features=["stage1", "stage2", "stage3", "stage4"],
        drop_path_rate=0.0,
    )
    # The BERT config only has to build; the module is replaced at once. Keep it minimal.
    text = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 1,
            "intermediate_size": 32, "vocab_size": 2}
    return GroundingDinoConfig(
        backbone_config=swin, text_config=text, use_timm_backbone=False, use_pretrained_backbone=False,
        num_queries=config.num_queries, d_model=config.d_model, num_feature_levels=config.num_feature_levels,
        encoder_layers=config.encoder_layers, decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.attention_heads, decoder_attention_heads=config.attention_heads,
        encoder_ffn_dim=config.encoder_ffn_dim, decoder_ffn_dim=config.decoder_ffn_dim,
        encoder_n_points=config.n_points, decoder_n_points=config.n_points, dropout=config.dropout,
        fusion_droppath=0.0, two_stage=True, embedding_init_target=True, decoder_bbox_embed_share=True,
        two_stage_bbox_embed_share=False, max_text_len=MAX_GROUPS, disable_custom_kernels=True,
    )


@dataclass
class DetectorInputs:
    """Images as the detector reads them: ``pixel_values`` ``(B, 3, H, W)`` padded to ×32,
    ``pixel_mask`` ``(B, H, W)`` 1 on real pixels, each image's ``resized`` (h, w) and ``original`` (w, h)."""

    pixel_values: torch.Tensor
    pixel_mask: torch.Tensor
    resized: list[tuple[int, int]]
    original: list[tuple[int, int]]


@dataclass
class DetectorRaw:
    """Per-layer outputs: ``logits`` ``(L, B, Q, G)``, ``boxes`` ``(L, B, Q, 4)`` cxcywh in [0, 1] of
    the resized image, ``masks`` ``(L, B, Q, H/4, W/4)`` logits or None; ``encoder_*``: the two-stage
    proposals ``(B, Q, G)`` / ``(B, Q, 4)``; ``group_mask`` ``(B, G)`` real groups."""

    logits: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor | None
    encoder_logits: torch.Tensor
    encoder_boxes: torch.Tensor
    group_mask: torch.Tensor


class DetectionDecoder(TaskDecoder):
    """``gdino``: Grounding DINO + mask head + ``patch2query`` link."""

    routes = (T.DET, T.GRD, T.SEG)

    def __init__(self, config: DetectionConfig, link_width: int) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.model = sample_deformable_in_float32(GroundingDinoModel(grounding_dino_config(config)))
        self.model.text_backbone = LinkTextFeatures()
        self.model.text_projection = nn.Identity()
        old = self.model.backbone
        self.model.backbone = StageSplitBackbone(old.conv_encoder, old.position_embedding)
        swin = self.model.backbone.conv_encoder.model
        swin.swin.layernorm = nn.Identity()  # computed by SwinModel, never used by the backbone's outputs
        channels = list(self.model.backbone.conv_encoder.intermediate_channel_sizes)  # stage 1..4
        projections = [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(32, d)) for c in channels[1:]]
        for _ in range(config.num_feature_levels - len(projections)):
            projections.append(nn.Sequential(nn.Conv2d(channels[-1], d, 3, stride=2, padding=1), nn.GroupNorm(32, d)))
        self.model.input_proj_vision = nn.ModuleList(projections)
        box_head = MLP(d, d, 4, 3)
        nn.init.zeros_(box_head.layers[-1].weight)
        nn.init.zeros_(box_head.layers[-1].bias)
        self.model.decoder.bbox_embed = nn.ModuleList([box_head] * config.decoder_layers)
        if config.mask_head:
            self.model.lateral_convs = nn.ModuleList([ConvNorm(channels[0], d, 1)])
            self.model.output_convs = nn.ModuleList([ConvNorm(d, d, 3, relu=True)])
            self.model.mask_features = nn.Conv2d(d, d, kernel_size=1)
            self.model.mask_embed = MLP(d, d, d, 3)
        self.bbox_embed = nn.ModuleList([box_head] * config.decoder_layers)
        if config.mask_head:
            mask_head = MLP(d, d, d, 3)
            self.mask_embed = nn.ModuleList([mask_head] * config.decoder_layers)
        self.patch2query = MLP(link_width, d, d, 3)
        if config.class_logit_bias is not None:
            self.class_logit_bias = nn.Parameter(torch.tensor(float(config.class_logit_bias)))

    # ------------------------------------------------------------------ inputs
    def input_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The ``(height, width)`` a picture of ``size`` (width, height) is resized to: its shorter side
        ``image_min_size``, its longer at most ``image_max_size``. Pictures of one input size batch
        with no padding between them, so their answers are the ones each gets alone."""
        cfg = self.config
        w, h = size
        scale = min(cfg.image_min_size / min(w, h), cfg.image_max_size / max(w, h))
        return max(1, round(h * scale)), max(1, round(w * scale))

    def preprocess(self, images: Sequence[Any]) -> DetectorInputs:
        """Resize to :meth:`input_size`, normalise, pad."""
        cfg = self.config
        tensors, resized, original = [], [], []
        for image in images:
            picture = load_image(image)
            w, h = picture.size
            nh, nw = self.input_size((w, h))
            array = np.asarray(picture.resize((nw, nh), resample=2), dtype=np.float32) / 255.0  # bilinear
            tensor = torch.from_numpy(array).permute(2, 0, 1)
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
            tensors.append((tensor - mean) / std)
            resized.append((nh, nw))
            original.append((w, h))
        div = cfg.size_divisor
        height = -(-max(t.shape[1] for t in tensors) // div) * div
        width = -(-max(t.shape[2] for t in tensors) // div) * div
        pixels = torch.zeros(len(tensors), 3, height, width)
        mask = torch.zeros(len(tensors), height, width, dtype=torch.long)
        for i, t in enumerate(tensors):
            pixels[i, :, : t.shape[1], : t.shape[2]] = t
            mask[i, : t.shape[1], : t.shape[2]] = 1
        return DetectorInputs(pixels, mask, resized, original)

    def class_embeddings(self, link: LinkStates) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Link states → per-image text tokens ``(B, G, d)``, their mask ``(B, G)``, and the image rows."""
        tokens = self.patch2query(link.states).mean(1)  # (groups, n, H) → (groups, d)
        rows = sorted(set(link.sample_index.tolist()))
        per_row = [(link.sample_index == r).nonzero().flatten() for r in rows]
        most = max(len(p) for p in per_row)
        if most > MAX_GROUPS:
            raise TooManyGroupsError(
                f"{most} classes/expressions in one image: Grounding DINO takes at most {MAX_GROUPS}; "
                f"split the request into chunks of {MAX_GROUPS} and merge the results"
            )
        text = tokens.new_zeros(len(rows), most, tokens.shape[-1])
        mask = torch.zeros(len(rows), most, dtype=torch.bool, device=tokens.device)
        for i, members in enumerate(per_row):
            text[i, : len(members)] = tokens[members]
            mask[i, : len(members)] = True
        return text, mask, rows

    # ------------------------------------------------------------------ network
    def class_logits(self, queries: torch.Tensor, text: torch.Tensor, group_mask: torch.Tensor) -> torch.Tensor:
        """Contrastive logits ``(B, Q, G)`` between object queries and group tokens."""
        logits = self._rescale(queries @ text.transpose(-1, -2))
        return logits.masked_fill(~group_mask[:, None, :], -1e4)  # finite: keeps focal loss NaN-free

    def _rescale(self, raw: torch.Tensor) -> torch.Tensor:
        bias = self.class_logit_bias if self.config.class_logit_bias is not None else None
        return contrastive_logits(raw, self.config.d_model, self.config.scaled_logits, bias)

    def run(self, inputs: DetectorInputs, text: torch.Tensor, group_mask: torch.Tensor) -> DetectorRaw:
        dtype = next(self.parameters()).dtype
        device = text.device
        self.model.text_backbone.features = text.to(dtype)
        try:
            out = self.model(
                pixel_values=inputs.pixel_values.to(device, dtype), pixel_mask=inputs.pixel_mask.to(device),
                input_ids=torch.full(group_mask.shape, DELIMITER_ID, device=device),
                attention_mask=group_mask.long(), return_dict=True,
            )
        finally:
            self.model.text_backbone.features = None
        hidden = out.intermediate_hidden_states  # (B, L, Q, d)
        text_states = out.encoder_last_hidden_state_text  # (B, G, d)
        logits, boxes = [], []
        for layer in range(hidden.shape[1]):
            reference = out.init_reference_points if layer == 0 else out.intermediate_reference_points[:, layer - 1]
            logits.append(self.class_logits(hidden[:, layer], text_states, group_mask))
            delta = self.bbox_embed[layer](hidden[:, layer])
            boxes.append((delta + torch.special.logit(reference, eps=1e-5)).sigmoid())
        masks = self._masks(hidden, out.encoder_last_hidden_state_vision) if self.config.mask_head else None
        # Two-stage proposals: the top-Q encoder positions by their best group score (DESIGN §7).
        groups = group_mask.shape[1]
        encoder_logits = self._rescale(out.enc_outputs_class[..., :groups]).masked_fill(~group_mask[:, None], -1e4)
        top = encoder_logits.max(-1).values.topk(self.config.num_queries, dim=1).indices  # (B, Q)
        encoder_logits = encoder_logits.gather(1, top[..., None].expand(-1, -1, groups))
        encoder_boxes = out.enc_outputs_coord_logits.gather(1, top[..., None].expand(-1, -1, 4)).sigmoid()
        return DetectorRaw(torch.stack(logits), torch.stack(boxes), masks, encoder_logits, encoder_boxes, group_mask)

    def _masks(self, hidden: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Mask-DINO: FPN on stage 1 + the encoder's finest level, dotted with per-query embeddings."""
        stage1 = self.model.backbone.stage1  # (B, C1, H/4, W/4)
        b, _, h4, w4 = stage1.shape
        h8, w8 = -(-h4 // 2), -(-w4 // 2)
        finest = memory[:, : h8 * w8].transpose(1, 2).reshape(b, -1, h8, w8)  # (B, d, H/8, W/8)
        fused = self.model.lateral_convs[0](stage1) + F.interpolate(finest, size=(h4, w4), mode="bilinear", align_corners=False)
        features = self.model.mask_features(self.model.output_convs[0](fused))  # (B, d, H/4, W/4)
        per_layer = [torch.einsum("bqc,bchw->bqhw", self.mask_embed[l](hidden[:, l]), features) for l in range(hidden.shape[1])]
        return torch.stack(per_layer)  # (L, B, Q, H/4, W/4)

    # ------------------------------------------------------------------ decoder interface
    def forward(self, link: LinkStates, images: Sequence[Any] | None = None,
                targets: Sequence[Any] | None = None, marks: Sequence[Any] | None = None) -> DecoderOutput:
        """Detect the groups of ``link`` in ``images`` (one per batch sample, indexed by sample).

        targets: one :class:`DetectionTarget` per batch sample (or None): boxes ``(N, 4)`` xyxy in
        original pixels, ``labels`` ``(N,)`` the group index within the sample, optional masks.
        marks: for interactive segmentation, per batch sample the visual prompts its groups answer,
        bool ``(G, h, w)`` in original pixels (or None): each group's best query is then the one that
        agrees with its mark (``config.mark_agreement``; :func:`~.detection_post.mark_coverage`).
        """
        from .detection_loss import detection_loss
        from .detection_post import postprocess

        if images is None:
            raise InvalidInputError("the detection decoder reads its own copy of each image: pass images")
        text, group_mask, rows = self.class_embeddings(link)
        inputs = self.preprocess([images[r] for r in rows])
        raw = self.run(inputs, text, group_mask)
        losses: dict[str, torch.Tensor] = {}
        loss = None
        if targets is not None:
            losses = detection_loss(raw, [targets[r] for r in rows], inputs, self.config)
            loss = sum(losses.values())
            if self.training:  # a training step reads the loss alone; predictions would cost the post-processing
                return DecoderOutput(loss=loss, losses=losses)
        with torch.no_grad():
            predictions = postprocess(raw, inputs, link, rows, self.config, marks)
        return DecoderOutput(loss=loss, losses=losses, predictions=predictions)
