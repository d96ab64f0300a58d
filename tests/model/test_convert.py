import pytest
from official_manifests import MANIFESTS
from typer.testing import CliRunner

from visionllm2.model.convert import CORE_PREFIXES, check_manifest, load_manifest, map_official_key
from visionllm2.model.errors import CheckpointError
from visionllm2.recipes.cli import app


def test_rename_rules():
    assert map_official_key("vis_encoder.vision_model.pre_layrnorm.weight") == ["vis_encoder.pre_layrnorm.weight"]
    assert map_official_key("llm.model.norm.weight") == ["llm.model.norm.weight"]
    assert map_official_key("gdino.model.backbone.x.relative_position_index") == []


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_core_prefixes_map_completely(official, manifest):
    report = check_manifest(load_manifest(official / manifest), CORE_PREFIXES)
    assert report.ok and report.official == report.mapped == 702


def test_cli_check_exit_codes(official):
    runner = CliRunner()
    ok = runner.invoke(app, ["convert", "--check", str(official / MANIFESTS[0])])
    assert ok.exit_code == 0, ok.output
    for prefix in ("gdino", "unipose", "sd,ip2p"):
        every = runner.invoke(app, ["convert", "--check", str(official / MANIFESTS[0]), "--prefix", prefix])
        assert every.exit_code == 0, every.output
    nothing = runner.invoke(app, ["convert", "--check", str(official / MANIFESTS[0]), "--prefix", "no_such_part"])
    assert nothing.exit_code == 1  # no key selected is a failure, not a vacuous pass


def test_check_against_a_synthetic_manifest_reports_each_problem(tmp_path):
    manifest = {
        "vl_bridge.0.weight": [[4096, 1024], "bfloat16"],
        "vl_bridge.0.bias": [[4095], "bfloat16"],
        "vl_bridge.9.weight": [[1], "bfloat16"],
    }
    report = check_manifest(manifest, ("vl_bridge",))
    assert report.mapped == 1 and len(report.mismatched) == 1 and len(report.missing) == 1
    assert report.unexpected == ["vl_bridge.2.bias", "vl_bridge.2.weight"] and not report.ok
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="key: \\[shape, dtype\\]"):
        load_manifest(tmp_path / "bad.json")


def test_the_kept_manifest_copies_equal_the_originals_beside_the_checkout():
    import gzip

    from official_manifests import BESIDE, COPIES

    if not BESIDE.is_dir():
        pytest.skip("no ../shared/official beside this checkout to compare the copies with")
    for name in MANIFESTS:
        assert gzip.decompress((COPIES / f"{name}.gz").read_bytes()) == (BESIDE / name).read_bytes(), name
