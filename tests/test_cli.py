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
    assert result.exit_code == 2 and "--check" in result.output
