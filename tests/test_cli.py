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


def test_convert_without_a_manifest_says_what_to_pass():
    result = runner.invoke(app, ["convert"])
    assert result.exit_code == 2 and "OFFICIAL_DIR OUT_DIR" in result.output


def test_demo_writes_pictures_transcript_and_a_resumable_session(tmp_path):
    import json

    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo"
    turns = json.loads((out / "transcript.json").read_text())
    assert [t["index"] for t in turns] == [0, 1, 2, 3] and turns[1]["routes"] == ["[GRD]"]
    assert (out / "scene.png").is_file() and list(out.glob("turn0_detect_*.png"))
    assert (out / "session" / "session.json").is_file()
