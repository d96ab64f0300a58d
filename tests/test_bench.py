"""Benchmarks run and print their tables (on the random tiny preset, a few samples: the figures are the
shipped model's business, this only keeps the scripts from rotting)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a benchmark script, wide enough that its tables do not wrap."""
    return subprocess.run([sys.executable, str(BENCH / script), *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def bench_output(script: str, *args: str) -> str:
    """What a benchmark script that must succeed prints."""
    result = run_bench(script, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def table_rows(output: str) -> list[list[str]]:
    """The stripped cells of every table row printed."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if line.startswith("│")]


def test_vqa_probe_prints_both_tables():
    output = bench_output("vqa_probe.py", "--model", "tiny", "--questions", "12", "--scenes", "12")
    assert "VQA per kind of question" in output and "What the picture tokens carry" in output
    for row in ("vision tower", "vl_bridge", "LLM", "most frequent class"):
        assert row in output


def test_edit_probe_prints_the_truth_the_editor_and_the_link():
    # The tiny preset has no denoisers; the shipped model's are small enough for three samples.
    output = bench_output("edit_probe.py", "--samples", "3", "--first", "1000", "--guidance", "1,2.5")
    assert "[EDIT] checker accuracy, 3 held-out instructions from 1000" in output
    assert [row[0] for row in table_rows(output)] == ["the truth", *["editor alone", "through the link"] * 2]
    samplers = bench_output("edit_probe.py", "--samples", "2", "--first", "1000", "--skip-link",
                            "--sampler", "DDIMScheduler:4,DDPMScheduler:3")
    assert [row[:2] for row in table_rows(samplers)][1:] == [["editor alone", "DDIMScheduler:4"],
                                                             ["editor alone", "DDPMScheduler:3"]]


def test_interactive_probe_prints_both_ways_of_choosing_each_marks_answer():
    output = bench_output("interactive_probe.py", "--samples", "3", "--first", "1000")
    assert "interactive segmentation, held out from 1000: shapes" in output
    assert "by score alone" in output and "score × mark coverage" in output
    rows = {name: cells for name, *cells in table_rows(output)}
    first_turn = rows["mIoU, first turn (3 samples)"]
    assert all(0.0 <= float(value) <= 1.0 for value in first_turn + rows["mIoU, after a detection turn"])


def test_detection_probe_prints_each_decay_and_refuses_a_bad_one():
    output = bench_output("detection_probe.py", "--samples", "4", "--first", "1000", "--decay", "1,0.5",
                          "--pose-samples", "3", "--ground-samples", "4")
    assert "detection, 4 held-out samples from 1000: shapes" in output
    *rows, pose_1, pose_half, ranks = table_rows(output)
    assert "pose, 3 held-out figure scenes from 1000" in output
    assert [pose_1[0], pose_half[0]] == ["1", "0.5"] and float(pose_half[2]) <= float(pose_1[2])
    assert "grounding, 4 held-out expressions from 1000" in output and "k = 1 (the answer)" in output
    assert [float(share) for share in ranks] == sorted(float(share) for share in ranks)  # more queries, more found
    assert [row[0] for row in rows] == ["1", "0.5"]
    assert all(0.0 <= float(value) <= 1.0 for row in rows for value in row[1:3])
    assert float(rows[1][3]) <= float(rows[0][3])  # softened repeats fall below the display threshold
    bad = run_bench("detection_probe.py", "--decay", "2", timeout=120)
    assert bad.returncode == 2 and "expected decays between 0 and 1" in bad.stderr


def test_ask_probe_prints_each_task_and_phrasing_and_refuses_an_unknown_task():
    output = bench_output("ask_probe.py", "--samples", "2", "--tasks", "detect,ground")
    assert "free ask, 2 held-out requests per task from 1000: shapes" in output
    *rows, words = table_rows(output)  # the second table: teacher-forced colour, shape and other words
    assert "teacher-forced over 2 held-out samples" in " ".join(output.split())  # rich wraps titles
    assert len(words) == 3 and all(0.0 <= float(share) <= 1.0 for share in words)
    assert [row[:2] for row in rows] == [["detect", "trained"], ["detect", "please detect"],
                                         ["detect", "find … in the image"], ["detect", "where are"],
                                         ["ground", "trained"], ["ground", "find"], ["ground", "which object"]]
    for task, _, *shares in rows:  # grounding writes no class names: only its route column is filled
        filled = [float(share) for share in shares if share]
        assert len(filled) == (3 if task == "detect" else 1) and all(0.0 <= share <= 1.0 for share in filled)
    refused = run_bench("ask_probe.py", "--tasks", "detect,dance", timeout=120)
    assert refused.returncode == 2 and "unknown ['dance']" in refused.stderr


def test_dtype_check_prints_each_verb_in_both_dtypes():
    output = bench_output("dtype_check.py", "--repeats", "1", "--device", "cpu")
    assert "shapes on cpu: float32 and bfloat16" in output
    rows = {row[0]: row[-1] for row in table_rows(output)}
    assert list(rows) == ["detect", "segment", "ground", "interactive", "ask", "pose", "generate", "edit"]
    assert rows["detect"].startswith("box IoU") and rows["pose"].startswith("keypoints")
    assert rows["generate"].startswith("pixels") and rows["ask"] in ("same text", "other text")


def test_batch_throughput_prints_each_verb_one_at_a_time_and_batched_with_equal_answers():
    # On the CPU, where batches answer exactly; bfloat16 on an H200 moved detect's boxes by 0.375 px.
    output = bench_output("batch_throughput.py", "--pictures", "4", "--batch-sizes", "1,3", "--verbs",
                          "detect,interactive,pose,ask,generate", "--device", "cpu")
    assert "shapes on cpu (float32): 4 pictures per verb" in output
    rows = table_rows(output)
    assert [(row[0], row[1]) for row in rows] == [(verb, how) for verb in ("detect", "interactive", "pose", "ask", "generate")
                                                   for how in ("one at a time", "batch 1", "batch 3")]
    for row in rows:
        assert float(row[2]) > 0 and (row[1] == "one at a time" or row[4] == "0.0000 px, 0 texts differ"), row


def test_batch_throughput_times_each_recipe_at_each_batch_size():
    output = bench_output("batch_throughput.py", "--pictures", "2", "--batch-sizes", "2", "--verbs", "detect",
                          "--recipes", "2")
    rows = {row[0]: row[1:] for row in table_rows(output) if len(row) == 3}
    assert list(rows) == ["inspection (detect → segment)", "medical", "in-context (2 examples)", "remote sensing (tiles)",
                          "detect → segment → edit"]
    assert all(float(seconds) > 0 and ratio.startswith("×") for seconds, ratio in rows.values())


def test_step_ops_counts_a_training_steps_ops_by_the_line_that_issued_them():
    output = bench_output("step_ops.py", "--model", "tiny", "--group", "gdino", "--steps", "1", "--batch-size", "2",
                          "--top", "4")
    assert "tiny, gdino, batch 2:" in output and "ops per step" in output
    rows = table_rows(output)
    assert len(rows) == 4 and all(int(row[0].replace(",", "")) > 0 and row[1].endswith("%") for row in rows)
    assert any("model/decoders/detection" in row[2] for row in rows)  # the detector's own lines show
    refused = run_bench("step_ops.py", "--model", "tiny", "--group", "gdino", "--pretrain")
    assert refused.returncode == 2 and "expected --group sd or ip2p" in refused.stderr


def test_train_budget_trains_for_its_seconds_and_writes_only_the_moved_tensors(tmp_path):
    import json

    from safetensors.torch import load_file

    config = tmp_path / "stage.json"
    config.write_text(json.dumps({"stage": 3, "preset": "tiny", "output_dir": str(tmp_path / "run"), "tasks": {"detect": 1},
                                  "steps": 1000, "batch_size": 2, "warmup_steps": 2, "seed": 3}))
    bench_output("train_budget.py", str(config), "3", str(tmp_path / "out"))
    summary, *steps = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert summary["steps"] == len(steps) >= 1 and summary["changed_tensors"] > 0
    moved = load_file(tmp_path / "out.safetensors")
    assert len(moved) == summary["changed_tensors"] and all(t.dtype.is_floating_point for t in moved.values())
    assert {name.split(".")[0] for name in moved} <= {"gdino", "emb_embeddings_det"}  # stage 3: the detector alone
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_gpu_check_says_at_once_that_it_needs_a_gpu_where_there_is_none(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the whole check (minutes)")
    result = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), str(tmp_path / "out")], check=False, cwd=BENCH.parent,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 4 and "expected a CUDA GPU" in result.stderr
    assert not list((tmp_path / "out").iterdir())  # nothing ran


def test_tower_learning_trains_each_tower_on_the_counts_and_prints_its_scores():
    for tower in ("random", "hybrid", "conv"):
        output = bench_output("tower_learning.py", "--model", "tiny", "--tower", tower, "--minutes", "0.02",
                              "--every", "0.5", "--heldout", "8", "--batch-size", "2")
        assert f"{tower} tower of tiny, told each shape's count" in output and "prior (every shape absent)" in output
        rows = table_rows(output)
        counts, readout = rows[:-2], {row[0]: row[1:] for row in rows[-2:]}
        assert counts[0][1:4] == ["0", "0", "-"] and int(counts[-1][1]) > 0  # scored before training and after it
        assert all(0 <= float(row[4]) <= 1 and 0 <= float(row[5]) <= float(row[4]) for row in counts)
        words = " ".join(output.split())  # titles wrap to their table's width
        assert "read back from the token over its centre" in words
        assert list(readout) == ["most frequent class", "ridge readout"]
        assert all(0 <= float(value) <= 1 for values in readout.values() for value in values)


def test_train_throughput_profiles_one_stage_and_refuses_a_group_the_stage_lacks():
    output = bench_output("train_throughput.py", "--preset", "tiny", "--profile", "1:lm", "--steps", "1",
                          "--batch-size", "2", "--top", "5")
    assert "preset tiny, stage 1, lm, batch 2, 1 profiled steps" in output
    assert "Self CPU" in output and "aten::" in output
    refused = run_bench("train_throughput.py", "--profile", "3:lm")
    assert refused.returncode == 2 and "expected STAGE:GROUP, one of 0:sd" in refused.stderr
