"""UniPose behind ``[POSE]``: instance boxes and named keypoints, conditioned by the super link.

A ``[POSE]`` answer names its groups in order: first the object classes, then the keypoint names,
e.g. ``person[POSE][EMB]…, nose[POSE][EMB]…, left_eye[POSE][EMB]…``. How many groups are object
classes: ``PoseTarget.num_objects`` of the sample when targets are given (training, or inference
with ``PoseTarget(num_objects=…)`` and no annotations), else ``PoseConfig.default_objects`` (1: one
class, then its keypoints — what the SDK's ``pose(classes, keypoints)`` builds for one class).

Object groups go through ``projection_llava``, keypoint groups through ``projection_kpt_llava``
(MLP hidden→d→d, 3 layers), each the mean over the group's 4 query states; the resulting tokens
play the part of UniPose's text prompts (classification is a dot product with them, keypoint
queries start from them). Up to ``max_keypoints`` (68) keypoints an instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SwinBackbone, SwinConfig

from .. import tokens as T
from ..config import PoseConfig
from ..errors import InvalidInputError, TooManyGroupsError
from .base import DecoderOutput, LinkStates, TaskDecoder
from .detection import DetectionDecoder, DetectorInputs
from .layers import MLP, contrastive_logits
from .pose_transformer import Classifier, DecoderStages, PoseTransformer, sine_position


@dataclass
class PoseLink:
    """The link tokens of the images in a batch, objects then keypoints, padded.

    text ``(B, C + J, d)``; ``object_valid`` ``(B, C)``; ``keypoint_valid`` ``(B, J)``;
    ``rows``: each image's batch sample; ``object_labels`` / ``keypoint_names`` per image.
    """

    text: torch.Tensor
    object_valid: torch.Tensor
    keypoint_valid: torch.Tensor
    rows: list[int]
    object_labels: list[list[str]]
    keypoint_names: list[list[str]]

    @property
    def objects(self) -> int:
        return self.object_valid.shape[1]

    @property
    def text_valid(self) -> torch.Tensor:
        return torch.cat([self.object_valid, self.keypoint_valid], 1)


@dataclass
class PoseRaw:
    """Network outputs, coordinates normalised to each image. Box stage: ``box_logits``
    ``(Lb, B, Q, C)``, ``box_boxes`` ``(Lb, B, Q, 4)`` cxcywh. Keypoint stage (N selected instances):
    ``logits`` ``(Lk, B, N, C)``, ``boxes`` ``(Lk, B, N, 4)``, ``keypoints`` ``(Lk, B, N, J, 2)`` xy,
    ``keypoint_logits`` ``(Lk, B, N, J)`` visibility. ``encoder_*``: two-stage proposals ``(B, Q, ·)``."""

    box_logits: torch.Tensor
    box_boxes: torch.Tensor
    logits: torch.Tensor
    boxes: torch.Tensor
    keypoints: torch.Tensor
    keypoint_logits: torch.Tensor
    encoder_logits: torch.Tensor
    encoder_boxes: torch.Tensor
    object_valid: torch.Tensor
    keypoint_valid: torch.Tensor


class PoseDecoder(TaskDecoder):
    """``unipose``: Swin-T + UniPose transformer + ``projection_llava`` / ``projection_kpt_llava`` links."""

    routes = (T.POSE,)
    # Same resize (shorter side image_min_size, longer ≤ image_max_size), ImageNet normalisation and ×32 padding.
    preprocess = DetectionDecoder.preprocess
    input_size = DetectionDecoder.input_size

    def __init__(self, config: PoseConfig, link_width: int) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        swin = SwinConfig(
            embed_dim=config.swin_embed_dim, depths=list(config.swin_depths), num_heads=list(config.swin_heads),
            window_size=config.swin_window, out_features=["stage2", "stage3", "stage4"], drop_path_rate=0.0,
        )
        # Registered first so that shared heads keep the checkpoint's names (transformer.decoder.*).
        self.transformer = PoseTransformer(config)
        self.backbone = SwinBackbone(swin)
        self.backbone.swin.layernorm = nn.Identity()  # computed by SwinModel, unused by the stage outputs
        channels = list(self.backbone.channels)  # stages 2–4
        projections = [nn.Sequential(nn.Conv2d(c, d, kernel_size=1), nn.GroupNorm(32, d)) for c in channels]
        for _ in range(config.num_feature_levels - len(projections)):
            projections.append(nn.Sequential(nn.Conv2d(channels[-1], d, 3, stride=2, padding=1), nn.GroupNorm(32, d)))
        self.input_proj = nn.ModuleList(projections)
        decoder = self.transformer.decoder
        self.bbox_embed = decoder.bbox_embed          # the checkpoint stores the shared heads twice
        self.pose_embed = decoder.pose_embed
        self.pose_hw_embed = decoder.pose_hw_embed
        self.projection_llava = MLP(link_width, d, d, 3)
        self.projection_kpt_llava = MLP(link_width, d, d, 3)
        if config.class_logit_bias is not None:
            self.class_logit_bias = nn.Parameter(torch.tensor(float(config.class_logit_bias)))

    # ------------------------------------------------------------------ link
    def link_tokens(self, link: LinkStates, objects_per_row: dict[int, int] | None = None) -> PoseLink:
        """Split each sample's groups into object classes and keypoint names; project and pad them."""
        objects_tokens = self.projection_llava(link.states).mean(1)  # (G, n, H) → (G, d)
        keypoint_tokens = self.projection_kpt_llava(link.states).mean(1)
        rows = sorted(set(link.sample_index.tolist()))
        split = []
        for row in rows:
            members = (link.sample_index == row).nonzero().flatten().tolist()
            count = (objects_per_row or {}).get(row, self.config.default_objects)
            if not 0 < count < len(members):
                raise InvalidInputError(
                    f"[POSE] sample {row}: {len(members)} groups but {count} object classes; a pose answer "
                    "needs at least one object class group followed by at least one keypoint-name group"
                )
            if len(members) - count > self.config.max_keypoints:
                raise TooManyGroupsError(
                    f"[POSE] sample {row}: {len(members) - count} keypoint names; UniPose takes at most "
                    f"{self.config.max_keypoints} per instance: split the keypoints over several requests"
                )
            split.append((members[:count], members[count:]))
        c = max(len(o) for o, _ in split)
        j = max(len(k) for _, k in split)
        text = objects_tokens.new_zeros(len(rows), c + j, objects_tokens.shape[-1])
        object_valid = torch.zeros(len(rows), c, dtype=torch.bool, device=text.device)
        keypoint_valid = torch.zeros(len(rows), j, dtype=torch.bool, device=text.device)
        for i, (objects, keypoints) in enumerate(split):
            text[i, : len(objects)] = objects_tokens[objects]
            text[i, c: c + len(keypoints)] = keypoint_tokens[keypoints]
            object_valid[i, : len(objects)] = True
            keypoint_valid[i, : len(keypoints)] = True
        return PoseLink(text, object_valid, keypoint_valid, rows,
                        [[link.labels[m] for m in o] for o, _ in split], [[link.labels[m] for m in k] for _, k in split])

    # ------------------------------------------------------------------ network
    def _rescale(self, raw: torch.Tensor) -> torch.Tensor:
        bias = self.class_logit_bias if self.config.class_logit_bias is not None else None
        return contrastive_logits(raw, self.config.d_model, self.config.scaled_logits, bias)

    def classifier(self, object_text: torch.Tensor, object_valid: torch.Tensor) -> Classifier:
        """Contrastive class logits: states ``(B, N, d)`` → ``(B, N, C)``, padded classes at -1e4."""
        def classify(states: torch.Tensor) -> torch.Tensor:
            logits = self._rescale(states @ object_text.transpose(-1, -2))
            return logits.masked_fill(~object_valid[:, None, :], -1e4)
        return classify

    def image_features(self, inputs: DetectorInputs, dtype: torch.dtype, device: torch.device):
        """Swin stages 2–4 + a stride-2 conv → per level ``(B, d, H_l, W_l)``, valid mask, sine position."""
        pixels = inputs.pixel_values.to(device, dtype)
        maps = list(self.backbone(pixels).feature_maps)
        features = [proj(m) for proj, m in zip(self.input_proj, maps)]
        for proj in self.input_proj[len(maps):]:
            features.append(proj(maps[-1] if len(features) == len(maps) else features[-1]))
        pixel_valid = inputs.pixel_mask.to(device)[:, None].float()
        valid = [F.interpolate(pixel_valid, size=f.shape[-2:]).to(torch.bool)[:, 0] for f in features]
        positions = [sine_position(v, self.config.d_model).to(dtype) for v in valid]
        return features, valid, positions

    def run(self, inputs: DetectorInputs, tokens: PoseLink) -> PoseRaw:
        dtype = next(self.parameters()).dtype
        features, valid, positions = self.image_features(inputs, dtype, tokens.text.device)
        stages, encoder_states, encoder_boxes, text = self.transformer(
            features, valid, positions, tokens.text.to(dtype), tokens.text_valid, tokens.objects,
            tokens.keypoint_valid, self.classifier,
        )
        object_text, keypoint_text = text[:, : tokens.objects], text[:, tokens.objects:]
        classify = self.classifier(object_text, tokens.object_valid)
        return self._heads(stages, classify, keypoint_text, encoder_states, encoder_boxes, tokens)

    def _heads(self, stages: DecoderStages, classify: Classifier, keypoint_text: torch.Tensor,
               encoder_states: torch.Tensor, encoder_boxes: torch.Tensor, tokens: PoseLink) -> PoseRaw:
        box_logits = torch.stack([classify(s) for s in stages.box_states])
        logits = torch.stack([classify(s) for s in stages.instance_states])
        # Keypoint visibility: each keypoint query against its own name's token.
        keypoint_logits = self._rescale((stages.keypoint_states * keypoint_text[None, :, None]).sum(-1))
        keypoint_logits = keypoint_logits.masked_fill(~tokens.keypoint_valid[None, :, None], -1e4)
        return PoseRaw(box_logits, stages.box_boxes, logits, stages.boxes, stages.keypoints, keypoint_logits,
                       classify(encoder_states), encoder_boxes, tokens.object_valid, tokens.keypoint_valid)

    # ------------------------------------------------------------------ decoder interface
    def forward(self, link: LinkStates, images: Sequence[Any] | None = None,
                targets: Sequence[Any] | None = None) -> DecoderOutput:
        """Find the instances and keypoints that ``link`` names in ``images`` (indexed by batch sample).

        targets: one :class:`~visionllm2.model.decoders.pose_loss.PoseTarget` per sample, or None.
        A target always gives the sample's object/keypoint split; with boxes, labels and keypoints
        it also gives the losses (every sample with groups must then be annotated).
        """
        from .pose_loss import PoseTarget, keypoint_sigmas, pose_loss
        from .pose_post import postprocess

        if images is None:
            raise InvalidInputError("the pose decoder reads its own copy of each image: pass images")
        if targets is not None and not all(t is None or isinstance(t, PoseTarget) for t in targets):
            raise InvalidInputError("pose targets: expected one PoseTarget (or None) per batch sample")
        counts = {r: t.num_objects for r, t in enumerate(targets or []) if t is not None}
        tokens = self.link_tokens(link, counts)
        inputs = self.preprocess([images[r] for r in tokens.rows])
        raw = self.run(inputs, tokens)
        losses: dict[str, torch.Tensor] = {}
        loss = None
        chosen = [targets[r] if targets is not None else None for r in tokens.rows]
        if any(t is not None and t.annotated for t in chosen):
            sigmas = [keypoint_sigmas(names) for names in tokens.keypoint_names]
            losses = pose_loss(raw, chosen, inputs, sigmas, self.config)
            loss = sum(losses.values())
            if self.training:  # a training step reads the loss alone; predictions would cost the post-processing
                return DecoderOutput(loss=loss, losses=losses)
        with torch.no_grad():
            predictions = postprocess(raw, inputs, tokens, self.config)
        return DecoderOutput(loss=loss, losses=losses, predictions=predictions)
