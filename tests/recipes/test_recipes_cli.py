"""``visionllm2 recipe …`` through typer's CliRunner on the tiny preset: files written, failures listed
while the other inputs complete, and clear errors (exit 2) for bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from visionllm2.model.data.domains import render_domain
from visionllm2.recipes.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["recipe", *args, "--model", "tiny"])


def common_files(out: Path, done: int, failed: list[str]) -> dict:
    """The files every command writes; returns the transcript."""
    assert len(list((out / "annotated").glob("*.png"))) == done
    assert (out / "contact_sheet.png").is_file()
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["images"]) == done and all("file_name" in image for image in coco["images"])
    record = json.loads((out / "transcript.json").read_text())
    assert len(record["items"]) == done and all(item["turns"] for item in record["items"])
    assert [Path(f["source"]).name for f in record["failures"]] == failed
    assert all(f["error"] == "InvalidImageError" for f in record["failures"])
    return record


def test_inspect_writes_reports_and_lists_the_broken_file(parts_dir, tmp_path):
    out = tmp_path / "out"
    result = invoke("inspect", str(parts_dir), "--pixel-size", "0.05", "--defects", "scratch,dent",
                    "--class-max-count", "dent=1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "2 of 3 inputs done" in result.output and "broken.png" in result.output
    record = common_files(out, 2, ["broken.png"])
    assert record["recipe"] == "inspection" and record["pixel_size"] == [0.05, 0.05]
    assert [t["routes"][0] for t in record["items"][0]["turns"]] == ["[DET]"]  # tiny finds nothing: no segment turn
    report = json.loads((out / "inspection.json").read_text())
    assert report["thresholds"]["per_class"] == {"dent": {"max_count": 1, "max_area_mm2": None}}
    assert (out / "inspection.csv").read_text().count("\n") == 4 and (out / "defects.csv").is_file()


@pytest.mark.parametrize("args, message", [
    (["--pixel-size", "0"], "pixel_size"),
    (["--pixel-size", "0.05", "--defects", "rust"], "unknown"),
    (["--pixel-size", "0.05", "--defects", ","], "at least one"),
    (["--pixel-size", "0.05", "--class-max-area", "dent"], "CLASS=NUMBER"),
    (["--pixel-size", "0.05", "--batch-size", "0"], "--batch-size"),
])
def test_inspect_refuses_bad_options(parts_dir, tmp_path, args, message):
    result = invoke("inspect", str(parts_dir), *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_missing_folder_or_an_unmatched_glob_is_a_clear_error(tmp_path):
    for source, message in [(tmp_path / "nowhere", "does not exist"), (tmp_path / "*.png", "no match")]:
        result = invoke("medical", str(source), "--pixel-spacing", "0.7", "--out", str(tmp_path / "out"))
        assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_a_batch_of_only_broken_files_exits_1(tmp_path):
    (tmp_path / "a.png").write_text("x")
    result = invoke("inspect", str(tmp_path / "a.png"), "--pixel-size", "0.1", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "0 of 1 inputs done" in result.output


def test_medical_prints_the_disclaimer_and_writes_its_report(scans_dir, tmp_path):
    out = tmp_path / "out"
    result = invoke("medical", str(scans_dir), "--pixel-spacing", "0.7,0.7", "--structures", "lesion", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "not a medical device" in " ".join(result.output.split())
    record = common_files(out, 2, ["zz_broken.png"])
    assert record["disclaimer"].startswith("Research output, not a medical device")
    assert json.loads((out / "medical.json").read_text())["structures"] == ["lesion"]


@pytest.mark.parametrize("args, message", [(["--pixel-spacing", "0"], "pixel_spacing"),
                                           (["--pixel-spacing", "0.7", "--batch-size", "0"], "--batch-size")])
def test_medical_refuses_bad_options(scans_dir, tmp_path, args, message):
    result = invoke("medical", str(scans_dir), *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and message in result.output


def test_remote_sensing_writes_geojson_per_image(tmp_path):
    folder = tmp_path / "tiles"
    folder.mkdir()
    render_domain("remote_sensing", 1, size=200).image.save(folder / "city.png")
    out = tmp_path / "out"
    result = invoke("remote-sensing", str(folder), "--classes", "building,vehicle", "--tile-size", "128",
                    "--overlap", "32", "--geotransform", "500000,0.5,0,4100000,0,-0.5", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "4 tiles" in result.output
    record = common_files(out, 1, [])
    assert len(record["items"][0]["turns"]) == 4 and record["tile_size"] == 128
    geojson = json.loads((out / "000_city.geojson").read_text())
    assert geojson["type"] == "FeatureCollection" and geojson["geotransform"] == [500000, 0.5, 0, 4100000, 0, -0.5]


@pytest.mark.parametrize("args, message", [
    (["--overlap", "300"], "overlap"),
    (["--geotransform", "1,2,3"], "--geotransform"),
    (["--geotransform", "0,1,2,0,2,4"], "geotransform"),
    (["--classes", "tree"], "unknown"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_remote_sensing_refuses_bad_options(tmp_path, args, message):
    render_domain("remote_sensing", 1, size=64).image.save(tmp_path / "a.png")
    result = invoke("remote-sensing", str(tmp_path / "a.png"), *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_detect_segment_edit_records_the_skipped_edit(parts_dir, tmp_path):
    out = tmp_path / "out"
    result = invoke("detect-segment-edit", str(parts_dir / "*.png"), "--classes", "scratch", "--instruction",
                    "make it red", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "edit skipped" in result.output
    record = common_files(out, 2, ["broken.png"])
    assert record["instruction"] == "make it red"
    assert sorted(p.name for p in out.glob("*_before_after.png")) == ["000_part1_before_after.png",
                                                                      "001_part2_before_after.png"]


def test_in_context_takes_examples_on_reference_images(parts_dir, tmp_path):
    reference = tmp_path / "ref.png"
    render_domain("industrial", 7).image.save(reference)
    out = tmp_path / "out"
    result = invoke("in-context", str(parts_dir), "--example", f"{reference}@10,10,40,40", "--example",
                    f"{reference}@64,64", "--label", "defect", "--out", str(out))
    assert result.exit_code == 0, result.output
    record = common_files(out, 2, ["broken.png"])
    assert [e["prompt"] for e in record["examples"]] == ["Box", "Point"] and record["label"] == "defect"
    summary = json.loads((out / "in_context.json").read_text())
    assert summary["label"] == "defect" and [e["source"] for e in summary["examples"]] == [str(reference)] * 2


@pytest.mark.parametrize("example, more, message", [("ref.png", [], "REF_IMAGE@"), ("{ref}@1,2,3", [], "--example"),
                                                    ("{ref}@500,500", [], "inside"),
                                                    ("{ref}@1,2", ["--batch-size", "0"], "--batch-size")])
def test_in_context_refuses_bad_options(parts_dir, tmp_path, example, more, message):
    reference = tmp_path / "ref.png"
    render_domain("industrial", 7).image.save(reference)
    result = invoke("in-context", str(parts_dir), "--example", example.format(ref=reference), *more, "--out",
                    str(tmp_path / "out"))
    assert result.exit_code == 2 and message in " ".join(result.output.split())


def test_each_recipe_command_takes_a_device_and_a_dtype(parts_dir, tmp_path):
    result = invoke("inspect", str(parts_dir), "--pixel-size", "0.05", "--device", "cpu", "--dtype", "bfloat16",
                    "--out", str(tmp_path / "half"))
    assert result.exit_code == 0 and "2 of 3 inputs done" in result.output, result.output
    for args, message in [(["--dtype", "int8"], "dtype: expected one of"), (["--device", "tpu:9"], "device: expected")]:
        result = invoke("inspect", str(parts_dir), "--pixel-size", "0.05", *args, "--out", str(tmp_path / "bad"))
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    for command in ("detect-segment-edit", "in-context", "inspect", "medical", "remote-sensing"):
        help_text = runner.invoke(app, ["recipe", command, "--help"], env={"COLUMNS": "200"}).output
        assert "--device" in help_text and "--dtype" in help_text, command
        assert "--batch-size" in help_text, command
