"""The detection decoder on a tiny config: shapes, link gradients, matching, post-processing, overfitting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from shapes_fixture import CLASSES, scene

from visionllm2.model import tokens as T
from visionllm2.model.batch import collate
from visionllm2.model.config import DetectionConfig, VisionLLMv2Config
from visionllm2.model.decoders import build_decoders
from visionllm2.model.decoders.base import LinkStates
from visionllm2.model.decoders.detection import DetectionDecoder
from visionllm2.model.decoders.detection_eval import CocoEvaluator
from visionllm2.model.decoders.detection_loss import DetectionTarget, detection_loss
from visionllm2.model.decoders.layers import Float32DeformableSampling
from visionllm2.model.errors import InvalidInputError, TooManyGroupsError
from visionllm2.model.processor import ImageSlot, Message, Processor
from visionllm2.model.visionllm import VisionLLMv2


def link_states(groups_per_image: list[int], width: int = 64) -> LinkStates:
    total = sum(groups_per_image)
    rows = [r for r, n in enumerate(groups_per_image) for _ in range(n)]
    return LinkStates(torch.randn(total, 4, width, requires_grad=True), [T.DET] * total,
                      [f"class{i}" for i in range(total)], [[i] for i in range(total)], torch.tensor(rows))


@pytest.fixture()
def decoder() -> DetectionDecoder:
    torch.manual_seed(0)
    return DetectionDecoder(DetectionConfig.tiny(), link_width=64)


def test_raw_output_shapes(decoder):
    images = [np.zeros((100, 150, 3), np.uint8), np.zeros((120, 90, 3), np.uint8)]
    link = link_states([3, 2])
    text, group_mask, rows = decoder.class_embeddings(link)
    assert text.shape == (2, 3, 64) and group_mask.tolist() == [[True] * 3, [True, True, False]] and rows == [0, 1]
    inputs = decoder.preprocess(images)
    assert inputs.pixel_values.shape[-2] % 32 == 0 and inputs.pixel_values.shape[-1] % 32 == 0
    assert inputs.resized == [(85, 128), (128, 96)] and inputs.original == [(150, 100), (90, 120)]
    raw = decoder.run(inputs, text, group_mask)
    q, layers = decoder.config.num_queries, decoder.config.decoder_layers
    assert raw.logits.shape == (layers, 2, q, 3) and raw.boxes.shape == (layers, 2, q, 4)
    assert raw.masks.shape[:3] == (layers, 2, q) and raw.masks.shape[-1] == inputs.pixel_values.shape[-1] // 4
    assert raw.encoder_logits.shape == (2, q, 3)
    assert bool((raw.logits[..., 1, :, 2] <= -1e3).all())  # the padded group never scores
    assert bool(((raw.boxes >= 0) & (raw.boxes <= 1)).all())


def test_deformable_sampling_is_transformers_in_float32_and_stays_finite_in_bfloat16():
    from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention

    torch.manual_seed(0)
    shapes = [(32, 32), (16, 16), (8, 8), (4, 4)]
    starts = torch.tensor([0, 1024, 1280, 1344])
    batch, heads, channels, queries, points = 2, 4, 16, 50, 4
    value = torch.randn(batch, 1360, heads, channels)
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2) * 1.2 - 0.1  # some outside the map
    weights = torch.rand(batch, queries, heads, len(shapes), points).softmax(-1)
    arguments = (torch.tensor(shapes), shapes, starts)
    theirs = MultiScaleDeformableAttention()(value, *arguments, locations, weights, 64)
    ours = Float32DeformableSampling()(value, *arguments, locations, weights, 64)
    assert ours.shape == (batch, queries, heads * channels) and torch.allclose(ours, theirs, atol=1e-6)
    half = Float32DeformableSampling()(value.bfloat16(), *arguments, locations.bfloat16(), weights.bfloat16(), 64)
    assert half.dtype == torch.bfloat16 and bool(torch.isfinite(half).all())
    assert (half.float() - theirs).abs().max() < 0.2  # only the inputs' rounding to bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_the_decoder_runs_in_half_precision_with_every_deformable_layer_sampling_in_float32(decoder, dtype):
    # torch's CPU grid_sample gives NaN for bfloat16 inputs with these layers' strides: every bfloat16
    # detection on CPU came back empty before the layers sampled in float32.
    layers = [m for m in decoder.modules() if type(m).__name__ == "GroundingDinoMultiscaleDeformableAttention"]
    assert layers and all(isinstance(m.attn, Float32DeformableSampling) for m in layers)
    link = link_states([3])
    inputs = decoder.preprocess([np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)])
    with torch.no_grad():
        full = decoder.run(inputs, *decoder.class_embeddings(link)[:2])
        decoder.to(dtype)
        text, group_mask, _ = decoder.class_embeddings(dataclasses.replace(link, states=link.states.detach().to(dtype)))
        half = decoder.run(inputs, text, group_mask)
    for name in ("logits", "boxes", "masks", "encoder_logits", "encoder_boxes"):
        assert bool(torch.isfinite(getattr(half, name)).all()), name
    # Near-tied proposals may come in another order: each box has a float32 twin, wherever it is.
    nearest = torch.cdist(half.boxes[-1, 0].float(), full.boxes[-1, 0], p=float("inf")).min(-1).values
    assert nearest.max() < 0.02


def test_predictions_are_in_original_pixels_and_explicitly_empty(decoder):
    link = link_states([2])
    decoder.config.score_threshold = 0.0
    out = decoder(link, [np.zeros((100, 150, 3), np.uint8)])
    prediction = out.predictions[0]
    assert out.loss is None and prediction.image_size == (150, 100)
    assert prediction.boxes.shape == (decoder.config.max_detections, 4) if decoder.config.num_queries * 2 >= 100 else True
    assert bool((prediction.boxes[:, 2] <= 150).all() and (prediction.boxes[:, 3] <= 100).all())
    assert prediction.masks.shape[1:] == (100, 150) and prediction.best_boxes.shape == (2, 4)
    decoder.config.score_threshold = 1.01
    empty = decoder(link, [np.zeros((100, 150, 3), np.uint8)]).predictions[0]
    assert len(empty.boxes) == 0 and empty.masks.shape == (0, 100, 150) and empty.labels == ["class0", "class1"]


def test_a_lower_mask_threshold_grows_every_mask_and_a_higher_one_shrinks_it(decoder):
    link, image = link_states([2]), [np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)]
    decoder.config.score_threshold = 0.0
    areas = {}
    for threshold in (-1.0, 0.0, 1.0):
        decoder.config.mask_threshold = threshold
        torch.manual_seed(0)
        areas[threshold] = decoder(link, image).predictions[0].masks.sum((1, 2))
    decoder.config.mask_threshold = 0.0
    assert bool((areas[-1.0] >= areas[0.0]).all() and (areas[0.0] >= areas[1.0]).all())
    assert areas[-1.0].sum() > areas[1.0].sum()


def test_a_training_step_returns_the_loss_alone_and_an_evaluation_both(decoder):
    # The post-processing (the soft-NMS's greedy loop among it) ran in every training step and its
    # predictions were dropped: 40 % of a stage-3 step's ops, each a kernel launch on a GPU.
    link, image = link_states([2]), [np.zeros((128, 128, 3), np.uint8)]
    target = [DetectionTarget(np.array([[32.0, 32.0, 96.0, 96.0]]), np.array([1]))]
    was_training = decoder.training
    try:
        trained = decoder.train()(link, image, target)
        assert torch.isfinite(trained.loss) and trained.predictions is None
        evaluated = decoder.eval()(link, image, target)
        assert torch.isfinite(evaluated.loss) and len(evaluated.predictions) == 1
    finally:
        decoder.train(was_training)


def test_too_many_groups_is_a_typed_error_that_says_how_to_split(decoder):
    with pytest.raises(TooManyGroupsError, match="split the request into chunks of 256"):
        decoder.class_embeddings(link_states([257]))
    with pytest.raises(InvalidInputError, match="pass images"):
        decoder(link_states([1]))


def test_matching_and_losses_on_a_hand_made_case(decoder):
    """A query that already sits on the target box with the right class scores far lower loss."""
    image = np.zeros((128, 128, 3), np.uint8)
    inputs = decoder.preprocess([image])
    target = DetectionTarget(np.array([[32.0, 32.0, 96.0, 96.0]]), np.array([1]))
    from visionllm2.model.decoders.detection import DetectorRaw

    def raw_with(box, logit):
        q = decoder.config.num_queries
        boxes = torch.full((1, 1, q, 4), 0.1)
        boxes[..., :2] = 0.05
        boxes[0, 0, 7] = torch.tensor(box)
        logits = torch.full((1, 1, q, 2), -8.0)
        logits[0, 0, 7, 1] = logit
        return DetectorRaw(logits, boxes, None, logits[0], boxes[0], torch.ones(1, 2, dtype=torch.bool))

    perfect = detection_loss(raw_with([0.5, 0.5, 0.5, 0.5], 8.0), [target], inputs, decoder.config)
    wrong = detection_loss(raw_with([0.2, 0.8, 0.2, 0.2], -8.0), [target], inputs, decoder.config)
    assert perfect["layer0_l1"].item() == pytest.approx(0.0, abs=1e-6)
    assert perfect["layer0_giou"].item() == pytest.approx(0.0, abs=1e-5)
    assert perfect["layer0_class"] < wrong["layer0_class"] and wrong["layer0_l1"] > 1.0
    with pytest.raises(InvalidInputError, match="label 5 but the image has 2 groups"):
        detection_loss(raw_with([0.5] * 4, 0.0), [DetectionTarget(np.array([[0, 0, 9, 9]]), np.array([5]))],
                       inputs, decoder.config)


def _two_candidates(decoder, with_masks: bool):
    """A 128² picture, one group, and two queries: #3 scores 0.9 on the left half, #5 scores 0.6 on
    the right half; every other query scores ~0."""
    from visionllm2.model.decoders.detection import DetectorRaw

    inputs = decoder.preprocess([np.zeros((128, 128, 3), np.uint8)])
    q, (h, w) = decoder.config.num_queries, inputs.pixel_values.shape[-2:]
    logits = torch.full((1, 1, q, 1), -9.0)
    logits[0, 0, 3, 0], logits[0, 0, 5, 0] = float(torch.logit(torch.tensor(0.9))), float(torch.logit(torch.tensor(0.6)))
    boxes = torch.tensor([0.5, 0.5, 0.1, 0.1]).repeat(1, 1, q, 1)
    boxes[0, 0, 3], boxes[0, 0, 5] = torch.tensor([0.25, 0.5, 0.5, 1.0]), torch.tensor([0.75, 0.5, 0.5, 1.0])
    masks = torch.full((1, 1, q, h // 4, w // 4), -5.0)
    masks[0, 0, 3, :, : w // 8], masks[0, 0, 5, :, w // 8:] = 5.0, 5.0
    raw = DetectorRaw(logits, boxes, masks if with_masks else None, logits[0], boxes[0], torch.ones(1, 1, dtype=torch.bool))
    return raw, inputs, link_states([1])


@pytest.mark.parametrize("with_masks", [True, False])
def test_an_interactive_answer_is_the_query_that_covers_its_mark(decoder, with_masks):
    from visionllm2.model.decoders.detection_post import postprocess

    raw, inputs, link = _two_candidates(decoder, with_masks)
    click = np.zeros((1, 128, 128), bool)
    click[0, 60:63, 100:103] = True  # a dot on the right half
    by_score = postprocess(raw, inputs, link, [0], decoder.config)[0]
    by_mark = postprocess(raw, inputs, link, [0], decoder.config, marks=[click])[0]
    assert by_score.best_boxes[0, 0] < 10 and by_score.best_scores[0] == pytest.approx(0.9)
    assert by_mark.best_boxes[0, 0] > 60 and by_mark.best_scores[0] == pytest.approx(0.6)  # its own score, not a blend
    if with_masks:
        assert by_mark.best_masks[0, 61, 101] and not by_mark.best_masks[0, 61, 20]
    assert torch.equal(by_mark.boxes, by_score.boxes)  # the ranked detections are untouched
    nowhere = postprocess(raw, inputs, link, [0], decoder.config, marks=[np.zeros((1, 128, 128), bool)])[0]
    assert nowhere.best_scores[0] == pytest.approx(0.9)  # a mark no query covers: the score decides
    decoder.config.mark_agreement = False
    assert postprocess(raw, inputs, link, [0], decoder.config, marks=[click])[0].best_scores[0] == pytest.approx(0.9)


def test_a_mark_of_the_wrong_size_is_a_typed_error(decoder):
    from visionllm2.model.decoders.detection_post import postprocess

    raw, inputs, link = _two_candidates(decoder, True)
    with pytest.raises(InvalidInputError, match=r"expected one bool mask per group, shape \(1, 128, 128\).*got \(2, 64, 64\)"):
        postprocess(raw, inputs, link, [0], decoder.config, marks=[np.ones((2, 64, 64), bool)])


def test_mark_coverage_reads_the_full_size_mask_without_building_it():
    from visionllm2.model.decoders.detection_post import _masks_to_image, mark_coverage

    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(6, 20, 30)).astype(np.float32))  # 6 queries over a 120×80 picture
    full = _masks_to_image(logits, (20, 30), (20, 30), (120, 80)).numpy()  # (6, 80, 120)
    marks = np.zeros((2, 80, 120), bool)
    marks[0, 10:30, 5:40], marks[1, 50:52, 60:90] = True, True  # under 1024 pixels each: every pixel is read
    coverage = mark_coverage(marks, (120, 80), torch.zeros(6, 4), logits).numpy()
    expected = np.stack([full[:, m].mean(-1) for m in marks], -1)
    assert np.abs(coverage - expected).max() < 1e-6  # bilinear at the same points: the same pixels


def test_duplicates_keep_a_share_of_their_score_whatever_their_class():
    from visionllm2.model.decoders.detection_post import soften_duplicates

    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 11], [1, 0, 11, 10], [50, 50, 60, 60], [3, 3, 3, 3]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])  # #1, #2 repeat #0; #3 is elsewhere; #4 is empty
    softened = soften_duplicates(boxes, scores, 0.5, 0.5)
    # #1 overlaps #0 (IoU 0.91): 0.4. #2 overlaps #0 (0.82) and then #1 (0.75), taken before it: 0.175.
    assert softened.tolist() == pytest.approx([0.9, 0.4, 0.175, 0.6, 0.5])
    assert soften_duplicates(boxes, scores, 0.5, 0.0).tolist() == pytest.approx([0.9, 0.0, 0.0, 0.6, 0.5])  # NMS
    assert torch.equal(soften_duplicates(boxes, scores, 0.5, 1.0), scores)  # off
    assert torch.equal(soften_duplicates(boxes, scores, 0.95, 0.5), scores)  # nothing overlaps that much
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])  # the input is left as it was
    from fake_gpu import StandInGPU

    with StandInGPU():  # the loop runs on the host (a launch per detection on a GPU); the scores go back
        on_gpu = soften_duplicates(boxes.to("cuda"), scores.to("cuda"), 0.5, 0.5)
    assert on_gpu.device.type == "cuda" and on_gpu.cpu().tolist() == pytest.approx([0.9, 0.4, 0.175, 0.6, 0.5])


def test_softened_detections_come_out_ranked_by_their_new_scores(decoder):
    link, image = link_states([3]), [np.random.default_rng(1).integers(0, 255, (100, 150, 3), dtype=np.uint8)]
    decoder.config.score_threshold = 0.0
    plain = decoder(link, image).predictions[0]
    decoder.config.duplicate_decay = 0.5
    softened = decoder(link, image).predictions[0]
    assert bool((softened.scores[:-1] >= softened.scores[1:]).all())
    assert softened.scores.sum() < plain.scores.sum()  # a random detector repeats itself: some scores fell
    assert softened.scores[0].item() == pytest.approx(plain.scores[0].item())  # the top one stays
    assert torch.equal(softened.best_scores, plain.best_scores)  # each group's best query is not a duplicate's business


def test_mask_loss_points_gather_where_the_mask_is_uncertain():
    from visionllm2.model.decoders.detection_loss import _training_points

    # A head sure of the background everywhere but at a small object (a 40-pixel blob in 128²,
    # 0.25 % of the picture): uniform points would hardly ever land on it.
    def logits_at(coords):  # (n, P, 2) image-relative → (n, P)
        inside = ((coords - 0.5).abs() < 0.025).all(-1)
        return torch.where(inside, torch.zeros(()), torch.full((), -8.0))

    config = DetectionConfig.tiny()  # 1,024 points, as the shapes model trains
    torch.manual_seed(0)
    points = _training_points(logits_at, 2, config, torch.device("cpu"))
    assert points.shape == (2, config.mask_points, 2) and 0 <= points.min() and points.max() <= 1
    on_object = ((points - 0.5).abs() < 0.025).all(-1).float().mean()
    assert on_object > 0.005  # ≈ 3 × 0.25 % of the uncertain share, against 0.25 % uniform
    uniform = _training_points(logits_at, 2, dataclasses.replace(config, mask_importance_ratio=0.0), torch.device("cpu"))
    assert ((uniform - 0.5).abs() < 0.025).all(-1).float().mean() < on_object / 2


def test_evaluator_scores_perfect_and_shifted_detections():
    _, boxes, labels, masks = scene(3)
    perfect = CocoEvaluator(("bbox", "segm"))
    perfect.add((128, 128), boxes, labels, boxes, np.ones(len(boxes)), labels, masks, masks)
    assert perfect.compute()["bbox_AP"] == pytest.approx(1.0) and perfect.compute()["segm_AP"] == pytest.approx(1.0)
    shifted = CocoEvaluator(("bbox",))
    shifted.add((128, 128), boxes, labels, boxes + 12, np.ones(len(boxes)), labels)
    assert shifted.compute()["bbox_AP"] < 1.0
    nothing = CocoEvaluator(("bbox",))
    nothing.add((128, 128), boxes, labels, np.zeros((0, 4)), np.zeros(0), [])
    assert nothing.compute()["bbox_AP50"] == 0.0


def shapes_training_set(count: int, processor: Processor):
    chats, targets, images, scenes = [], [], [], []
    question = "\nCan you analyze the image and identify the red circle, blue square present?"
    for seed in range(count):
        image, boxes, labels, masks = scene(seed)
        answer = ["Yes, here are the results for ", *processor.route_segments(T.DET, CLASSES[0]), ", ",
                  *processor.route_segments(T.DET, CLASSES[1]), "."]
        chats.append(processor.build([Message("user", [ImageSlot(0), question]), Message("assistant", answer)], [image]))
        targets.append(DetectionTarget(boxes, np.array([CLASSES.index(label) for label in labels]), masks))
        images.append(image)
        scenes.append((boxes, labels, masks))
    return chats, targets, images, scenes


def tiny_detector_model(tokenizer):
    torch.manual_seed(0)
    config = VisionLLMv2Config.preset("tiny")
    config.detection = DetectionConfig.tiny()
    return VisionLLMv2.from_config(config, build_decoders(config), tokenizer), config


def test_link_gradients_reach_the_llm_through_patch2query(tokenizer):
    model, config = tiny_detector_model(tokenizer)
    chats, targets, images, _ = shapes_training_set(2, Processor(config, tokenizer))
    out = model(collate(chats, tokenizer.pad_id), images, {"gdino": targets})
    out.decoder_outputs["gdino"].loss.backward()
    for name, parameter in [("patch2query", model.gdino.patch2query.layers[0].weight),
                            ("query table", model.emb_embeddings_det.weight),
                            ("llm", model.llm.model.layers[0].mlp.up_proj.weight),
                            ("vl_bridge", model.vl_bridge[2].weight)]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def overfit(tokenizer, images_count: int, steps: int):
    model, config = tiny_detector_model(tokenizer)
    chats, targets, images, scenes = shapes_training_set(images_count, Processor(config, tokenizer))
    batch = collate(chats, tokenizer.pad_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        out = model(batch, images, {"gdino": targets})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.decoder_outputs["gdino"].loss.item())
    model.eval()
    with torch.no_grad():
        predictions = model(batch, images).decoder_outputs["gdino"].predictions
    evaluator = CocoEvaluator(("bbox", "segm"))
    for prediction, (boxes, labels, masks) in zip(predictions, scenes):
        evaluator.add(prediction.image_size, boxes, labels, prediction.boxes.numpy(), prediction.scores.numpy(),
                      [prediction.labels[g] for g in prediction.groups.tolist()], masks, prediction.masks.numpy())
    return losses, evaluator.compute()


def test_training_steps_lower_the_loss_fast_variant(tokenizer):
    losses, _ = overfit(tokenizer, images_count=2, steps=12)
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3])


@pytest.mark.slow
def test_tiny_end_to_end_model_overfits_shapes(tokenizer):
    losses, metrics = overfit(tokenizer, images_count=4, steps=130)
    assert losses[-1] < losses[0] / 10
    assert metrics["bbox_AP50"] >= 0.9
