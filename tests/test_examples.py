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
