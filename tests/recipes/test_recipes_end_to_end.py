"""Each recipe end to end on the tiny preset: typed outputs, every turn kept, hand-offs between turns,
files written, and bad input refused up front with a typed error."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import shapely
from PIL import Image

from visionllm2.model import tokens as T
from visionllm2.model.data.domains import render_domain
from visionllm2.recipes import detect_segment_edit as dse
from visionllm2.recipes import in_context as ic
from visionllm2.recipes import inspection, medical, remote_sensing
from visionllm2.sdk import (
    Box,
    Boxes,
    Images,
    InvalidImageError,
    InvalidInputError,
    InvalidPromptError,
    Mask,
    Masks,
    Point,
    Turn,
)

FAST_EDIT = {"num_inference_steps": 2, "seed": 0}


@pytest.fixture(scope="module")
def part() -> Image.Image:
    return render_domain("industrial", 3).image


# ------------------------------------------------------------------------------ detect → segment → edit
def test_detect_segment_edit_hands_boxes_to_segment_and_edits_only_inside_the_masks(edit_session, part):
    result = dse.detect_segment_edit(edit_session, part, ["scratch", "dent"], "make it red", edit_options=FAST_EDIT)
    assert [t.routes[0] for t in result.turns] == [T.DET, T.DET, T.EDIT] and edit_session.turns == []
    assert all(isinstance(t, Turn) for t in result.turns) and result.edit_skipped is None
    assert len(result.boxes) == 3 and len(result.segment.routes) == 3  # one region prompt per detection
    assert np.array_equal(result.boxes.xyxy, result.detect.boxes.xyxy)
    assert isinstance(result.masks, Masks) and result.masks.labels == result.boxes.labels
    assert result.masks.asked == ["scratch", "dent"] and result.masks.turn == result.segment.index
    assert isinstance(result.pictures, Images) and len(result.pictures) == 2 and result.after.size == part.size
    region, before, after = result.region, np.asarray(result.before), np.asarray(result.after)
    assert region.any() and np.array_equal(before[~region], after[~region]) and (before[region] != after[region]).any()
    assert result.before_after().size[0] > 2 * part.width and result.overlay().size == part.size
    assert dse.DetectSegmentEditResult.model_validate_json(result.to_json()) == result


def test_detect_segment_edit_on_many_images_gives_each_the_turns_it_gets_alone(edit_session, part, tmp_path):
    images = [part, render_domain("industrial", 5).image, render_domain("industrial", 6).image]
    broken = tmp_path / "broken.png"
    broken.write_text("nope")
    results, failures = dse.detect_segment_edit_many(edit_session, [images[0], broken, images[1], images[2]],
                                                     ["scratch", "dent"], "make it red", edit_options=FAST_EDIT,
                                                     batch_size=2)
    assert [f.source for f in failures] == [str(broken)] and len(results) == 3 and edit_session.turns == []
    for (_, got), image in zip(results, images):
        alone = dse.detect_segment_edit(edit_session, image, ["scratch", "dent"], "make it red", edit_options=FAST_EDIT)
        assert [t.text for t in got.turns] == [t.text for t in alone.turns] and got.edit_skipped == alone.edit_skipped
        assert got.masks.area.tolist() == alone.masks.area.tolist()
        assert got.edit.images.seeds == alone.edit.images.seeds  # the same seed for every image, as one call each
        assert np.abs(np.asarray(got.after, float) - np.asarray(alone.after, float)).max() <= 1


def test_without_an_edit_decoder_the_edit_is_skipped_with_the_reason(eager_session, part):
    result = dse.detect_segment_edit(eager_session, part, ["hole"], "make it red")
    assert result.edit is None and result.after is None and "cannot edit" in result.edit_skipped
    assert "[EDIT]" in result.edit_skipped and len(result.masks) == len(result.boxes) == 3
    assert [t.index for t in result.turns] == [0, 1]


def test_nothing_found_means_no_segment_turn_and_no_edit(tiny_session, part):
    result = dse.detect_segment_edit(tiny_session, part, ["scratch"], "make it red")
    assert len(result.boxes) == 0 and result.segment is None and len(result.masks) == 0
    assert result.edit_skipped == "nothing to edit: no scratch found" and result.turns == [result.detect]
    assert not result.region.any() and result.masks.image_size == part.size


@pytest.mark.parametrize("kwargs, error, match", [
    ({"classes": []}, InvalidPromptError, "at least one"),
    ({"instruction": "  "}, InvalidPromptError, "instruction"),
    ({"edit_options": {"steps": 2}}, InvalidPromptError, "edit_options"),
    ({"max_objects": 0}, InvalidInputError, "max_objects"),
    ({"min_score": 1.5}, InvalidInputError, "min_score"),
])
def test_detect_segment_edit_refuses_bad_input(eager_session, part, kwargs, error, match):
    arguments = {"classes": ["scratch"], "instruction": "make it red", **kwargs}
    with pytest.raises(error, match=match):
        dse.detect_segment_edit(eager_session, part, arguments.pop("classes"), **arguments)


# ------------------------------------------------------------------------------ in-context
def test_in_context_segments_targets_and_lists_unreadable_ones(eager_session, tmp_path, part):
    reference = render_domain("industrial", 4).image
    mask = np.zeros((128, 128), bool)
    mask[40:60, 40:70] = True
    targets = [tmp_path / "t1.png", tmp_path / "broken.png", tmp_path / "t2.png"]
    part.save(targets[0])
    targets[1].write_text("nope")
    render_domain("industrial", 5).image.save(targets[2])
    examples = [(reference, Box(10, 10, 50, 40)), (reference, Point(x=90, y=90)), (part, Mask(mask))]
    result = ic.in_context(eager_session, examples, targets, label="defect", nms_iou=1.0)
    assert [i.source for i in result.items] == [str(targets[0]), str(targets[2])]
    assert [(f.source, f.error) for f in result.failures] == [(str(targets[1]), "InvalidImageError")]
    assert [m.prompt for m in result.examples] == ["Box", "Point", "Mask"]
    assert [m.source for m in result.examples] == ["reference0", "reference0", "reference1"]
    assert result.examples[0].xyxy == (10, 10, 50, 40) and result.examples[2].area_px == 600
    item = result.items[0]
    assert item.turn.routes == [T.DET] * 3 and "examples" in item.turn.prompt
    assert len(item.masks) == 3 and set(item.masks.labels) == {"defect"} and item.masks.asked == ["defect"]
    assert isinstance(item.boxes, Boxes) and item.annotate(part).size == part.size
    assert ic.InContextResult.model_validate_json(result.to_json()) == result


def test_in_context_targets_in_batches_find_what_one_target_at_a_time_finds(eager_session, part):
    reference = render_domain("industrial", 4).image
    targets = [part, render_domain("industrial", 5).image, render_domain("industrial", 6).image]
    examples = [(reference, Box(10, 10, 50, 40)), (reference, Point(x=90, y=90))]
    alone = ic.in_context(eager_session, examples, targets, batch_size=1, nms_iou=1.0)
    batched = ic.in_context(eager_session, examples, targets, batch_size=3, nms_iou=1.0)
    for got, expected in zip(batched.items, alone.items, strict=True):
        assert got.turn.text == expected.turn.text and got.masks.labels == expected.masks.labels
        assert np.allclose(got.masks.boxes, expected.masks.boxes, atol=1e-2) and got.masks.area.tolist() == expected.masks.area.tolist()
    with pytest.raises(InvalidInputError, match="batch_size"):
        ic.in_context(eager_session, examples, targets, batch_size=0)


def test_in_context_dedupes_examples_that_find_the_same_thing():
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 2:10, 2:10] = masks[1, 2:10, 3:10] = masks[2, 12:18, 12:18] = True
    found = Masks(masks=masks, scores=[0.5, 0.9, 0.4], labels=["a"] * 3, image_size=(20, 20))
    kept = ic.dedupe(found, 0.5)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.4]) and np.array_equal(kept.masks, masks[1:])


def test_dedupe_by_intersection_over_the_smaller_drops_fragments_that_iou_keeps():
    masks = np.zeros((4, 40, 40), bool)
    masks[0, 5:25, 5:25] = True                   # an object, well scored
    masks[1, 10:14, 10:14] = True                 # a fragment lying on it: IoU 0.04, IoS 1
    masks[2, 20:30, 20:30] = True                 # a neighbour touching its corner: IoS 0.25
    masks[3, 10:14, 10:14] = True                 # the fragment again, but another class
    found = Masks(masks=masks, scores=[0.9, 0.5, 0.6, 0.5], labels=["a", "a", "a", "b"], image_size=(40, 40))
    assert len(ic.dedupe(found, 0.5)) == 4
    kept = ic.dedupe(found, 0.5, metric="ios")
    assert kept.labels == ["a", "a", "b"] and np.array_equal(kept.masks, masks[[0, 2, 3]])
    with pytest.raises(InvalidInputError, match="metric"):
        ic.dedupe(found, 0.5, metric="giou")


@pytest.mark.parametrize("examples, error, match", [
    ([], InvalidPromptError, "non-empty"),
    ([("x",)], InvalidPromptError, "pair"),
    ([(np.zeros((32, 32, 3), np.uint8), Box(40, 40, 60, 60))], InvalidPromptError, "overlap"),
    ([("missing.png", Point(x=1, y=1))], InvalidImageError, "missing.png"),
    ([(np.zeros((32, 32, 3), np.uint8), Point(x=1, y=1))] * 9, InvalidPromptError, "at most 8"),
])
def test_in_context_refuses_bad_examples(eager_session, part, examples, error, match):
    with pytest.raises(error, match=match):
        ic.in_context(eager_session, examples, [part])


# ------------------------------------------------------------------------------ inspection
def test_inspection_measures_defects_and_writes_reports(eager_session, parts_dir, tmp_path):
    report = inspection.inspect_parts(eager_session, parts_dir, ["scratch", "dent"], 0.05,
                                      inspection.Thresholds(max_count=3, max_area_mm2=1.0))
    assert [p.source for p in report.parts] == [str(parts_dir / "part1.png"), str(parts_dir / "part2.png")]
    assert [(f.source, f.error) for f in report.failures] == [(str(parts_dir / "broken.png"), "InvalidImageError")]
    part = report.parts[0]
    assert [t.routes[0] for t in part.turns] == [T.DET, T.DET] and len(part.defects) == len(part.masks) == 3
    assert [d.area_px for d in part.defects] == part.masks.area.tolist()
    assert all(d.area_mm2 == pytest.approx(d.area_px * 0.0025) for d in part.defects)
    assert part.passed == (max(d.area_mm2 for d in part.defects) <= 1.0) and part.passed == (not part.reasons)
    written = report.write(tmp_path / "report")
    assert [p.name for p in written] == ["inspection.json", "inspection.csv", "defects.csv"]
    rows = list(csv.DictReader(written[1].open()))
    assert [r["verdict"] for r in rows] == [*("pass" if p.passed else "fail" for p in report.parts), "error"]
    assert rows[0]["defects"] == "3" and int(rows[0]["count_scratch"]) + int(rows[0]["count_dent"]) == 3
    assert len(list(csv.DictReader(written[2].open()))) == 6
    assert inspection.InspectionReport.model_validate_json(written[0].read_text()) == report
    assert part.annotate(Image.open(parts_dir / "part1.png").convert("RGB")).size == (128, 128)


def test_a_part_with_nothing_found_passes_the_default_thresholds(tiny_session, part):
    result = inspection.inspect_part(tiny_session, part, ["crack"], 0.1)
    assert result.passed and result.defects == [] and result.segment is None and result.turns == [result.detect]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"pixel_size": 0}, InvalidInputError, "pixel_size"),
    ({"pixel_size": -0.05}, InvalidInputError, "pixel_size"),
    ({"defects": []}, InvalidPromptError, "at least one"),
    ({"defects": ["rust"]}, InvalidPromptError, "unknown"),
    ({"thresholds": {"per_class": {"hole": {"max_count": 0}}}}, InvalidInputError, "per_class"),
    ({"thresholds": {"max_area_mm2": -1}}, InvalidInputError, "max_area_mm2"),
])
def test_inspection_refuses_bad_input_before_any_turn(eager_session, part, kwargs, error, match):
    arguments = {"defects": ["scratch"], "pixel_size": 0.05, **kwargs}
    with pytest.raises(error, match=match):
        inspection.inspect_parts(eager_session, [part], **arguments)


def test_inspection_takes_any_word_without_a_vocabulary(eager_session, part):
    report = inspection.inspect_parts(eager_session, part, ["rust"], 0.05, vocabulary=None)
    assert report.parts[0].boxes.asked == ["rust"] and report.failures == []


# ------------------------------------------------------------------------------ medical
def test_medical_windows_16_bit_scans_measures_and_carries_the_disclaimer(eager_session, scans_dir, tmp_path):
    report = medical.measure_structures(eager_session, str(scans_dir / "*.png"), ["lesion", "kidney"], (0.7, 0.8))
    assert [i.source.rsplit("/", 1)[-1] for i in report.items] == ["slice16.png", "slice8.png"]
    assert [f.error for f in report.failures] == ["InvalidImageError"]
    scan16, scan8 = report.items
    assert scan16.window is not None and scan16.window[1] > 255 and scan8.window is None
    for finding, area in zip(scan16.findings, scan16.masks.area.tolist()):
        assert finding.area_px == area and finding.area_mm2 == pytest.approx(area * 0.56)
        assert finding.diameter_px == pytest.approx(2 * np.sqrt(area / np.pi))
        assert finding.diameter_mm == pytest.approx(2 * np.sqrt(area * 0.56 / np.pi))
    assert scan16.counts() == {"lesion": sum(f.label == "lesion" for f in scan16.findings),
                               "kidney": sum(f.label == "kidney" for f in scan16.findings)}
    assert scan16.turn.routes == [T.SEG, T.SEG] and report.disclaimer == medical.DISCLAIMER
    assert "not a medical device" in medical.DISCLAIMER and "does not diagnose" in medical.DISCLAIMER
    json_path, csv_path = report.write(tmp_path / "med")
    data = json.loads(json_path.read_text())
    assert data["disclaimer"] == medical.DISCLAIMER and csv_path.read_text().startswith(f"# {medical.DISCLAIMER}")
    words = json.dumps({k: v for k, v in data.items() if k != "disclaimer"}).lower()
    assert not any(w in words for w in ("diagnos", "malignan", "benign", "cancer", "tumour", "tumor"))
    assert medical.MedicalReport.model_validate_json(json_path.read_text()) == report


def test_medical_scans_in_batches_measure_what_one_scan_at_a_time_measures(eager_session, scans_dir):
    scans = [str(scans_dir / "slice16.png"), str(scans_dir / "zz_broken.png"), str(scans_dir / "slice8.png")] * 2
    alone = medical.measure_structures(eager_session, scans, ["lesion"], 0.7, batch_size=1, min_score=0.0)
    batched = medical.measure_structures(eager_session, scans, ["lesion"], 0.7, batch_size=3, min_score=0.0)
    assert [i.source for i in batched.items] == [i.source for i in alone.items] and len(batched.items) == 4
    assert [f.source for f in batched.failures] == [f.source for f in alone.failures] and len(batched.failures) == 2
    for got, expected in zip(batched.items, alone.items):
        assert [(f.label, f.area_px) for f in got.findings] == [(f.label, f.area_px) for f in expected.findings]
        assert got.turn.text == expected.turn.text and got.window == expected.window


@pytest.mark.parametrize("kwargs, error, match", [
    ({"pixel_spacing": 0}, InvalidInputError, "pixel_spacing"),
    ({"structures": []}, InvalidPromptError, "at least one"),
    ({"structures": ["lung"]}, InvalidPromptError, "unknown"),
    ({"window": (99, 1)}, InvalidInputError, "window"),
    ({"batch_size": 0}, InvalidInputError, "batch_size"),
])
def test_medical_refuses_bad_input(eager_session, kwargs, error, match):
    arguments = {"structures": ["lesion"], "pixel_spacing": 0.7, **kwargs}
    with pytest.raises(error, match=match):
        medical.measure_structures(eager_session, [np.zeros((32, 32), np.uint16)], **arguments)


# ------------------------------------------------------------------------------ remote sensing
def test_remote_sensing_tiles_merges_and_exports(eager_session):
    scene = render_domain("remote_sensing", 2, size=256).image
    result = remote_sensing.map_objects(eager_session, scene, ["building", "vehicle"], tile_size=128, overlap=32)
    assert len(result.tiles) == len(result.turns) == 9 and eager_session.turns == []
    assert all(t.routes == [T.SEG, T.SEG] and t.masks.image_size == (128, 128) for t in result.turns)
    assert result.image_size == (256, 256) and result.objects
    for obj in result.objects:
        assert obj.label in ("building", "vehicle") and obj.rotated_box is not None and obj.tiles
        assert obj.xyxy == pytest.approx(obj.geometry.bounds)
    masks = result.masks()
    assert masks.masks.shape == (len(result.objects), 256, 256)
    assert masks.area.tolist() == [int(o.area_px) for o in result.objects]
    geojson = result.to_geojson((0, 2, 0, 0, 0, -2))
    assert len(geojson["features"]) == len(result.objects) and geojson["coordinates"] == "map"
    first = shapely.geometry.shape(geojson["features"][0]["geometry"])
    assert first.area == pytest.approx(4 * result.objects[0].area_px)
    assert result.annotate(scene).size == (256, 256)
    assert remote_sensing.RemoteSensingResult.model_validate_json(result.to_json()) == result


def test_remote_sensing_tiles_in_batches_map_what_one_tile_at_a_time_maps(eager_session):
    scene = render_domain("remote_sensing", 3, size=256).image
    alone = remote_sensing.map_objects(eager_session, scene, ["building"], tile_size=128, overlap=32, batch_size=1)
    batched = remote_sensing.map_objects(eager_session, scene, ["building"], tile_size=128, overlap=32, batch_size=4)
    assert [t.text for t in batched.turns] == [t.text for t in alone.turns]
    assert [o.label for o in batched.objects] == [o.label for o in alone.objects] and alone.objects
    assert np.concatenate([o.xyxy for o in batched.objects]) == pytest.approx(np.concatenate([o.xyxy for o in alone.objects]))
    with pytest.raises(InvalidInputError, match="batch_size"):
        remote_sensing.map_objects(eager_session, scene, ["building"], tile_size=128, overlap=32, batch_size=0)


def test_roads_and_water_get_no_rotated_box(eager_session):
    scene = render_domain("remote_sensing", 2, size=128).image
    result = remote_sensing.map_objects(eager_session, scene, ["road"], tile_size=128, overlap=32)
    assert len(result.tiles) == 1 and all(o.rotated_box is None for o in result.objects)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"classes": []}, InvalidPromptError, "at least one"),
    ({"classes": ["tree"]}, InvalidPromptError, "unknown"),
    ({"overlap": 128}, InvalidInputError, "overlap"),
    ({"tile_size": 4}, InvalidInputError, "tile_size"),
    ({"merge_iou": 2.0}, InvalidInputError, "merge_iou"),
    ({"dedupe": -0.1}, InvalidInputError, "dedupe"),
])
def test_remote_sensing_refuses_bad_input(eager_session, kwargs, error, match):
    arguments = {"classes": ["building"], "tile_size": 128, "overlap": 32, **kwargs}
    with pytest.raises(error, match=match):
        remote_sensing.map_objects(eager_session, np.zeros((64, 64, 3), np.uint8), **arguments)
