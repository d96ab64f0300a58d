"""Benchmarks run and print their tables (on the random tiny preset, a few samples: the figures are the
shipped model's business, this only keeps the scripts from rotting)."""

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_vqa_probe_prints_both_tables():
    result = subprocess.run([sys.executable, str(BENCH / "vqa_probe.py"), "--model", "tiny", "--questions", "12",
                             "--scenes", "12"], check=False, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "VQA per kind of question" in result.stdout and "What the picture tokens carry" in result.stdout
    for row in ("vision tower", "vl_bridge", "LLM", "most frequent class"):
        assert row in result.stdout


def test_edit_probe_prints_the_truth_the_editor_and_the_link():
    # The tiny preset has no denoisers; the shipped model's are small enough for three samples.
    result = subprocess.run([sys.executable, str(BENCH / "edit_probe.py"), "--samples", "3", "--first", "1000",
                             "--guidance", "1,2.5"], check=False, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[EDIT] checker accuracy, 3 held-out instructions from 1000" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["the truth", *["editor alone", "through the link"] * 2]


def test_interactive_probe_prints_both_ways_of_choosing_each_marks_answer():
    result = subprocess.run([sys.executable, str(BENCH / "interactive_probe.py"), "--samples", "3", "--first", "1000"],
                            check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "interactive segmentation, held out from 1000: shapes" in result.stdout
    assert "by score alone" in result.stdout and "score × mark coverage" in result.stdout
    rows = {row.split("│")[1].strip(): [cell.strip() for cell in row.split("│")[2:-1]]
            for row in result.stdout.splitlines() if row.startswith("│")}
    first_turn = rows["mIoU, first turn (3 samples)"]
    assert all(0.0 <= float(value) <= 1.0 for value in first_turn + rows["mIoU, after a detection turn"])


def test_detection_probe_prints_each_decay_and_refuses_a_bad_one():
    result = subprocess.run([sys.executable, str(BENCH / "detection_probe.py"), "--samples", "4", "--first", "1000",
                             "--decay", "1,0.5", "--pose-samples", "3", "--ground-samples", "4"], check=False,
                            capture_output=True, text=True,
                            timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "detection, 4 held-out samples from 1000: shapes" in result.stdout
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.stdout.splitlines() if line.startswith("│")]
    *rows, pose_1, pose_half, ranks = rows
    assert "pose, 3 held-out figure scenes from 1000" in result.stdout
    assert [pose_1[0], pose_half[0]] == ["1", "0.5"] and float(pose_half[2]) <= float(pose_1[2])
    assert "grounding, 4 held-out expressions from 1000" in result.stdout and "k = 1 (the answer)" in result.stdout
    assert [float(share) for share in ranks] == sorted(float(share) for share in ranks)  # more queries, more found
    assert [row[0] for row in rows] == ["1", "0.5"]
    assert all(0.0 <= float(value) <= 1.0 for row in rows for value in row[1:3])
    assert float(rows[1][3]) <= float(rows[0][3])  # softened repeats fall below the display threshold
    bad = subprocess.run([sys.executable, str(BENCH / "detection_probe.py"), "--decay", "2"], check=False,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "expected decays between 0 and 1" in bad.stderr


def test_ask_probe_prints_each_task_and_phrasing_and_refuses_an_unknown_task():
    result = subprocess.run([sys.executable, str(BENCH / "ask_probe.py"), "--samples", "2", "--tasks", "detect,ground"],
                            check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "free ask, 2 held-out requests per task from 1000: shapes" in result.stdout
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in result.stdout.splitlines() if line.startswith("│")]
    *rows, words = rows  # the second table: teacher-forced colour, shape and other words
    assert "teacher-forced over 2 held-out samples" in " ".join(result.stdout.split())  # rich wraps titles
    assert len(words) == 3 and all(0.0 <= float(share) <= 1.0 for share in words)
    assert [row[:2] for row in rows] == [["detect", "trained"], ["detect", "please detect"],
                                         ["detect", "find … in the image"], ["detect", "where are"],
                                         ["ground", "trained"], ["ground", "find"], ["ground", "which object"]]
    for task, _, *shares in rows:  # grounding writes no class names: only its route column is filled
        filled = [float(share) for share in shares if share]
        assert len(filled) == (3 if task == "detect" else 1) and all(0.0 <= share <= 1.0 for share in filled)
    refused = subprocess.run([sys.executable, str(BENCH / "ask_probe.py"), "--tasks", "detect,dance"],
                             check=False, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "unknown ['dance']" in refused.stderr


def test_dtype_check_prints_each_verb_in_both_dtypes():
    result = subprocess.run([sys.executable, str(BENCH / "dtype_check.py"), "--repeats", "1", "--device", "cpu"],
                            check=False, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "shapes on cpu: float32 and bfloat16" in result.stdout
    rows = {row.split("│")[1].strip(): row.split("│")[-2].strip() for row in result.stdout.splitlines()
            if row.startswith("│")}
    assert list(rows) == ["detect", "segment", "ground", "interactive", "ask", "pose", "generate", "edit"]
    assert rows["detect"].startswith("box IoU") and rows["pose"].startswith("keypoints")
    assert rows["generate"].startswith("pixels") and rows["ask"] in ("same text", "other text")
