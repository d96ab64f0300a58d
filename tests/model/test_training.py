"""The training stack on the tiny preset: every stage trains, resumes exactly, and hands over."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from visionllm2.model import tokens as T
from visionllm2.model.config import VisionLLMv2Config
from visionllm2.model.data.tasks import ShapesWorld
from visionllm2.model.errors import InvalidInputError
from visionllm2.model.processor import Processor
from visionllm2.model.tokenizer import Tokenizer
from visionllm2.model.training import TrainConfig, Trainer
from visionllm2.model.training.sources import ListSource
from visionllm2.model.training.stages import has_lora, prepare_stage
from visionllm2.model.training.trainer import build_model, flushing_denormals, samples_to_inputs
from visionllm2.model.visionllm import VisionLLMv2


def fixed_samples(tasks: dict[str, float], count: int = 4) -> list:
    config = VisionLLMv2Config.preset("tiny")
    world = ShapesWorld(Processor(config, Tokenizer.builtin()), tasks=tasks)
    return [world.sample(i) for i in range(count)]


def fixed_source(tasks: dict[str, float], count: int = 4) -> ListSource:
    return ListSource(fixed_samples(tasks, count))


def run(tmp_path, stage: int, steps: int, source=None, init=None, **options):
    config = TrainConfig(stage=stage, preset="tiny", init=init, output_dir=str(tmp_path / f"stage{stage}"), steps=steps,
                         batch_size=4, log_every=1, save_every=options.pop("save_every", 100), warmup_steps=1,
                         learning_rate=options.pop("learning_rate", 3e-3), **options)
    return Trainer(config, source=source).train(progress=False)


def test_three_stages_train_and_hand_over(tmp_path):
    torch.manual_seed(0)
    chat = run(tmp_path, 1, 8, fixed_source({"chat": 1.0}))
    lm = [r["lm"] for r in chat.records]
    assert all(np.isfinite(lm)) and np.mean(lm[-2:]) < np.mean(lm[:2])
    detect = run(tmp_path, 2, 8, fixed_source({"detect": 1.0}), init=str(chat.model_dir))
    gdino = [r["gdino"] for r in detect.records]
    assert all(np.isfinite(gdino)) and np.mean(gdino[-2:]) < np.mean(gdino[:2])
    decoder_only = run(tmp_path, 3, 4, fixed_source({"pose": 1.0}), init=str(detect.model_dir))
    assert all(np.isfinite(r["unipose"]) for r in decoder_only.records)
    # Each stage wrote a plain model directory (LoRA merged) that loads strictly and is the next's init.
    model = VisionLLMv2.from_pretrained(str(decoder_only.model_dir))
    assert not has_lora(model)
    log = [json.loads(line) for line in (tmp_path / "stage2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9)) and all(r["group"] == "gdino" for r in log)


class _FlagRecordingSource(ListSource):
    """A source that notes, at each batch, whether the process flushes denormals."""

    def __init__(self, samples):
        super().__init__(samples)
        self.seen: list[bool] = []

    def batch(self, *args, **kwargs):
        self.seen.append(flushing_denormals())
        return super().batch(*args, **kwargs)


@pytest.mark.parametrize("before", [False, True])
def test_training_flushes_denormals_only_while_it_runs(tmp_path, before):
    # The flag is process-wide: a run inside a notebook or test suite must hand back the caller's own.
    source = _FlagRecordingSource(fixed_samples({"detect": 1.0}))
    torch.set_flush_denormal(before)
    config = TrainConfig(stage=2, preset="tiny", output_dir=str(tmp_path / "run"), steps=2, batch_size=4, warmup_steps=1,
                         cpu=True)  # on CUDA the step runs on the GPU and the CPU's flag is left alone
    trainer = Trainer(config, source=source)
    assert flushing_denormals() is before  # building the trainer changes nothing
    trainer.train(progress=False)
    trainer.train_step()  # a step called on its own (bench/train_throughput.py) flushes too
    assert source.seen == [True, True, True]
    assert flushing_denormals() is before


def test_runs_in_one_process_may_ask_for_another_precision_or_device(tmp_path):
    # accelerate keeps one state per process: the second of two runs in a notebook (or this suite, as
    # it ran on a GPU machine after a `cpu=True` run) raised "AcceleratorState has already been
    # initialized" when it asked for another precision.
    source = fixed_source({"detect": 1.0})
    for index, precision in enumerate(("no", "bf16", "no")):
        config = TrainConfig(stage=2, preset="tiny", output_dir=str(tmp_path / str(index)), steps=1, batch_size=2,
                             warmup_steps=1, mixed_precision=precision, cpu=True)
        trainer = Trainer(config, source=source)
        assert trainer.accelerator.mixed_precision == precision and trainer.accelerator.device.type == "cpu"
        assert np.isfinite(trainer.train_step()["loss"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_route_trains_with_half_precision_weights(dtype):
    # Without autocast, as a model loaded in bfloat16 is fine-tuned: the box matcher's cdist has no
    # half kernels and grid_sample wants one dtype, so each loss used to raise.
    from route_steps import each_route_step, finite, tiny_config_with_denoisers

    from visionllm2.model.decoders import build_decoders

    config = tiny_config_with_denoisers(latent_generation=True, latent_editing=True)  # real VAEs too
    torch.manual_seed(0)
    model = VisionLLMv2.from_config(config, build_decoders(config), Tokenizer.builtin()).to(dtype)
    assert set(model.decoders()) == {"gdino", "unipose", "sd", "ip2p"}
    for task, output in each_route_step(model):
        assert finite(output.loss), task
        assert task == "chat" or output.decoder_outputs, task  # the route's decoder ran and added its loss
        assert all(p.grad is None or finite(p.grad) for p in model.parameters()), task


def test_stage_three_moves_only_decoders_and_query_tables(tmp_path):
    torch.manual_seed(0)
    first = run(tmp_path, 1, 1, fixed_source({"chat": 1.0}))
    before = VisionLLMv2.from_pretrained(str(first.model_dir)).state_dict()
    after = VisionLLMv2.from_pretrained(str(run(tmp_path, 3, 3, fixed_source({"detect": 1.0}), init=str(first.model_dir)).model_dir)).state_dict()
    changed = {key.split(".")[0] for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"gdino", "emb_embeddings_det"}


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    # On the CPU, where every kernel is deterministic, to the bit (CUDA's version is below).
    source = fixed_source({"detect": 1.0, "interactive": 1.0})
    torch.manual_seed(0)
    straight = run(tmp_path / "a", 2, 6, source, save_every=3, cpu=True)
    torch.manual_seed(1)  # a different process state: the checkpoint must restore everything
    config = TrainConfig(stage=2, preset="tiny", output_dir=str(tmp_path / "b" / "stage2"), steps=6, batch_size=4,
                         log_every=1, save_every=3, warmup_steps=1, learning_rate=3e-3, cpu=True)
    partial = Trainer(config, source=source).train(stop_at=4, progress=False)
    assert partial.step == 4 and partial.model_dir is None
    torch.manual_seed(2)
    resumed = Trainer(config, source=source).train(progress=False)
    assert resumed.step == 6
    a = VisionLLMv2.from_pretrained(str(straight.model_dir)).state_dict()
    b = VisionLLMv2.from_pretrained(str(resumed.model_dir)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = Trainer(config, source=source).train(progress=False)  # a finished stage is not run twice
    assert again.step == 6 and again.records == [] and again.model_dir == resumed.model_dir


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_resumed_on_cuda_lands_as_near_as_a_second_uninterrupted_one(tmp_path):
    # CUDA's atomics (grid_sample's backward, index_add) under bfloat16 autocast are not bit-exact from
    # run to run, and Adam turns that noise into whole steps for weights whose gradients are near zero:
    # on an H200, a resumed run lay 0.20 of the training's own distance from the straight one. So the
    # resumed run is held to the noise floor, the distance between two uninterrupted runs, rather than
    # to equality. A checkpoint that lost the optimizer's moments, the schedule or the CUDA generator
    # (LoRA's dropout draws from it) would land well beyond it.
    source = fixed_source({"detect": 1.0, "interactive": 1.0})

    def weights(result):
        return torch.cat([v.float().flatten() for v in VisionLLMv2.from_pretrained(str(result.model_dir)).state_dict().values()])

    straight = weights(run(tmp_path / "a", 2, 6, source, save_every=3))
    again = weights(run(tmp_path / "b", 2, 6, source, save_every=3))
    config = TrainConfig(stage=2, preset="tiny", output_dir=str(tmp_path / "c"), steps=6, batch_size=4, log_every=1,
                         save_every=3, warmup_steps=1, learning_rate=3e-3)
    assert Trainer(config, source=source).train(stop_at=4, progress=False).step == 4
    resumed = weights(Trainer(config, source=source).train(progress=False))
    floor = (again - straight).norm()
    assert (resumed - straight).norm() <= 3 * floor + 1e-3, (float((resumed - straight).norm()), float(floor))


def test_stage_two_with_lora_rank_zero_fine_tunes_the_whole_llm(tmp_path):
    torch.manual_seed(0)
    first = run(tmp_path, 1, 1, fixed_source({"chat": 1.0}))
    before = VisionLLMv2.from_pretrained(str(first.model_dir)).state_dict()
    model = VisionLLMv2.from_pretrained(str(first.model_dir))
    config = TrainConfig(stage=2, output_dir=str(tmp_path / "full"), steps=2, batch_size=4, log_every=1,
                         warmup_steps=1, learning_rate=3e-3, lora_rank=0)
    trainer = Trainer(config, model=model, source=fixed_source({"detect": 1.0}))
    assert not has_lora(trainer.model) and all(p.requires_grad for p in trainer.model.llm.parameters())
    after = VisionLLMv2.from_pretrained(str(trainer.train(progress=False).model_dir)).state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    # The base weights themselves moved (no adapters to merge); the vision tower stayed (train_vision off).
    assert "llm.model.layers.0.self_attn.q_proj.weight" in changed and "llm.lm_head.weight" in changed
    assert not any(key.startswith("vis_encoder") for key in changed)
    with pytest.raises(ValueError, match="lora_rank"):
        TrainConfig(lora_rank=-1)


def test_freeze_keeps_the_named_parts_fixed_while_their_losses_still_train_the_rest(tmp_path):
    # Teaching the picture tokens without moving the LLM every decoder reads: the decoders' and the
    # LLM's losses still flow back into the vision tower and the bridge.
    torch.manual_seed(0)
    first = run(tmp_path, 1, 1, fixed_source({"chat": 1.0}))
    before = VisionLLMv2.from_pretrained(str(first.model_dir)).state_dict()
    config = TrainConfig(stage=2, output_dir=str(tmp_path / "frozen"), steps=2, batch_size=4, log_every=1,
                         warmup_steps=1, learning_rate=3e-3, lora_rank=0, train_vision=True,
                         freeze=["llm", "decoders", "query_tables", "region_encoder"])
    trainer = Trainer(config, model=VisionLLMv2.from_pretrained(str(first.model_dir)),
                      source=fixed_source({"detect": 1.0, "chat": 1.0}))
    assert not any(p.requires_grad for p in trainer.model.llm.parameters())
    after = VisionLLMv2.from_pretrained(str(trainer.train(progress=False).model_dir)).state_dict()
    changed = {key.split(".")[0] for key in before if not torch.equal(before[key], after[key])}
    assert changed == {"vis_encoder", "vl_bridge"}
    with pytest.raises(ValueError, match=r"freeze: unknown parts \['lm'\]"):
        TrainConfig(freeze=["lm"])
    with pytest.raises(InvalidInputError, match="no 'sd' decoder"):
        prepare_stage(VisionLLMv2.from_pretrained(str(first.model_dir)), TrainConfig(stage=2, freeze=["sd"]))


def test_a_killed_run_resumes_from_its_checkpoint_and_logs_each_step_once(tmp_path):
    source = fixed_source({"detect": 1.0})
    config = TrainConfig(stage=2, preset="tiny", output_dir=str(tmp_path / "stage2"), steps=5, batch_size=4,
                         log_every=1, save_every=2, warmup_steps=1, learning_rate=3e-3)
    Trainer(config, source=source).train(stop_at=3, progress=False)
    # Killed after logging step 3 but before saving it: only step-2's checkpoint survives.
    shutil.rmtree(tmp_path / "stage2" / "checkpoints" / "step-3")
    resumed = Trainer(config, source=source).train(progress=False)
    assert [r["step"] for r in resumed.records] == [3, 4, 5]
    log = [json.loads(line) for line in (tmp_path / "stage2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]


def test_bad_training_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="stage"):
        TrainConfig(stage=4)
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"stage": 1, "learning_rat": 1e-3})
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="attach is not set"):
        TrainConfig(attach_decoders=["gdino"])
    with pytest.raises(ValueError, match="domain_rate"):
        TrainConfig(domain_rate=1.5)
    with pytest.raises(ValueError, match="generate_history_rate"):
        TrainConfig(generate_history_rate=-0.1)


def test_the_domain_rate_sets_how_often_a_training_scene_comes_from_a_domain_pack():
    from visionllm2.model.data.domains import DOMAINS
    from visionllm2.model.training.sources import build_source

    config = VisionLLMv2Config.preset("tiny")
    processor = Processor(config, Tokenizer.builtin())
    domain_classes = {kind for classes in DOMAINS.values() for kind in classes}

    def domain_share(rate: float) -> float:
        source = build_source(["shapes"], processor, {"detect": 1.0}, ["industrial", "medical"], 0, domain_rate=rate)
        samples = [s for step in range(12) for s in source.batch(step, 8)]
        return np.mean([any(o.kind in domain_classes for o in s.meta["objects"]) for s in samples])

    assert domain_share(0.0) == 0.0
    assert domain_share(1.0) > 0.8  # a flawless part has no object to tell its domain by
    assert 0.1 < domain_share(0.25) < 0.45


def test_a_config_can_weight_the_domain_packs_and_round_trips_through_json(tmp_path):
    from visionllm2.model.training.sources import build_source

    config = TrainConfig(domains={"industrial": 3.0, "medical": 1.0}, domain_rate=0.6)
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    loaded = TrainConfig.load(path)
    assert loaded.domains == {"industrial": 3.0, "medical": 1.0} and loaded == config
    processor = Processor(VisionLLMv2Config.preset("tiny"), Tokenizer.builtin())
    source = build_source(["shapes"], processor, {"detect": 1.0}, loaded.domains, 0, domain_rate=loaded.domain_rate)
    assert source.world.domains == {"industrial": 3.0, "medical": 1.0}


def generation_model() -> VisionLLMv2:
    from route_steps import tiny_config_with_denoisers

    from visionllm2.model.decoders import build_decoders

    config = tiny_config_with_denoisers()
    return VisionLLMv2.from_config(config, build_decoders(config), Tokenizer.builtin())


def test_stage_zero_pretrains_only_the_denoisers_and_attach_grafts_them(tmp_path):
    from visionllm2.model.training.stages import attach_decoders

    torch.manual_seed(0)
    model = generation_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(stage=0, output_dir=str(tmp_path / "stage0"), steps=3, batch_size=4, log_every=1, warmup_steps=1)
    result = Trainer(config, model=model, source=fixed_source({"generate": 1.0, "edit": 1.0})).train(progress=False)
    assert all(np.isfinite(r["loss"]) for r in result.records)
    after = VisionLLMv2.from_pretrained(str(result.model_dir)).state_dict()
    changed = {".".join(k.split(".")[:2]) for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= {"sd.sd_unet", "sd.sd_text_encoder", "ip2p.sd_unet", "ip2p.sd_text_encoder"}
    frozen_editor = generation_model()  # freeze ["ip2p"]: stage 0 pre-trains [GEN]'s denoiser alone
    groups = prepare_stage(frozen_editor, TrainConfig(stage=0, freeze=["ip2p"]))
    sd = frozen_editor.decoders()["sd"]
    assert {id(p) for p in groups["decoders"]} == {id(p) for m in (sd.sd_unet, sd.sd_text_encoder) for p in m.parameters()}
    unet_alone = generation_model()  # the editor's UNet alone: the link fitted to its text encoder stays valid
    groups = prepare_stage(unet_alone, TrainConfig(stage=0, freeze=["sd", "text_encoders"]))
    assert {id(p) for p in groups["decoders"]} == {id(p) for p in unet_alone.decoders()["ip2p"].sd_unet.parameters()}
    base = VisionLLMv2.from_config(VisionLLMv2Config.preset("tiny"), None, Tokenizer.builtin())
    donor = VisionLLMv2.from_pretrained(str(result.model_dir))
    merged = attach_decoders(base, donor)
    assert set(merged.decoders()) == {"gdino", "unipose", "sd", "ip2p"} and merged.config.generation is not None
    state = merged.state_dict()
    grafted = ("sd.", "ip2p.", "emb_embeddings_gen", "emb_embeddings_edit")
    assert all(torch.equal(state[k], v) for k, v in donor.state_dict().items() if k.startswith(grafted))
    assert all(torch.equal(state[k], v) for k, v in base.state_dict().items() if not k.startswith(grafted))


def test_stage_three_trains_the_generation_link_on_requests_after_an_earlier_turn(tmp_path):
    torch.manual_seed(0)
    model = generation_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    world = ShapesWorld(Processor(model.config, model.tokenizer), tasks={"generate": 1.0}, generate_history_rate=1.0)
    samples = [world.sample(i) for i in range(4)]
    assert all(len(s.messages) == 4 and len(s.images) == 1 for s in samples)
    config = TrainConfig(stage=3, output_dir=str(tmp_path / "stage3"), steps=2, batch_size=4, log_every=1, warmup_steps=1)
    result = Trainer(config, model=model, source=ListSource(samples)).train(progress=False)
    assert all(np.isfinite(r["loss"]) for r in result.records)
    after = VisionLLMv2.from_pretrained(str(result.model_dir)).state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    # The earlier turn's [DET]/[SEG] slots reach the detector, which has no target here and learns
    # nothing; their query table does move, as the [GEN] slots read it through the LLM's attention.
    assert changed == {"sd", "emb_embeddings_gen", "emb_embeddings_det"}


def test_a_denoiser_trained_further_can_be_grafted_behind_the_link_already_trained(tmp_path):
    from visionllm2.model.decoders import build_decoders
    from visionllm2.model.training.stages import attach_decoders

    torch.manual_seed(0)
    linked, further = generation_model(), generation_model()  # other weights everywhere
    linked.save_pretrained(str(tmp_path / "linked"))
    further.save_pretrained(str(tmp_path / "further"))
    stage = TrainConfig(stage=3, init=str(tmp_path / "linked"), attach=str(tmp_path / "further"),
                        attach_decoders=["sd"], attach_keep_tables=True, attach_keep_link=True)
    state = build_model(stage).state_dict()
    ours, theirs = linked.state_dict(), further.state_dict()
    link = ("sd.emb_proj.", "sd.llm2sd_mapper.", "sd.llm2sd_mapper_queries")
    denoiser = [k for k in state if k.startswith("sd.") and not k.startswith(link)]
    assert denoiser and all(torch.equal(state[k], theirs[k]) for k in denoiser)
    assert all(torch.equal(state[k], ours[k]) for k in state if k not in denoiser)
    # Without keep_link the donor's link comes along (as in the shipped chain's relinks).
    moved = build_model(replace(stage, attach_keep_link=False)).state_dict()
    assert not torch.equal(moved["sd.llm2sd_mapper_queries"], ours["sd.llm2sd_mapper_queries"])
    with pytest.raises(InvalidInputError, match="'gdino' has no link"):
        build_model(replace(stage, attach_decoders=["gdino"]))
    wider = generation_model()  # a mapper of another width: the init model's link cannot sit in front of it
    wider.config.generation.mapper_ffn_dim *= 2
    wider = VisionLLMv2.from_config(wider.config, build_decoders(wider.config), wider.tokenizer)
    with pytest.raises(InvalidInputError, match="differs in shape"):
        attach_decoders(linked, wider, ["sd"], warm_start=True, keep_link=True)
    with pytest.raises(ValueError, match="attach_keep_link"):
        TrainConfig(init="a", attach="b", attach_keep_link=True)


def test_attach_named_decoders_replaces_them_only_over_the_same_llm():
    from visionllm2.model.errors import InvalidInputError
    from visionllm2.model.training.stages import attach_decoders

    torch.manual_seed(0)
    config = VisionLLMv2Config.preset("tiny")
    base = VisionLLMv2.from_config(config, None, Tokenizer.builtin())
    donor = VisionLLMv2.from_config(config, None, Tokenizer.builtin())
    donor.load_state_dict(base.state_dict())
    with torch.no_grad():  # the donor's run trained pose further; its detector drifted too
        for name, parameter in donor.named_parameters():
            if name.startswith(("unipose.", "emb_embeddings_pose", "gdino.", "emb_embeddings_det")):
                parameter.add_(0.5)
    merged = attach_decoders(base, donor, ["unipose"])
    state, base_state, donor_state = merged.state_dict(), base.state_dict(), donor.state_dict()
    from_donor = ("unipose.", "emb_embeddings_pose")
    assert all(torch.equal(state[k], donor_state[k]) for k in state if k.startswith(from_donor))
    assert all(torch.equal(state[k], base_state[k]) for k in state if not k.startswith(from_donor))
    with pytest.raises(InvalidInputError, match="not \\['pose'\\]"):
        attach_decoders(base, donor, ["pose"])
    with torch.no_grad():  # a donor over another LLM: its decoders read other hidden states
        next(donor.llm.parameters()).add_(1.0)
    with pytest.raises(InvalidInputError, match="same LLM"):
        attach_decoders(base, donor, ["unipose"])


def test_a_stage_can_warm_start_named_decoders_from_a_model_over_another_llm(tmp_path):
    torch.manual_seed(0)
    config = VisionLLMv2Config.preset("tiny")
    base = VisionLLMv2.from_config(config, None, Tokenizer.builtin())
    donor = VisionLLMv2.from_config(config, None, Tokenizer.builtin())  # other weights everywhere
    base.save_pretrained(str(tmp_path / "base"))
    donor.save_pretrained(str(tmp_path / "donor"))
    stage = TrainConfig(stage=2, init=str(tmp_path / "base"), attach=str(tmp_path / "donor"), attach_decoders=["gdino"])
    state = build_model(stage).state_dict()
    base_state, donor_state = base.state_dict(), donor.state_dict()
    warm = ("gdino.", "emb_embeddings_det")
    assert all(torch.equal(state[k], donor_state[k]) for k in state if k.startswith(warm))
    assert all(torch.equal(state[k], base_state[k]) for k in state if not k.startswith(warm))
    # New denoisers relinked to an LLM that already reads its [DET] queries: the queries stay the LLM's own.
    kept = build_model(replace(stage, attach_keep_tables=True)).state_dict()
    assert all(torch.equal(kept[k], donor_state[k]) for k in kept if k.startswith("gdino."))
    assert all(torch.equal(kept[k], base_state[k]) for k in kept if not k.startswith("gdino."))
    assert not torch.equal(base_state["emb_embeddings_det.weight"], donor_state["emb_embeddings_det.weight"])


def test_shipped_model_lookup(monkeypatch, tmp_path):
    from visionllm2.model import checkpoint
    from visionllm2.model.errors import CheckpointError

    assert checkpoint.shipped_model_dir("tiny") is None and checkpoint.shipped_model_dir("/some/dir") is None
    monkeypatch.setattr(checkpoint, "SHIPPED_MODELS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="reinstall"):
        checkpoint.shipped_model_dir("shapes")
    VisionLLMv2.from_config(VisionLLMv2Config.preset("tiny"), None, Tokenizer.builtin()).save_pretrained(str(tmp_path / "shapes"))
    assert checkpoint.shipped_model_dir("shapes") == tmp_path / "shapes"
    from visionllm2.sdk import Session

    assert Session.from_pretrained("shapes", device="cpu").model.config.preset_name == "tiny"


def test_the_slot_label_loss_asks_the_query_slots_to_name_their_label(tmp_path):
    from visionllm2.model.training.trainer import slot_label_loss

    torch.manual_seed(0)
    config = VisionLLMv2Config.preset("tiny")
    tokenizer = Tokenizer.builtin()
    model = VisionLLMv2.from_config(config, None, tokenizer)
    samples = fixed_source({"detect": 1.0}, count=2).batch(0, 2, 0, 1)
    batch, images, _ = samples_to_inputs(Processor(config, tokenizer), samples, tokenizer.pad_id)
    link = model(batch, images).link
    groups = link["gdino"]
    loss = slot_label_loss(model, link)

    def loss_by_hand(groups, names):  # group g's slots asked for the words of names[g] ("": no term)
        return torch.stack([-model.llm.lm_head(slots).log_softmax(-1)[:, tokenizer.encode_text(name)].mean()
                            for slots, name in zip(groups.states, names) if name]).mean()

    words = [tokenizer.encode_text(label) for label in groups.labels]  # the label alone, not the lead-in
    assert all(words) and all(len(w) < len(ids) for w, ids in zip(words, groups.label_ids))
    assert torch.allclose(loss, loss_by_hand(groups, groups.labels))
    loss.backward()  # it reaches the LLM and the query table, which is what it is for
    assert model.llm.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert model.emb_embeddings_det.weight.grad.abs().sum() > 0
    assert slot_label_loss(model, {}) is None
    # A grounding answer ("Yes, it is[GRD]…") names nothing before its routing token: no term from
    # it; given the questions' referring expressions, the [GRD] slots are asked for those words.
    grounding = fixed_source({"ground": 1.0}, count=2).batch(0, 2, 0, 1)
    batch, images, _ = samples_to_inputs(Processor(config, tokenizer), grounding, tokenizer.pad_id)
    link = model(batch, images).link
    assert slot_label_loss(model, link) is None
    def phrase_loss_by_hand(groups, phrases):  # each group's slots asked for its sample's phrase
        return loss_by_hand(groups, [phrases[row] for row in groups.sample_index.tolist()])

    expressions = [sample.meta["expression"] for sample in grounding]
    groups = link["gdino"]
    assert groups.routes == [T.GRD, T.GRD]
    assert torch.allclose(slot_label_loss(model, link, expressions), phrase_loss_by_hand(groups, expressions))
    assert slot_label_loss(model, link, [None, None]) is None
    assert slot_label_loss(model, link, expressions, routes=[T.DET]) is None  # only the routes asked
    # Generation groups ("Here it is[GEN]") are asked for their caption only when [GEN] is listed.
    generation = fixed_source({"generate": 1.0}, count=2).batch(0, 2, 0, 1)
    batch, images, _ = samples_to_inputs(Processor(config, tokenizer), generation, tokenizer.pad_id)
    link = model(batch, images).link
    captions = [sample.meta["caption"] for sample in generation]
    assert slot_label_loss(model, link, captions) is None
    groups = link[next(iter(link))]
    assert groups.routes == [T.GEN, T.GEN]
    assert torch.allclose(slot_label_loss(model, link, captions, routes=[T.GEN]), phrase_loss_by_hand(groups, captions))
    # An interactive group is named by its mark ("region1[DET]…"); with marks, its slots are asked
    # for the class of the object the mark covers instead, which is what the detector must find.
    from visionllm2.model.training.trainer import slot_phrases

    interactive = fixed_source({"interactive": 1.0}, count=2).batch(0, 2, 0, 1)
    batch, images, _ = samples_to_inputs(Processor(config, tokenizer), interactive, tokenizer.pad_id)
    link = model(batch, images).link
    groups = link["gdino"]
    assert [slot_phrases(s) for s in interactive] == [None, None]
    marks = [slot_phrases(s, marks=True) for s in interactive]
    named = iter(o.name for s in interactive for o in s.meta["objects"])  # the marks, in answer order
    # A mark's group is asked for what it covers; an earlier detection turn's groups keep their names
    # (which read "" in training: a label is looked for in the last answer only, so no term).
    asked = [next(named) if label.startswith("region") else label for label in groups.labels]
    assert any(label.startswith("region") for label in groups.labels) and marks[0]["region1"] in asked
    by_hand = loss_by_hand(groups, asked)
    assert torch.allclose(slot_label_loss(model, link, marks), by_hand)
    assert not torch.allclose(slot_label_loss(model, link), by_hand)  # without marks: asked for "region1"
    with pytest.raises(ValueError, match="link_label_routes"):
        TrainConfig(link_label_routes=["[DET]", "[NOPE]"])
    result = run(tmp_path, 2, 3, fixed_source({"detect": 1.0}), link_label_loss=0.5)
    assert all(np.isfinite(r["link_label"]) and r["link_label"] > 0 for r in result.records)
    with pytest.raises(ValueError, match="link_label_loss"):
        TrainConfig(link_label_loss=-1.0)


def test_the_shipped_models_configs_parse_and_chain():
    from pathlib import Path

    from visionllm2.model import training

    folder = Path(training.__file__).parent / "configs"
    configs = {path.stem: TrainConfig.from_dict(json.loads(path.read_text())) for path in folder.glob("shapes_*.json")}
    assert {"shapes_stage0", "shapes_stage1", "shapes_stage2g", "shapes_stage3h"} <= set(configs)
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text().replace("\\\n", " ")
    attached = re.findall(r"visionllm2 attach \S+ \S+ (\S+)", makefile.replace("$(SHAPES_RUNS)", "runs/shapes"))
    assert {"runs/shapes/release1", "runs/shapes/candidate_n"} <= set(attached)  # the models `attach` writes
    made = {config.output_dir + "/model" for config in configs.values()} | set(attached)
    for name, config in configs.items():  # every stage starts from what another stage (or the first release) wrote
        assert config.init is None or config.init in made, (name, config.init)
        assert config.attach is None or config.attach in made, (name, config.attach)


def test_a_stage_can_switch_the_region_encoder_to_image_relative_features(tmp_path):
    VisionLLMv2.from_config(VisionLLMv2Config.preset("tiny"), None, Tokenizer.builtin()).save_pretrained(str(tmp_path / "init"))
    kept = build_model(TrainConfig(stage=2, init=str(tmp_path / "init")))
    assert not kept.config.region.relative_to_image and not kept.region_encoder.relative_to_image
    switched = build_model(TrainConfig(stage=2, init=str(tmp_path / "init"), region_relative_to_image=True))
    assert switched.config.region.relative_to_image and switched.region_encoder.relative_to_image
    switched.save_pretrained(str(tmp_path / "out"))
    assert VisionLLMv2.from_pretrained(str(tmp_path / "out")).region_encoder.relative_to_image


def test_a_stage_can_set_the_detector_input_size(tmp_path):
    VisionLLMv2.from_config(VisionLLMv2Config.preset("tiny"), None, Tokenizer.builtin()).save_pretrained(str(tmp_path / "init"))
    kept = build_model(TrainConfig(stage=3, init=str(tmp_path / "init")))
    switched = build_model(TrainConfig(stage=3, init=str(tmp_path / "init"), detector_image_size=96))
    detector = switched.decoders()["gdino"]
    assert (detector.config.image_min_size, detector.config.image_max_size) == (96, 96)
    assert kept.config.detection.image_min_size != 96
    inputs = detector.preprocess([Image.new("RGB", (40, 20))])
    assert tuple(inputs.resized[0]) == (48, 96)  # (h, w): the longer side capped at 96
    switched.save_pretrained(str(tmp_path / "out"))
    assert VisionLLMv2.from_pretrained(str(tmp_path / "out")).config.detection.image_max_size == 96
    with pytest.raises(ValueError, match="detector_image_size"):
        TrainConfig(detector_image_size=0)


def test_a_stage_can_distil_the_denoisers_reading_into_the_link_and_logs_each_part_of_the_loss(tmp_path):
    from visionllm2.model.training.curves import curve_table

    generation_model().save_pretrained(str(tmp_path / "init"))
    assert build_model(TrainConfig(stage=3, init=str(tmp_path / "init"))).config.generation.distill_loss_weight == 0.0
    distilled = build_model(TrainConfig(stage=3, init=str(tmp_path / "init"), link_distill_loss=0.5))
    assert distilled.decoders()["sd"].config.distill_loss_weight == 0.5 == distilled.decoders()["ip2p"].config.distill_loss_weight
    torch.manual_seed(0)
    result = run(tmp_path, 3, 2, fixed_source({"generate": 1.0}), init=str(tmp_path / "init"), link_distill_loss=0.5)
    parts = [r for r in result.records if "sd" in r]
    assert parts and all(r["sd/distill"] > 0 and {"sd/diffusion", "sd/caption"} <= set(r) for r in parts)
    weight = distilled.config.generation.caption_loss_weight
    assert all(np.isclose(r["sd"], r["sd/diffusion"] + weight * r["sd/caption"] + 0.5 * r["sd/distill"], rtol=1e-4) for r in parts)
    assert VisionLLMv2.from_pretrained(str(result.model_dir)).config.generation.distill_loss_weight == 0.5
    header, _ = curve_table(tmp_path / "stage3" / "log.jsonl", 1, parts=True)
    assert header[:5] == ["steps", "lm", "sd", "sd/diffusion", "sd/caption"] and "sd/distill" in header
    assert "sd/distill" not in curve_table(tmp_path / "stage3" / "log.jsonl", 1)[0]
    from typer.testing import CliRunner

    from visionllm2.recipes.cli import app

    shown = CliRunner().invoke(app, ["curves", str(tmp_path / "stage3"), "--windows", "1", "--parts"])
    assert shown.exit_code == 0 and "sd/distill" in shown.output, shown.output  # one row per loss, names whole
    with pytest.raises(ValueError, match="link_distill_loss"):
        TrainConfig(link_distill_loss=-0.1)


def test_a_stage_can_weigh_the_pixels_an_edit_changes_and_the_model_keeps_the_setting(tmp_path):
    generation_model().save_pretrained(str(tmp_path / "init"))
    assert build_model(TrainConfig(stage=0, init=str(tmp_path / "init"))).config.editing.edit_region_weight == 0.0
    result = run(tmp_path, 0, 2, fixed_source({"edit": 1.0}), init=str(tmp_path / "init"), edit_region_weight=4.0,
                 freeze=["sd", "text_encoders"])
    assert all(np.isfinite(r["loss"]) for r in result.records)
    trained = VisionLLMv2.from_pretrained(str(result.model_dir))
    assert trained.config.editing.edit_region_weight == 4.0 == trained.decoders()["ip2p"].config.edit_region_weight
    assert trained.config.generation.edit_region_weight == 0.0  # [GEN] has no source to compare with
    with pytest.raises(ValueError, match="edit_region_weight"):
        TrainConfig(edit_region_weight=-1.0)


def test_a_stage_can_switch_what_the_editor_predicts_and_sampling_follows(tmp_path):
    generation_model().save_pretrained(str(tmp_path / "init"))
    switched = build_model(TrainConfig(stage=0, init=str(tmp_path / "init"), edit_prediction_type="v_prediction"))
    editor = switched.decoders()["ip2p"]
    assert editor.config.prediction_type == "v_prediction" == editor.scheduler.config.prediction_type
    assert switched.decoders()["sd"].config.prediction_type == "epsilon"  # [GEN] keeps its own
    clean, noise, timesteps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.tensor([10, 900])
    assert torch.allclose(editor.unet_target(clean, noise, timesteps),
                          editor.noise_scheduler.get_velocity(clean, noise, timesteps))  # trained towards v
    switched.save_pretrained(str(tmp_path / "out"))
    reloaded = VisionLLMv2.from_pretrained(str(tmp_path / "out")).decoders()["ip2p"]
    assert reloaded.scheduler.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="edit_prediction_type: expected one of"):
        TrainConfig(edit_prediction_type="sample")
    from_scratch = build_model(TrainConfig(stage=0, preset="shapes", edit_prediction_type="v_prediction",
                                           edit_region_weight=2.0))  # a preset takes the settings too
    assert from_scratch.config.editing.prediction_type == "v_prediction"
    assert from_scratch.decoders()["ip2p"].config.edit_region_weight == 2.0
    VisionLLMv2.from_config(VisionLLMv2Config.preset("tiny"), None, Tokenizer.builtin()).save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(ValueError, match=r"has no \[EDIT\] decoder \(it has \['gdino', 'unipose'\]\)"):
        build_model(TrainConfig(stage=3, init=str(tmp_path / "bare"), edit_region_weight=1.0))


def test_link_regression_fits_only_the_links_to_their_text_encoders_from_recorded_slot_states(tmp_path):
    from visionllm2.model.decoders.diffusion import DiffusionDecoder

    torch.manual_seed(0)
    generation_model().save_pretrained(str(tmp_path / "init"))
    config = TrainConfig(stage=3, init=str(tmp_path / "init"), output_dir=str(tmp_path / "fit"), tasks={"generate": 1.0, "edit": 1.0},
                         link_regression=True, link_regression_samples=48, steps=60, batch_size=8, log_every=20,
                         learning_rate=3e-3, warmup_steps=5, generate_history_rate=0.5)
    trainer = Trainer(config)
    assert trainer.optimizer is None  # fit_links optimises the links alone; no stage-wide optimizer is built
    result = trainer.train(progress=False)
    before, after = VisionLLMv2.from_pretrained(str(tmp_path / "init")), VisionLLMv2.from_pretrained(str(result.model_dir))
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])}
    link_keys = {k for k in before.state_dict() if k.split(".")[0] in ("sd", "ip2p")
                 and k.split(".")[1] in DiffusionDecoder.link_parts}
    assert changed == link_keys  # every link parameter moved, and nothing else did (LLM, tables, denoisers)
    first, last = result.records[0], result.records[-1]
    for name in ("sd", "ip2p"):  # the held-out error fell, logged with its share of the captions' spread
        assert last[f"{name}/held_out"] < 0.5 * first[f"{name}/held_out"]
        assert last[f"{name}/held_out_share"] < first[f"{name}/held_out_share"]
        assert len(after.decoders()[name].link_parameters()) == len([k for k in link_keys if k.startswith(f"{name}.")])
    log = [json.loads(line) for line in (tmp_path / "fit" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 20, 40, 60]
    assert Trainer(config).train(progress=False).model_dir == result.model_dir  # finished: a no-op
    with pytest.raises(ValueError, match="link_regression"):
        TrainConfig(stage=2, link_regression=True)
    with pytest.raises(InvalidInputError, match="no captioned"):
        Trainer(replace(config, output_dir=str(tmp_path / "none"), tasks={"detect": 1.0})).train(progress=False)
