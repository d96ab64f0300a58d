"""``visionllm2 predict …`` through typer's CliRunner: one task over a folder in batches, files
written, broken inputs listed while the rest complete, bad options refused before the model loads."""

from __future__ import annotations

import csv
import json

import pytest
from test_recipes_cli import common_files
from typer.testing import CliRunner

from visionllm2.model.data.shapes import render_scene
from visionllm2.recipes.cli import app

runner = CliRunner()


def predict(*args: str, model: str = "shapes"):
    return runner.invoke(app, ["predict", *args, "--model", model])


@pytest.fixture()
def scenes_dir(tmp_path):
    """Five held-out scenes (odd seeds) and one file that is not an image."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    for seed in (1, 3, 5, 7, 9):
        render_scene(seed).image.save(folder / f"scene{seed}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    return folder


@pytest.mark.parametrize("task, args, kind", [
    ("detect", ["--classes", "red circle,blue square"], "boxes"),
    ("segment", ["--classes", "red circle"], "masks"),
    ("ground", ["--expression", "the red circle"], "boxes"),
])
def test_each_task_writes_what_one_picture_at_a_time_gives(scenes_dir, tmp_path, task, args, kind):
    from visionllm2.sdk import Session

    out = tmp_path / "out"
    result = predict(task, str(scenes_dir), *args, "--batch-size", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "5 of 6 inputs done" in result.output and "broken.png" in result.output
    record = common_files(out, 5, ["broken.png"])
    assert record["recipe"] == f"predict {task}" and record["task"] == task
    session = Session.from_pretrained("shapes", device="cpu")
    verb = getattr(session, task)
    value = args[1].split(",") if task != "ground" else args[1]
    for item in record["items"]:  # sorted by name: scene1, scene3, …
        session.reset()
        alone = verb(value, image=item["source"])
        (turn,) = item["turns"]
        assert turn["text"] == alone.text and turn["routes"] == alone.routes
        assert [r["kind"] for r in turn["results"]] == [r.kind for r in alone.results]
    found = [next(r for r in item["turns"][0]["results"] if r["kind"] == kind) for item in record["items"]]
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["annotations"]) == sum(len(r["labels"]) for r in found) > 0


def test_ask_writes_the_answers(scenes_dir, tmp_path):
    out = tmp_path / "out"
    result = predict("ask", str(scenes_dir), "--question", "How many shapes are there?", "--batch-size", "4",
                     "--max-new-tokens", "8", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "answers.csv").open()))
    assert [row["input"].rsplit("/", 1)[-1] for row in rows] == [f"scene{s}.png" for s in (1, 3, 5, 7, 9)]
    assert all(row["question"] == "How many shapes are there?" and row["answer"] for row in rows)


def test_pose_draws_the_figures(tmp_path):
    from visionllm2.model.data.figures import render_figures

    folder = tmp_path / "figures"
    folder.mkdir()
    for seed in (1, 3, 5):
        render_figures(seed, kind="dog").image.save(folder / f"dog{seed}.png")
    out = tmp_path / "out"
    result = predict("pose", str(folder), "--classes", "dog", "--keypoints", "nose,tail", "--out", str(out))
    assert result.exit_code == 0, result.output
    record = common_files(out, 3, [])
    assert all(item["turns"][0]["results"][0]["kind"] == "poses" for item in record["items"])


@pytest.mark.parametrize("args, message", [
    (["detect", "--classes", ","], "predict: --classes: expected non-empty strings"),
    (["detect", "--classes", "car", "--batch-size", "0"], "--batch-size"),
    (["detect", "--classes", "car", "--min-score", "2"], "--min-score"),
    (["ground", "--expression", " "], "--expression"),
    (["pose", "--classes", "cat"], "--keypoints"),
    (["ask", "--question", ""], "--question"),
    (["ask", "--question", "hi", "--max-new-tokens", "0"], "max_new_tokens"),
    (["edit", "--instruction", " "], "--instruction"),
    (["edit", "--instruction", "make it red", "--steps", "0"], "num_inference_steps"),
])
def test_bad_options_are_refused_before_the_model_loads(scenes_dir, tmp_path, args, message):
    task, *rest = args
    result = predict(task, str(scenes_dir), *rest, "--out", str(tmp_path / "out"), model="no/such/model")
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()


def test_edit_writes_each_edited_picture_with_the_same_seed(scenes_dir, tmp_path):
    import numpy as np
    from PIL import Image

    from visionllm2.sdk import Session

    out = tmp_path / "out"
    result = predict("edit", str(scenes_dir), "--instruction", "make the circle green", "--seed", "3", "--steps", "2",
                     "--batch-size", "3", "--device", "cpu", "--out", str(out))  # the session below's device and dtype
    assert result.exit_code == 0, result.output
    record = json.loads((out / "transcript.json").read_text())
    assert len(record["items"]) == 5 and [f["source"].rsplit("/", 1)[-1] for f in record["failures"]] == ["broken.png"]
    assert len(list((out / "annotated").glob("*.png"))) == 5 and len(list(out.glob("*_edited.png"))) == 5
    session = Session.from_pretrained("shapes", device="cpu")
    for item in record["items"][:2]:
        (turn,) = item["turns"]
        assert turn["results"][0]["seeds"] == [3]
        session.reset()
        alone = session.edit("make the circle green", image=item["source"], seed=3, num_inference_steps=2).images.images[0]
        picture = Image.open(item["source"])
        written = Image.open(out / f"{item['source'].rsplit('/', 1)[-1].removesuffix('.png')}_edited.png")
        expected = np.asarray(alone.resize(picture.size), float)
        assert np.abs(np.asarray(written.convert("RGB"), float) - expected).max() <= 2
