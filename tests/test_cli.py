import torch
from typer.testing import CliRunner

from visionllm2 import __version__
from visionllm2.recipes.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_doctor_reports_packages_and_devices():
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    for name in ("torch", "transformers", "supervision", "pycocotools"):
        assert name in result.output
    assert "CUDA" in result.output and "bfloat16" in result.output


def test_doctor_says_which_dtype_each_gpu_loads(monkeypatch):
    # No GPU here: a T4 (no native bfloat16) as torch would describe it.
    import contextlib
    from types import SimpleNamespace

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(name="Tesla T4",
                                                                                          total_memory=15 * 2**30))
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    result = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "cuda:0 Tesla T4, 15.0 GiB, bf16 emulated only; sessions load float16 here" in result.output


def test_convert_without_a_manifest_says_what_to_pass():
    result = runner.invoke(app, ["convert"])
    assert result.exit_code == 2 and "OFFICIAL_DIR OUT_DIR" in result.output


def test_demo_writes_pictures_transcript_and_a_resumable_session(tmp_path):
    import json

    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--model", "tiny", "--device", "cpu", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo"
    transcript = json.loads((out / "transcript.json").read_text())
    names = [t["prompt"].split()[0] for t in transcript["turns"]]
    assert names == ["Can", "Can", "How", "Can"] and transcript["turns"][3]["routes"][0] == "[POSE]"
    assert set(transcript["skipped"]) == {"generate", "edit"}  # tiny has no diffusion decoders: said, not hidden
    assert (out / "scene.png").is_file() and (out / "contact_sheet.png").is_file() and list(out.glob("turn0_detect_*.png"))
    assert (out / "session" / "session.json").is_file()


