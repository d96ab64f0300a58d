"""Round trip: a tiny model written under the official key names in the official file layout
(.bin shards + index) converts back to identical outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from official_manifests import MANIFESTS
from typer.testing import CliRunner

from visionllm2.model.batch import collate
from visionllm2.model.checkpoint import alias_keys
from visionllm2.model.convert import map_official_key
from visionllm2.model.converter import convert_checkpoint
from visionllm2.model.errors import CheckpointError
from visionllm2.model.official import official_key, to_official_state_dict
from visionllm2.model.visionllm import VisionLLMv2
from visionllm2.recipes.cli import app


def write_official_layout(model: VisionLLMv2, directory: Path, extra: dict | None = None, drop: str | None = None) -> None:
    """Weights under official names, as two weights-only pickles and their index (like the release)."""
    aliases = alias_keys(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in aliases}
    official = to_official_state_dict(state) | (extra or {})
    official.pop(drop, None)
    keys = sorted(official)
    directory.mkdir(parents=True)
    weight_map = {}
    for index, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:]), start=1):
        name = f"pytorch_model-0000{index}-of-00002.bin"
        torch.save({k: official[k] for k in part}, directory / name)
        weight_map.update({k: name for k in part})
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.fixture()
def tiny_full(tiny_config, tokenizer):
    torch.manual_seed(0)
    return VisionLLMv2.from_config(tiny_config, tokenizer=tokenizer).eval()  # gdino and unipose included


def test_round_trip_through_the_official_layout_gives_identical_outputs(tmp_path, tiny_full, tiny_config, processor, rgb_image):
    from test_visionllm import detection_conversation

    write_official_layout(tiny_full, tmp_path / "official")
    assert any(k.startswith("vis_encoder.vision_model.") for k in json.loads(
        (tmp_path / "official" / "pytorch_model.bin.index.json").read_text())["weight_map"])
    out = convert_checkpoint(tmp_path / "official", tmp_path / "ours", config=tiny_config, tokenizer="builtin:words",
                             max_shard_bytes=2**20)
    assert len(list(out.glob("model-*.safetensors"))) > 1 and not (tmp_path / "ours.partial").exists()
    loaded = VisionLLMv2.from_pretrained(out).eval()
    batch = collate([detection_conversation(processor, rgb_image)], loaded.tokenizer.pad_id)
    with torch.no_grad():
        expected, got = tiny_full(batch, [rgb_image]), loaded(batch, [rgb_image])
    assert all(torch.equal(a, b) for a, b in zip(tiny_full.state_dict().values(), loaded.state_dict().values()))
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.decoder_outputs["gdino"].predictions[0].best_boxes,
                               expected.decoder_outputs["gdino"].predictions[0].best_boxes, atol=1e-4, rtol=0)


def test_converter_refuses_unknown_and_missing_keys_and_wrong_tokenizers(tmp_path, tiny_full, tiny_config):
    write_official_layout(tiny_full, tmp_path / "unknown", extra={"gdino.model.mystery.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="gdino.model.mystery.weight"):
        convert_checkpoint(tmp_path / "unknown", tmp_path / "out", config=tiny_config, tokenizer="builtin:words")
    write_official_layout(tiny_full, tmp_path / "missing", drop="vl_bridge.0.bias")
    with pytest.raises(CheckpointError, match="missing: vl_bridge.0.bias"):
        convert_checkpoint(tmp_path / "missing", tmp_path / "out", config=tiny_config, tokenizer="builtin:words")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    seven_b = tiny_config.from_dict(tiny_config.to_dict())
    seven_b.llm.vocab_size = 32026
    with pytest.raises(CheckpointError, match="32012"):
        convert_checkpoint(tmp_path / "unknown", tmp_path / "out", config=seven_b, tokenizer="builtin:words")
    with pytest.raises(CheckpointError, match="expected pytorch_model.bin.index.json"):
        convert_checkpoint(tmp_path, tmp_path / "out", config=tiny_config, tokenizer="builtin:words")


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_export_names_invert_the_rename_table_on_every_official_key(official, manifest):
    for key in json.loads((official / manifest).read_text()):
        ours = map_official_key(key)
        for part, name in enumerate(ours):
            assert official_key(name) == (key, part if len(ours) > 1 else None), key


def test_cli_converts_and_reports_errors(tmp_path, tiny_full):
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "expected pytorch_model.bin.index.json" in " ".join(result.output.split())
