import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs_and_writes_its_files(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), "--out", str(tmp_path)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5 turns" in result.stdout
    assert (tmp_path / "detections.coco.json").is_file() and (tmp_path / "session" / "session.json").is_file()
    assert list(tmp_path.glob("turn2_*_masks.png")) and list(tmp_path.glob("turn3_*_poses.png"))


def test_agent_plan_runs_offline_and_writes_its_files(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "agent_plan.py"), "--out", str(tmp_path)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5 steps; lineage of save_result_1: ['edit_1', 'load_image_1', 'segment_1', 'detect_1']" in result.stdout
    for name in ("scene.png", "plan.json", "run.json", "edited.png"):
        assert (tmp_path / name).is_file(), name


def _run_recipe_example(name: str, out: Path) -> str:
    """Run examples/recipe_{name}.py on the tiny preset (random weights: typed results, files written)."""
    result = subprocess.run([sys.executable, str(EXAMPLES / f"recipe_{name}.py"), "tiny", "--out", str(out)],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_recipe_detect_segment_edit_example(tmp_path):
    stdout = _run_recipe_example("detect_segment_edit", tmp_path)
    assert "found; edit" in stdout  # tiny has no edit decoder and finds nothing at its 0.3 threshold
    for name in ("before.png", "masks.png", "before_after.png", "result.json"):
        assert (tmp_path / name).is_file(), name


def test_recipe_in_context_example(tmp_path):
    assert "3 targets" in _run_recipe_example("in_context", tmp_path)
    assert (tmp_path / "reference.png").is_file() and len(list(tmp_path.glob("target*.png"))) == 3


def test_recipe_inspection_example(tmp_path):
    assert "6 parts:" in _run_recipe_example("inspection", tmp_path)
    assert (tmp_path / "inspection.csv").read_text().count("\n") == 7 and len(list(tmp_path.glob("*_checked.png"))) == 6


def test_recipe_medical_example(tmp_path):
    stdout = _run_recipe_example("medical", tmp_path)
    assert "4 slices measured" in stdout and "not a medical device" in stdout
    assert (tmp_path / "medical.json").is_file() and len(list(tmp_path.glob("*_masks.png"))) == 4


def test_recipe_remote_sensing_example(tmp_path):
    assert "9 tiles;" in _run_recipe_example("remote_sensing", tmp_path)
    for name in ("mosaic.png", "mapped.png", "objects_pixels.geojson", "objects_map.geojson"):
        assert (tmp_path / name).is_file(), name


def test_many_pictures_batches_and_streams_on_the_shipped_model(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "many_pictures.py"), "--out", str(tmp_path), "--pictures", "5"],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "of 5 pictures: a box for the asked object, then its mask in turn 1" in result.stdout
    assert "streamed: " in result.stdout and list(tmp_path.glob("scene*_masks.png"))
    coco = json.loads((tmp_path / "detections.coco.json").read_text())
    assert len(coco["images"]) == 5 and coco["categories"] and len(list(tmp_path.glob("scene??.png"))) == 5
