"""Every verb, and training's losses, with the model on a stand-in CUDA device (:mod:`fake_gpu`).

The stand-in computes on the CPU, so each answer must equal the one the same model gives on the
host, exactly; what it adds is CUDA's placement rules. It caught two bugs that made every detect,
segment, ground and pose turn raise on a GPU: predictions read with ``.numpy()``, and pose
keypoints scaled by a host tensor.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from fake_gpu import DEVICE, READS, OnGPU, StandInGPU, on_stand_in_gpu
from route_steps import each_route_step, finite, tiny_config_with_denoisers

from visionllm2.model.decoders import build_decoders
from visionllm2.model.visionllm import VisionLLMv2
from visionllm2.sdk import Box, Point, Session


def test_the_stand_in_keeps_cudas_placement_rules():
    with StandInGPU():
        gpu = torch.ones(3, device="cuda")
        assert isinstance(gpu, OnGPU) and gpu.device == DEVICE
        assert isinstance(torch.zeros(2).to("cuda:0"), OnGPU) and isinstance((gpu * 2).to(torch.float16), OnGPU)
        assert type(gpu.to("cpu")) is torch.Tensor and type(gpu.cpu()) is torch.Tensor
        with pytest.raises(RuntimeError, match="same device"):
            gpu + torch.ones(3)
        with pytest.raises(TypeError, match="numpy"):
            gpu.numpy()
        assert float((gpu * torch.tensor(2.0)).sum()) == 6.0  # a 0-d host tensor may mix, as on CUDA
        assert gpu[torch.tensor([0, 2])].tolist() == [1.0, 1.0]  # and host indices



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    config = tiny_config_with_denoisers()
    config.detection.score_threshold = config.pose.score_threshold = 0.0  # random weights: show every answer
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_with_denoisers")
    VisionLLMv2.from_config(config, build_decoders(config), tokenizer).save_pretrained(folder)
    return folder


def conversation(session: Session, photo) -> list:
    session.detect(["person", "rocket"], image=photo)
    session.segment(["person"])
    session.segment(prompts=[Point(120, 100), Box(40, 30, 200, 220)])
    session.segment(examples=[(photo, Box(40, 30, 200, 220))], image=photo)
    session.ground("the person")
    session.ask("What is in the picture?")
    session.pose(["person"])
    session.generate("a red circle", seed=3)
    session.edit("make it blue", image=photo, seed=3)
    return session.turns


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # bfloat16: what CUDA loads
def test_every_verb_answers_on_a_gpu_as_on_the_host(model_dir, photo, dtype):
    host = conversation(Session(VisionLLMv2.from_pretrained(str(model_dir), dtype).eval(), max_new_tokens=12), photo)
    model = on_stand_in_gpu(VisionLLMv2.from_pretrained(str(model_dir), dtype).eval())
    assert model.device == DEVICE
    with StandInGPU():
        gpu = conversation(Session(model, max_new_tokens=12), photo)
    assert [t.text for t in gpu] == [t.text for t in host]
    for ours, theirs in zip(gpu, host, strict=True):
        assert [r.kind for r in ours.results] == [r.kind for r in theirs.results]
        # In float32 everything is identical. In bfloat16 the pictures come out 3-4 levels of 255
        # apart: some library path rounds differently once a tensor says it is on CUDA, and the
        # denoising steps carry that into the pixels. Texts agree, boxes within a pixel.
        exact = dtype == torch.float32
        for a, b in zip(ours.results, theirs.results):
            if a.kind == "images":
                apart = np.abs(np.asarray(a.images[0], float) - np.asarray(b.images[0], float)).mean()
                assert apart == 0 if exact else apart < 8, apart
            else:
                assert len(a) == len(b) > 0
                np.testing.assert_allclose(a.xyxy if a.kind == "boxes" else a.boxes,
                                           b.xyxy if b.kind == "boxes" else b.boxes, atol=1e-4 if exact else 1.0)


def targets_on_gpu(target):
    """A target dataclass with its numpy fields as GPU tensors (a GPU data pipeline's)."""
    if not dataclasses.is_dataclass(target):
        return target
    fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)}
    return dataclasses.replace(target, **{name: torch.as_tensor(value, device="cuda") for name, value in fields.items()
                                          if isinstance(value, np.ndarray)})


@pytest.mark.parametrize("targets_where", ["host", "gpu"])
def test_every_route_trains_on_a_gpu(tokenizer, targets_where):
    # Losses read targets beside GPU states: numpy boxes, masks, keypoints and pictures from the
    # host, or tensors already on the GPU (those went through np.asarray and raised).
    def place(batch, targets):
        if targets_where == "gpu":
            targets = {name: [targets_on_gpu(t) for t in group] for name, group in targets.items()}
        return batch.to(DEVICE), targets

    config = tiny_config_with_denoisers(latent_generation=True)
    torch.manual_seed(0)
    model = on_stand_in_gpu(VisionLLMv2.from_config(config, build_decoders(config), tokenizer))
    with StandInGPU():
        for task, output in each_route_step(model, place):
            assert isinstance(output.loss, OnGPU) and finite(output.loss), task
            assert task == "chat" or output.decoder_outputs, task


def test_the_recipes_run_on_a_gpu_as_on_the_host(model_dir, photo):
    from visionllm2.recipes.detect_segment_edit import detect_segment_edit
    from visionllm2.recipes.in_context import in_context
    from visionllm2.recipes.inspection import inspect_parts
    from visionllm2.recipes.remote_sensing import map_objects

    def run(session: Session) -> list:
        edited = detect_segment_edit(session, photo, ["person"], "make it blue", edit_options={"seed": 1})
        found = in_context(session, [(photo, Box(40, 30, 200, 220))], [photo], label="suit")
        report = inspect_parts(session, [photo], ["scratch"], pixel_size=0.1, vocabulary=None)
        mapped = map_objects(session, photo, ["building"], tile_size=64, overlap=16, vocabulary=None)
        return [np.asarray(edited.after), len(found.items[0].masks), report.parts[0].passed, len(report.parts[0].defects),
                len(mapped.objects)]

    host = run(Session(VisionLLMv2.from_pretrained(str(model_dir)).eval(), max_new_tokens=12))
    with StandInGPU():
        gpu = run(Session(on_stand_in_gpu(VisionLLMv2.from_pretrained(str(model_dir)).eval()), max_new_tokens=12))
    assert np.array_equal(gpu[0], host[0]) and gpu[1:] == host[1:] and host[1] and host[3] and host[4]  # all found some


def test_a_training_step_reads_the_gpu_back_a_few_times_not_once_per_token(tokenizer):
    # Each host read of a CUDA tensor (int(), .item(), .tolist(), a tensor's truth) waits for the GPU.
    # The super link read each group's routing token and the words of its label one at a time from
    # the GPU, so the reads grew with the prompts: a pose step of two samples made 220, now 45 (the
    # token ids are copied to the host once).
    config = tiny_config_with_denoisers()
    torch.manual_seed(0)
    model = on_stand_in_gpu(VisionLLMv2.from_config(config, build_decoders(config), tokenizer))
    reads = {}
    READS.clear()  # the tests before this one read too
    with StandInGPU():
        for task, _ in each_route_step(model, lambda batch, targets: (batch.to(DEVICE), targets)):
            reads[task], _ = sum(READS.values()), READS.clear()
    assert set(reads) >= {"detect", "pose", "chat", "generate", "edit"}
    assert max(reads.values()) <= 50 and reads["chat"] <= 8, reads
