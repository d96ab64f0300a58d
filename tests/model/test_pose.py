"""The pose decoder (UniPose behind [POSE]) on a tiny config: shapes, the object/keypoint split, link
gradients, OKS and matching on hand-made cases, the evaluator, overfitting stick figures, official keys."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from official_manifests import MANIFESTS
from pose_fixture import KEYPOINTS, stick_scene

from visionllm2.model import tokens as T
from visionllm2.model.batch import collate
from visionllm2.model.config import PoseConfig, VisionLLMv2Config
from visionllm2.model.convert import check_manifest, load_manifest, map_official_key
from visionllm2.model.decoders.base import LinkStates
from visionllm2.model.decoders.pose import PoseDecoder
from visionllm2.model.decoders.pose_eval import PoseEvaluator
from visionllm2.model.decoders.pose_loss import PoseTarget, keypoint_sigmas, match_instances, oks
from visionllm2.model.errors import InvalidInputError, TooManyGroupsError
from visionllm2.model.processor import ImageSlot, Message, Processor
from visionllm2.model.visionllm import VisionLLMv2


def pose_link(groups: list[tuple[int, int]], width: int = 64) -> LinkStates:
    """Per image (objects, keypoints) groups, in answer order: objects first."""
    labels, rows = [], []
    for row, (objects, keypoints) in enumerate(groups):
        labels += [f"class{i}" for i in range(objects)] + list(KEYPOINTS + ("tail",) * 70)[:keypoints]
        rows += [row] * (objects + keypoints)
    return LinkStates(torch.randn(len(rows), 4, width, requires_grad=True), [T.POSE] * len(rows), labels,
                      [[i] for i in range(len(rows))], torch.tensor(rows))


@pytest.fixture()
def decoder() -> PoseDecoder:
    torch.manual_seed(0)
    return PoseDecoder(PoseConfig.tiny(), link_width=64)


def test_raw_output_shapes_and_split(decoder):
    link = pose_link([(2, 7), (1, 5)])
    tokens = decoder.link_tokens(link, {0: 2})  # sample 1 uses the default: one object class
    assert tokens.text.shape == (2, 2 + 7, 64) and tokens.rows == [0, 1]
    assert tokens.object_valid.tolist() == [[True, True], [True, False]]
    assert tokens.keypoint_valid.sum(1).tolist() == [7, 5]
    assert tokens.object_labels == [["class0", "class1"], ["class0"]] and tokens.keypoint_names[1] == list(KEYPOINTS[:5])
    images = [np.zeros((100, 150, 3), np.uint8), np.zeros((120, 90, 3), np.uint8)]
    inputs = decoder.preprocess(images)
    raw = decoder.run(inputs, tokens)
    cfg = decoder.config
    lb, lk, q, n = cfg.box_decoder_layers, cfg.decoder_layers - cfg.box_decoder_layers, cfg.num_queries, cfg.num_select
    assert raw.box_logits.shape == (lb, 2, q, 2) and raw.box_boxes.shape == (lb, 2, q, 4)
    assert raw.logits.shape == (lk, 2, n, 2) and raw.boxes.shape == (lk, 2, n, 4)
    assert raw.keypoints.shape == (lk, 2, n, 7, 2) and raw.keypoint_logits.shape == (lk, 2, n, 7)
    assert raw.encoder_logits.shape == (2, q, 2) and raw.encoder_boxes.shape == (2, q, 4)
    assert bool((raw.logits[:, 1, :, 1] <= -1e3).all()) and bool((raw.keypoint_logits[:, 1, :, 5:] <= -1e3).all())
    assert bool(((raw.keypoints >= 0) & (raw.keypoints <= 1)).all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_decoder_runs_in_half_precision_with_every_deformable_layer_sampling_in_float32(decoder, dtype):
    # bfloat16 is what CUDA loads; in float16 a -1e9 mask once overflowed and raised.
    from visionllm2.model.decoders.layers import Float32DeformableSampling

    layers = [m for m in decoder.modules() if type(m).__name__ == "GroundingDinoMultiscaleDeformableAttention"]
    assert layers and all(isinstance(m.attn, Float32DeformableSampling) for m in layers)
    link = pose_link([(1, 7)])
    inputs = decoder.preprocess([np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)])
    with torch.no_grad():
        decoder.to(dtype)
        raw = decoder.run(inputs, decoder.link_tokens(dataclasses.replace(link, states=link.states.detach().to(dtype)), {}))
    for name in ("box_boxes", "boxes", "keypoints", "encoder_boxes"):
        assert getattr(raw, name).dtype == dtype and bool(torch.isfinite(getattr(raw, name)).all()), name


def test_predictions_are_in_original_pixels(decoder):
    decoder.config.score_threshold = 0.0
    out = decoder(pose_link([(1, 7)]), [np.zeros((100, 150, 3), np.uint8)])
    prediction = out.predictions[0]
    assert out.loss is None and prediction.image_size == (150, 100)
    assert prediction.keypoints.shape == (decoder.config.num_select, 7, 3)
    assert prediction.labels == ["class0"] and prediction.keypoint_names == list(KEYPOINTS)
    assert bool((prediction.keypoints[..., 0] <= 150).all() and (prediction.keypoints[..., 1] <= 100).all())
    assert bool((prediction.boxes[:, 2] <= 150).all()) and prediction.classes.max() == 0
    decoder.config.score_threshold = 1.01
    empty = decoder(pose_link([(1, 7)]), [np.zeros((100, 150, 3), np.uint8)]).predictions[0]
    assert empty.boxes.shape == (0, 4) and empty.keypoints.shape == (0, 7, 3)


def test_a_repeated_figure_keeps_half_its_score_and_its_own_keypoints():
    from types import SimpleNamespace

    from visionllm2.model.decoders.detection import DetectorInputs
    from visionllm2.model.decoders.pose_post import postprocess

    # Three instances on a 100² picture: #1 repeats #0 (the same box, nudged), #2 is elsewhere.
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.4], [0.31, 0.3, 0.2, 0.4], [0.8, 0.7, 0.2, 0.2]])  # cxcywh in [0, 1]
    logits = torch.logit(torch.tensor([0.9, 0.8, 0.7]))[:, None]  # (N, 1 class)
    keypoints = torch.rand(3, 2, 2)  # (N, J, xy)
    raw = SimpleNamespace(logits=logits[None, None], boxes=boxes[None, None], keypoints=keypoints[None, None],
                          keypoint_logits=torch.zeros(1, 1, 3, 2))
    tokens = SimpleNamespace(rows=[0], object_labels=[["person"]], keypoint_names=[["head", "hip"]])
    inputs = DetectorInputs(torch.zeros(1, 3, 100, 100), torch.ones(1, 100, 100), [(100, 100)], [(100, 100)])
    config = PoseConfig.tiny()
    config.score_threshold = 0.0
    plain = postprocess(raw, inputs, tokens, config)[0]
    config.duplicate_decay = 0.5
    softened = postprocess(raw, inputs, tokens, config)[0]
    assert plain.scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert softened.scores.tolist() == pytest.approx([0.9, 0.7, 0.4])  # the repeat falls below the other figure
    assert torch.allclose(softened.keypoints[:, :, :2], keypoints[[0, 2, 1]] * 100)  # each keeps its own keypoints
    assert torch.equal(softened.boxes, plain.boxes[[0, 2, 1]])


def test_split_errors_are_typed(decoder):
    with pytest.raises(InvalidInputError, match="at least one object class"):
        decoder.link_tokens(pose_link([(1, 0)]))
    with pytest.raises(InvalidInputError, match="at least one object class"):
        decoder.link_tokens(pose_link([(2, 1)]), {0: 3})
    with pytest.raises(TooManyGroupsError, match="at most 68"):
        decoder.link_tokens(pose_link([(1, 69)]))
    with pytest.raises(InvalidInputError, match="pass images"):
        decoder(pose_link([(1, 3)]))
    assert decoder.link_tokens(pose_link([(1, 68)])).keypoint_valid.shape == (1, 68)


def test_oks_and_sigmas_on_hand_made_cases():
    truth = torch.tensor([[[0.5, 0.5], [0.6, 0.5]]])  # (1, J=2, 2)
    visible = torch.tensor([[True, True]])
    area, sigmas = torch.tensor([0.04]), torch.tensor([0.05, 0.05])
    assert oks(truth, truth, visible, area, sigmas, (100, 100)).item() == pytest.approx(1.0)
    # COCO: e = d² / (2 · area · (2σ)²); d = 1 px, area = 400 px², σ = 0.05 → exp(-1/8) for one keypoint.
    shifted = truth + torch.tensor([[[0.01, 0.0], [0.0, 0.0]]])
    assert oks(shifted, truth, visible, area, sigmas, (100, 100)).item() == pytest.approx((np.exp(-1 / 8) + 1) / 2, rel=1e-4)
    hidden = torch.tensor([[False, True]])  # unlabelled keypoints do not count
    assert oks(shifted, truth, hidden, area, sigmas, (100, 100)).item() == pytest.approx(1.0)
    assert keypoint_sigmas(["nose", "left eye"]).tolist() == pytest.approx([0.026, 0.025])
    assert keypoint_sigmas(["head", "nose"]).tolist() == pytest.approx([0.05, 0.05])


def test_matcher_pairs_instances_by_keypoints():
    """Two instances with the same box: only the keypoints tell them apart."""
    cfg = PoseConfig.tiny()
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]])
    keypoints = torch.tensor([[[0.4, 0.4], [0.6, 0.6]], [[0.6, 0.4], [0.4, 0.6]]])
    target = {"class_labels": torch.tensor([0, 0]), "boxes": boxes, "keypoints": keypoints.flip(0),
              "visible": torch.ones(2, 2, dtype=torch.bool)}
    rows, cols = match_instances(torch.zeros(2, 1), boxes, keypoints, target, torch.full((2,), 0.05), (100, 100), cfg)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 1: 0}


def test_losses_prefer_a_perfect_prediction(decoder):
    image, boxes, keypoints = stick_scene(0)
    link = pose_link([(1, 7)])
    target = PoseTarget(1, boxes, np.zeros(len(boxes)), keypoints)
    out = decoder(link, [image], [target])
    assert set(out.losses) >= {"pose1_keypoints", "pose2_oks", "box0_giou", "encoder_class", "pose2_visibility"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    with pytest.raises(InvalidInputError, match="expected \\(N, 7, 3\\)"):
        decoder(link, [image], [PoseTarget(1, boxes, np.zeros(len(boxes)), keypoints[:, :3])])
    only_split = decoder(link, [image], [PoseTarget(num_objects=1)])
    assert only_split.loss is None and len(only_split.predictions) == 1
    was_training = decoder.training
    try:  # a training step returns the loss alone: its predictions were post-processed and dropped
        assert decoder.eval()(link, [image], [target]).predictions is not None
        trained = decoder.train()(link, [image], [target])
        assert torch.isfinite(trained.loss) and trained.predictions is None
    finally:
        decoder.train(was_training)


def test_evaluator_scores_perfect_and_shifted_poses():
    _, boxes, keypoints = stick_scene(3)
    labels = ["person"] * len(boxes)
    scored = np.concatenate([keypoints[..., :2], np.ones_like(keypoints[..., :1])], -1)
    perfect = PoseEvaluator(KEYPOINTS)
    perfect.add((128, 128), boxes, keypoints, labels, boxes, scored, np.ones(len(boxes)), labels)
    assert perfect.compute()["keypoints_AP"] == pytest.approx(1.0)
    shifted = PoseEvaluator(KEYPOINTS)
    shifted.add((128, 128), boxes, keypoints, labels, boxes, scored + np.array([6.0, 6.0, 0.0]), np.ones(len(boxes)), labels)
    assert shifted.compute()["keypoints_AP"] < 0.9
    nothing = PoseEvaluator(KEYPOINTS)
    nothing.add((128, 128), boxes, keypoints, labels, np.zeros((0, 4)), np.zeros((0, 7, 3)), np.zeros(0), [])
    assert nothing.compute()["keypoints_AP50"] == 0.0
    coco = PoseEvaluator(["nose", "left_eye"])
    assert coco.sigmas.tolist() == pytest.approx([0.026, 0.025])


# ---------------------------------------------------------------------------------- end to end
def stick_training_set(count: int, processor: Processor):
    chats, targets, images, scenes = [], [], [], []
    question = ("\nCan you analyze the image and identify the person present? Can you examine the image and "
                f"pinpoint the keypoint locations of the {', '.join(KEYPOINTS)}?")
    for seed in range(count):
        image, boxes, keypoints = stick_scene(seed)
        answer = ["Yes, here are the results for ", *processor.route_segments(T.POSE, "person")]
        for name in KEYPOINTS:
            answer += [", ", *processor.route_segments(T.POSE, name)]
        answer.append(".")
        chats.append(processor.build([Message("user", [ImageSlot(0), question]), Message("assistant", answer)], [image]))
        targets.append(PoseTarget(1, boxes, np.zeros(len(boxes), dtype=np.int64), keypoints))
        images.append(image)
        scenes.append((boxes, keypoints))
    return chats, targets, images, scenes


def tiny_pose_model(tokenizer):
    torch.manual_seed(0)
    config = VisionLLMv2Config.preset("tiny")
    decoders = {"unipose": PoseDecoder(PoseConfig.tiny(), config.llm.hidden_size)}
    return VisionLLMv2.from_config(config, decoders, tokenizer), config


def test_link_gradients_reach_the_llm_through_both_projections(tokenizer):
    model, config = tiny_pose_model(tokenizer)
    chats, targets, images, _ = stick_training_set(2, Processor(config, tokenizer))
    out = model(collate(chats, tokenizer.pad_id), images, {"unipose": targets})
    link = out.link["unipose"]
    assert link.labels[:3] == ["person", "head", "neck"] and len(link) == 2 * (1 + len(KEYPOINTS))
    out.decoder_outputs["unipose"].loss.backward()
    for name, parameter in [("projection_llava", model.unipose.projection_llava.layers[0].weight),
                            ("projection_kpt_llava", model.unipose.projection_kpt_llava.layers[0].weight),
                            ("query table", model.emb_embeddings_pose.weight),
                            ("llm", model.llm.model.layers[0].mlp.up_proj.weight),
                            ("vl_bridge", model.vl_bridge[2].weight)]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def overfit(tokenizer, images_count: int, steps: int, lr: float = 1e-3):
    model, config = tiny_pose_model(tokenizer)
    chats, targets, images, scenes = stick_training_set(images_count, Processor(config, tokenizer))
    batch = collate(chats, tokenizer.pad_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        out = model(batch, images, {"unipose": targets})
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(out.decoder_outputs["unipose"].loss.item())
    model.eval()
    with torch.no_grad():
        predictions = model(batch, images).decoder_outputs["unipose"].predictions
    evaluator = PoseEvaluator(KEYPOINTS)
    for prediction, (boxes, keypoints) in zip(predictions, scenes):
        assert prediction.keypoint_names == list(KEYPOINTS)
        evaluator.add(prediction.image_size, boxes, keypoints, ["person"] * len(boxes), prediction.boxes.numpy(),
                      prediction.keypoints.numpy(), prediction.scores.numpy(),
                      [prediction.labels[c] for c in prediction.classes.tolist()])
    return losses, evaluator.compute()


def test_training_steps_lower_the_loss_fast_variant(tokenizer):
    losses, _ = overfit(tokenizer, images_count=2, steps=20)
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3])


@pytest.mark.slow
def test_tiny_end_to_end_model_overfits_stick_figures(tokenizer):
    losses, metrics = overfit(tokenizer, images_count=4, steps=400)  # ~2 min on one core: AP50 1.0
    assert losses[-1] < losses[0] / 5
    assert metrics["keypoints_AP50"] >= 0.9


# ---------------------------------------------------------------------------------- official keys
def test_unipose_rename_rules():
    assert map_official_key("unipose.backbone.0.norm2.weight") == ["unipose.backbone.hidden_states_norms.stage3.weight"]
    assert map_official_key("unipose.backbone.0.layers.1.blocks.0.norm1.bias") == [
        "unipose.backbone.swin.encoder.layers.1.blocks.0.layernorm_before.bias"]
    assert map_official_key("unipose.backbone.0.layers.0.blocks.1.attn.qkv.weight") == [
        f"unipose.backbone.swin.encoder.layers.0.blocks.1.attention.{p}_proj.weight" for p in "qkv"]
    assert map_official_key("unipose.transformer.tgt_embed.weight") == ["unipose.transformer.tgt_embed.weight"]


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_unipose_keys_map_completely(official, manifest):
    report = check_manifest(load_manifest(official / manifest), ("unipose",))
    assert report.ok, (report.missing[:5], report.unexpected[:5], report.mismatched[:5])
    assert report.official == report.mapped + report.dropped and report.dropped == 12