def test_demo_with_an_unknown_model_fails_clearly(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--model", "no-such-model"])
    assert result.exit_code == 2 and "no-such-model" in result.output
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--model", "tiny", "--dtype", "int8"])
    assert result.exit_code == 2 and "dtype: expected one of" in " ".join(result.output.split())


def test_train_then_eval_from_the_command_line(tmp_path):
    import json

    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--preset", "tiny", "--stage", "2", "--steps", "2", "--batch-size", "2",
                                 "--tasks", "detect=1,chat=1", "--cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "config.json").is_file() and len((out / "log.jsonl").read_text().splitlines()) >= 1
    assert json.loads((out / "train_config.json").read_text())["cpu"] is True  # --cpu: on the CPU though CUDA is present
    metrics = tmp_path / "metrics.json"
    result = runner.invoke(app, ["eval", "--model", str(out / "model"), "--tasks", "detect,ground,chat,generate",
                                 "--count", "2", "--json", str(metrics), "--details", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "(cpu, float32)" in " ".join(result.output.split())  # the title says where and in what dtype it ran
    assert "± 95 %" in result.output  # each headline metric's 95 % interval (– below two samples)
    saved = json.loads(metrics.read_text())
    assert set(saved["metrics"]) == {"detect", "ground", "chat"} and "generate" in saved["skipped"]
    per_form = [name for name in saved["metrics"]["chat"] if name != "exact_match" and name.endswith("_exact_match")]
    assert per_form and all(name in result.output for name in per_form)  # --details: every metric, not only headlines
    assert "bbox_AP75" in result.output
    assert all(0.0 <= v <= 1.0 for task in saved["metrics"].values() for v in task.values() if v >= 0)
    result = runner.invoke(app, ["curves", str(out), "--windows", "2"])
    assert result.exit_code == 0 and "steps" in result.output and "lm" in result.output


def test_train_and_eval_refuse_bad_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"stage": 2, "learning_rat": 1}')
    result = runner.invoke(app, ["train", "--config", str(bad), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "learning_rat" in result.output
    result = runner.invoke(app, ["train", "--preset", "tiny", "--stage", "7", "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "stage" in result.output
    result = runner.invoke(app, ["eval", "--model", "tiny", "--tasks", "juggle", "--count", "1"])
    assert result.exit_code == 2 and "juggle" in result.output
    result = runner.invoke(app, ["train", "--stage", "3", "--init", str(tmp_path / "none"), "--out", str(tmp_path / "z")])
    assert result.exit_code == 2 and "config.json" in result.output  # a typed message, not a traceback
    result = runner.invoke(app, ["train", "--preset", "tiny", "--attach-decoder", "gdino", "--out", str(tmp_path / "w")])
    assert result.exit_code == 2 and "attach_decoders" in result.output and "attach is" in result.output
    result = runner.invoke(app, ["train", "--preset", "tiny", "--freeze", "llm", "--freeze", "lm", "--out", str(tmp_path / "t")])
    assert result.exit_code == 2 and "freeze: unknown parts ['lm']" in result.output
    result = runner.invoke(app, ["train", "--preset", "tiny", "--stage", "0", "--tasks", "edit=1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "expected something to train" in " ".join(result.output.split())  # no denoisers
    result = runner.invoke(app, ["train", "--preset", "tiny", "--domains", "industrial=x", "--out", str(tmp_path / "v")])
    assert result.exit_code == 2 and "--domains: expected name=weight pairs" in result.output
    result = runner.invoke(app, ["train", "--preset", "tiny", "--domains", "industrial=3,lunar=1", "--out", str(tmp_path / "u")])
    assert result.exit_code == 2 and "unknown packs ['lunar']" in result.output
    for config, reason in ((tmp_path / "missing.json", "No such file"), (tmp_path / "broken.json", "Expecting")):
        if config.name == "broken.json":
            config.write_text("{")
        result = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "s")])
        flat = " ".join(result.output.split())  # rich wraps the message
        assert result.exit_code == 2 and "expected a TrainConfig JSON file" in flat and reason in flat
    result = runner.invoke(app, ["eval", "--model", "tiny", "--tasks", "detect", "--count", "1", "--dtype", "int4"])
    assert result.exit_code == 2 and "dtype: expected one of" in " ".join(result.output.split())
    result = runner.invoke(app, ["eval", "--model", "tiny", "--tasks", "detect", "--count", "1", "--dtype", "bf16"])
    where = "cuda" if torch.cuda.is_available() else "cpu"  # eval's default device
    assert result.exit_code == 0 and f"({where}, bfloat16)" in " ".join(result.output.split())
    result = runner.invoke(app, ["eval", "--model", "tiny", "--tasks", "detect", "--count", "0"])
    assert result.exit_code == 2 and "eval count: expected at least 1 sample per task, got 0" in " ".join(result.output.split())


def test_train_domains_option_takes_packs_or_weighted_packs():
    from visionllm2.recipes.cli import _parse_domains

    assert _parse_domains("industrial, medical") == ["industrial", "medical"]
    assert _parse_domains("industrial=3,medical=2,remote_sensing") == {"industrial": 3.0, "medical": 2.0,
                                                                       "remote_sensing": 1.0}


def test_data_export_writes_coco_that_trains(tmp_path):
    from pycocotools.coco import COCO

    result = runner.invoke(app, ["data", "--out", str(tmp_path / "ds"), "--count", "3", "--kind", "industrial"])
    assert result.exit_code == 0, result.output
    coco = COCO(str(tmp_path / "ds" / "annotations.json"))
    assert len(coco.getImgIds()) == 3 and len(list((tmp_path / "ds").glob("*.png"))) == 3
    result = runner.invoke(app, ["train", "--preset", "tiny", "--stage", "3", "--steps", "1", "--batch-size", "2",
                                 "--data", str(tmp_path / "ds" / "annotations.json"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "--kind", "volcano", "--out", str(tmp_path / "no")])
    assert result.exit_code == 2 and "volcano" in result.output


def test_attach_grafts_a_named_decoder_and_writes_the_display_settings(tmp_path):
    import json
    from dataclasses import replace

    import torch

    from visionllm2.model.config import GenerationConfig, VisionLLMv2Config
    from visionllm2.model.tokenizer import Tokenizer
    from visionllm2.model.visionllm import VisionLLMv2

    torch.manual_seed(0)
    config = replace(VisionLLMv2Config.preset("tiny"), generation=GenerationConfig.tiny(),
                     editing=GenerationConfig.tiny(edit=True))
    base = VisionLLMv2.from_config(config, None, Tokenizer.builtin())
    donor = VisionLLMv2.from_config(config, None, Tokenizer.builtin())
    donor.load_state_dict(base.state_dict())
    with torch.no_grad():
        for parameter in donor.unipose.parameters():
            parameter.add_(0.25)
    base.save_pretrained(str(tmp_path / "base"))
    donor.save_pretrained(str(tmp_path / "donor"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["attach", str(tmp_path / "base"), str(tmp_path / "donor"), str(out),
                                 "--decoder", "unipose", "--score-threshold", "0.2", "--duplicate-decay", "0.5",
                                 "--guidance-scale", "sd=2", "--guidance-scale", "ip2p=2.5",
                                 "--sampler", "sd=DDPMScheduler:50"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["detection"]["score_threshold"] == 0.2 and config["pose"]["score_threshold"] == 0.2
    assert config["detection"]["duplicate_decay"] == 0.5 and config["detection"]["duplicate_iou"] == 0.5
    assert config["pose"]["duplicate_decay"] == 0.5
    assert config["generation"]["guidance_scale"] == 2.0 and config["editing"]["guidance_scale"] == 2.5
    assert (config["generation"]["scheduler"], config["generation"]["num_inference_steps"]) == ("DDPMScheduler", 50)
    untouched = GenerationConfig.tiny(edit=True)
    assert (config["editing"]["scheduler"], config["editing"]["num_inference_steps"]) == (untouched.scheduler,
                                                                                          untouched.num_inference_steps)
    bad_settings = [("--guidance-scale", "SCALE", bad) for bad in ("sd", "sd=-1", "sd=inf", "sd=many", "gdino=2")]
    bad_settings += [("--sampler", "SCHEDULER:STEPS", bad) for bad in ("sd=DDPMScheduler", "sd=Nope:20", "sd=DDIMScheduler:0",
                                                                        "unipose=DDIMScheduler:20")]
    for option, form, bad in bad_settings:
        wrong = runner.invoke(app, ["attach", str(tmp_path / "base"), str(tmp_path / "donor"), str(tmp_path / "no"),
                                    option, bad])
        said = " ".join(wrong.output.split())  # rich wraps at the terminal's width
        assert wrong.exit_code == 2 and f"DECODER={form}" in said and f"got '{bad}'" in said, said
        assert not (tmp_path / "no").exists()
    wrong = runner.invoke(app, ["attach", str(tmp_path / "base"), str(tmp_path / "donor"), str(tmp_path / "no"),
                                "--duplicate-decay", "1.5"])
    assert wrong.exit_code == 2 and not (tmp_path / "no").exists()
    no_decoders = VisionLLMv2.from_config(replace(VisionLLMv2Config.preset("tiny"), detection=None, pose=None), None,
                                          Tokenizer.builtin())
    no_decoders.save_pretrained(str(tmp_path / "no_decoders"))
    wrong = runner.invoke(app, ["attach", str(tmp_path / "no_decoders"), str(tmp_path / "no_decoders"), str(tmp_path / "no"),
                                "--duplicate-decay", "0.5"])
    said = " ".join(wrong.output.split())
    assert wrong.exit_code == 2 and "--duplicate-decay: the combined model has no detection or pose decoder" in said, said
    assert not (tmp_path / "no").exists()
    merged = VisionLLMv2.from_pretrained(str(out))
    assert all(torch.equal(a, b) for a, b in zip(merged.unipose.parameters(), donor.unipose.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(merged.gdino.parameters(), base.gdino.parameters()))
    wrong = runner.invoke(app, ["attach", str(tmp_path / "base"), str(tmp_path / "donor"), str(out), "--decoder", "pose"])
    assert wrong.exit_code == 2 and "not ['pose']" in " ".join(wrong.output.split())


def test_train_warm_starts_a_decoder_from_another_model(tmp_path):
    import torch

    from visionllm2.model.config import VisionLLMv2Config
    from visionllm2.model.tokenizer import Tokenizer
    from visionllm2.model.visionllm import VisionLLMv2

    torch.manual_seed(0)
    base = VisionLLMv2.from_config(VisionLLMv2Config.preset("tiny"), None, Tokenizer.builtin())
    donor = VisionLLMv2.from_config(VisionLLMv2Config.preset("tiny"), None, Tokenizer.builtin())
    donor.load_state_dict(base.state_dict())
    with torch.no_grad():  # the donor's pose decoder was trained elsewhere; its LLM differs too
        for parameter in [*donor.unipose.parameters(), *donor.llm.parameters()]:
            parameter.add_(0.25)
    base.save_pretrained(str(tmp_path / "base"))
    donor.save_pretrained(str(tmp_path / "donor"))
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--stage", "3", "--init", str(tmp_path / "base"), "--attach", str(tmp_path / "donor"),
                                 "--attach-decoder", "unipose", "--tasks", "pose=1", "--steps", "1", "--batch-size", "2",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    trained = VisionLLMv2.from_pretrained(str(out / "model"))
    # One step moves the decoder by ~lr: it starts from the donor's, while the LLM stays the base's.
    assert all((a - b).abs().max() < 0.05 for a, b in zip(trained.unipose.parameters(), donor.unipose.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(trained.llm.parameters(), base.llm.parameters()))
