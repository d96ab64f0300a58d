"""The vision tower's conv stem and its stage-0 pre-training on counts (``tasks: {"count": 1}``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from visionllm2.model.config import VisionConfig, VisionLLMv2Config
from visionllm2.model.data.samples import group_of
from visionllm2.model.data.shapes import ShapeObject
from visionllm2.model.data.tasks import COUNTED, MOST_COUNTED, ShapesWorld, count_classes
from visionllm2.model.errors import CheckpointError
from visionllm2.model.processor import Processor
from visionllm2.model.tokenizer import Tokenizer
from visionllm2.model.training import TrainConfig, Trainer
from visionllm2.model.training.curves import curve_table
from visionllm2.model.training.sources import ListSource
from visionllm2.model.vision import ConvStem, build_vision_tower
from visionllm2.model.visionllm import VisionLLMv2


def tiny(patch_embedding: str = "linear") -> VisionLLMv2Config:
    config = VisionLLMv2Config.preset("tiny")
    config.vision.patch_embedding = patch_embedding
    return config


def test_a_conv_stem_tower_gives_the_linear_ones_grid_and_round_trips(tmp_path):
    config = tiny("conv_stem")
    tower = build_vision_tower(config.vision)
    assert isinstance(tower.embeddings.patch_embedding, ConvStem)
    pixels = torch.randn(2, 3, config.vision.image_size, config.vision.image_size)
    states = tower(pixel_values=pixels, output_hidden_states=True).hidden_states
    linear = build_vision_tower(tiny().vision)(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert states[-1].shape == linear[-1].shape == (2, 1 + config.vision.tokens_per_tile, config.vision.hidden_size)
    model = VisionLLMv2.from_config(config, None, Tokenizer.builtin())
    model.save_pretrained(str(tmp_path / "m"))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["vision"]["patch_embedding"] == "conv_stem"
    loaded = VisionLLMv2.from_pretrained(str(tmp_path / "m"))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert "vis_encoder.embeddings.patch_embedding.4.weight" in loaded.state_dict()


def test_an_unknown_patch_embedding_or_an_odd_patch_is_refused():
    with pytest.raises(CheckpointError, match="patch_embedding: expected one of .*got 'conv'"):
        VisionConfig(patch_embedding="conv")
    with pytest.raises(CheckpointError, match="even patch_size, got 15"):
        build_vision_tower(VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                        image_size=60, patch_size=15, patch_embedding="conv_stem"))


def _object(kind: str, colour: str) -> ShapeObject:
    return ShapeObject(kind, colour, "small", "left", np.array([0.0, 0.0, 4.0, 4.0]), np.ones((8, 8), bool))


def test_count_samples_hold_each_shapes_colours_and_pairs_count_capped():
    objects = [_object("circle", "red"), _object("circle", "blue"), *[_object("star", "red")] * 5]
    counts = dict(zip(COUNTED, count_classes(objects)))
    assert counts["circle"] == 2 and counts["star"] == MOST_COUNTED and counts["square"] == 0
    assert counts["red"] == MOST_COUNTED and counts["blue"] == 1 and counts["red circle"] == 1
    assert counts["red star"] == MOST_COUNTED and counts["blue star"] == 0
    world = ShapesWorld(Processor(tiny(), Tokenizer.builtin()), tasks={"count": 1.0})
    sample = world.sample(3)
    assert sample.task == "count" and group_of("count") == "tower" and sample.messages == []
    assert sample.targets["tower"] == count_classes(sample.meta["objects"])


def test_counts_are_pretrained_in_stage_zero_only():
    with pytest.raises(ValueError, match="'count' pre-trains the vision tower alone, in stage 0, not stage 2"):
        TrainConfig(stage=2, tasks={"count": 1.0, "detect": 1.0})
    with pytest.raises(ValueError, match="stage 0 pre-trains without the LLM.*got \\['chat', 'count'\\]"):
        TrainConfig(stage=0, tasks={"count": 1.0, "chat": 1.0})
    with pytest.raises(ValueError, match="fresh_vision_tower: expected one of"):
        TrainConfig(stage=0, tasks={"count": 1.0}, fresh_vision_tower="resnet")


def count_run(tmp_path, model, steps: int, **options) -> Trainer:
    config = TrainConfig(stage=0, tasks={"count": 1.0}, output_dir=str(tmp_path), steps=steps, batch_size=4, log_every=1,
                         warmup_steps=1, learning_rate=3e-3, cpu=True, **options)
    world = ShapesWorld(Processor(model.config, model.tokenizer), tasks={"count": 1.0})
    return Trainer(config, model=model, source=ListSource([world.sample(i) for i in range(8)]))


def test_stage_zero_counting_trains_the_tower_alone_and_resumes_with_its_head(tmp_path):
    torch.manual_seed(0)
    model = VisionLLMv2.from_config(tiny("conv_stem"), None, Tokenizer.builtin())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    straight = count_run(tmp_path / "a", model, 6, save_every=3).train(progress=False)
    losses = [r["tower"] for r in straight.records]
    assert all(np.isfinite(losses)) and np.mean(losses[-2:]) < np.mean(losses[:2])
    kinds = ("all", "shapes", "colours", "pairs")  # the share of counts read right, of each kind
    assert all(0 <= r[f"tower/{kind}"] <= 1 and r["group"] == "tower" for r in straight.records for kind in kinds)
    header, rows = curve_table(tmp_path / "a" / "log.jsonl", 2, parts=True)  # `visionllm2 curves --parts`
    assert header == ["steps", "tower", *(f"tower/{kind}" for kind in kinds)] and len(rows) == 2
    after = VisionLLMv2.from_pretrained(str(straight.model_dir)).state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"vis_encoder"}  # the count head is not part of the model
    # stopped at step 4 and resumed: the head's and the optimiser's state come back from the checkpoint
    torch.manual_seed(0)
    fresh = VisionLLMv2.from_config(tiny("conv_stem"), None, Tokenizer.builtin())
    fresh.load_state_dict(before)
    count_run(tmp_path / "b", fresh, 6, save_every=3).train(stop_at=4, progress=False)
    torch.manual_seed(5)
    again = VisionLLMv2.from_config(tiny("conv_stem"), None, Tokenizer.builtin())
    again.load_state_dict(before)
    resumed = count_run(tmp_path / "b", again, 6, save_every=3).train(progress=False)
    b = VisionLLMv2.from_pretrained(str(resumed.model_dir)).state_dict()
    assert all(torch.equal(after[k], b[k]) for k in after)


def test_a_stage_can_give_the_init_model_a_fresh_conv_stem_tower(tmp_path):
    torch.manual_seed(0)
    base = VisionLLMv2.from_config(tiny(), None, Tokenizer.builtin())
    base.save_pretrained(str(tmp_path / "base"))
    config = TrainConfig(stage=0, tasks={"count": 1.0}, init=str(tmp_path / "base"), fresh_vision_tower="conv_stem",
                         output_dir=str(tmp_path / "tower"), steps=2, batch_size=4, warmup_steps=1, cpu=True)
    result = Trainer(config).train(progress=False)
    model = VisionLLMv2.from_pretrained(str(result.model_dir))
    assert model.config.vision.patch_embedding == "conv_stem"
    state, old = model.state_dict(), base.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in old.items() if not k.startswith("vis_encoder."))
