"""The recipes' pure parts, exactly: tiling, seam merging, rotated boxes, GeoJSON, mm², windows, compositing,
verdicts and input checks. No model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import shapely
from PIL import Image
from shapely import affinity
from shapely.geometry import box as shapely_box

from visionllm2.model.data.domains import render_domain
from visionllm2.recipes import tiling
from visionllm2.recipes._common import check_names, gather_images, merge_coco
from visionllm2.recipes.detect_segment_edit import composite_inside
from visionllm2.recipes.inspection import Defect, Limits, Thresholds, verdict
from visionllm2.recipes.measure import area_mm2, as_pixel_size, equivalent_diameter, window_to_8bit
from visionllm2.sdk import Boxes, InvalidImageError, InvalidInputError, InvalidPromptError, Masks


# ------------------------------------------------------------------------------------ tiling
def test_tile_grid_covers_the_image_with_full_tiles_that_overlap():
    tiles = tiling.tile_grid((300, 200), 128, 32)
    assert [t.xyxy for t in tiles] == [(0, 0, 128, 128), (96, 0, 224, 128), (172, 0, 300, 128),
                                       (0, 72, 128, 200), (96, 72, 224, 200), (172, 72, 300, 200)]
    assert [t.index for t in tiles] == list(range(6)) and all(t.size == (128, 128) for t in tiles)
    covered = np.zeros((200, 300), int)
    for t in tiles:
        covered[t.y0:t.y1, t.x0:t.x1] += 1
    assert covered.min() >= 1


def test_an_image_smaller_than_a_tile_is_one_tile():
    assert [t.xyxy for t in tiling.tile_grid((100, 50), 128, 32)] == [(0, 0, 100, 50)]


@pytest.mark.parametrize("tile_size, overlap", [(128, 128), (128, -1), (8, 0), (128.0, 0), (128, 2.5)])
def test_bad_tiling_is_refused(tile_size, overlap):
    with pytest.raises(InvalidInputError, match="tile_size|overlap"):
        tiling.tile_grid((300, 300), tile_size, overlap)


def _tiled(full: np.ndarray, labels: list[str], tiles: list[tiling.Tile], scores=None) -> list[tiling.Instance]:
    """What a perfect model answers per tile: each full mask cropped to the tile, shifted back."""
    scores = scores or [0.9] * len(full)
    found = []
    for tile in tiles:
        crops = full[:, tile.y0:tile.y1, tile.x0:tile.x1]
        seen = crops.any(axis=(1, 2))
        masks = Masks(masks=crops[seen], scores=np.asarray(scores)[seen], labels=[lab for lab, s in zip(labels, seen) if s],
                      image_size=tile.size)
        found += tiling.tile_instances(masks, tile)
    return found


def test_a_building_across_a_seam_merges_into_one_exact_polygon():
    tiles = tiling.tile_grid((200, 100), 128, 28)  # windows x 0–128 and 72–200
    full = np.zeros((1, 100, 200), bool)
    full[0, 20:50, 100:160] = True  # crosses x = 128, the first tile's edge
    instances = _tiled(full, ["building"], tiles)
    assert len(instances) == 2 and instances[0].geometry.area == 28 * 30
    merged = tiling.merge_instances(instances, tiles)
    assert len(merged) == 1
    only = merged[0]
    assert only.geometry.geom_type == "Polygon" and only.geometry.area == full.sum() and only.tiles == [0, 1]
    assert only.geometry.equals(shapely_box(100, 20, 160, 50)) and only.xyxy == (100, 20, 160, 50)


def test_seam_merging_keeps_neighbours_apart_and_rasterises_back_exactly():
    """A 2×2 grid: one object over both seams, one wholly in the overlap (seen whole twice), two
    buildings either side of a seam, and a vehicle on a building's spot (another class)."""
    tiles = tiling.tile_grid((200, 200), 120, 40)  # windows 0–120 and 80–200 on both axes
    full = np.zeros((5, 200, 200), bool)
    full[0, 60:140, 70:150] = True     # over both seams
    full[1, 10:30, 90:110] = True      # inside the overlap band: both top tiles see all of it
    full[2, 160:180, 40:70] = True     # left of x = 80 …
    full[3, 160:180, 125:150] = True   # … and right of x = 120: two buildings
    full[4, 100:110, 100:120] = True   # a vehicle where building 0 is
    labels = ["building", "building", "building", "building", "vehicle"]
    merged = tiling.merge_instances(_tiled(full, labels, tiles), tiles)
    assert sorted(m.label for m in merged) == sorted(labels)
    back = Masks.from_polygons([m.geometry for m in merged], (200, 200), [m.label for m in merged])
    expected = {(lab, full[k].tobytes()) for k, lab in enumerate(labels)}
    assert {(lab, mask.tobytes()) for lab, mask in zip(back.labels, back.masks)} == expected
    centre = next(m for m in merged if m.geometry.area == 80 * 80)
    assert centre.tiles == [0, 1, 2, 3] and centre.geometry.geom_type == "Polygon"


def test_tiles_that_only_touch_merge_shapes_meeting_along_the_seam():
    tiles = tiling.tile_grid((200, 100), 100, 0)
    full = np.zeros((2, 100, 200), bool)
    full[0, 20:50, 80:160] = True   # across x = 100
    full[1, 70:80, 90:100] = True   # ends at the seam: nothing on the other side
    merged = tiling.merge_instances(_tiled(full, ["building", "building"], tiles), tiles)
    assert sorted(m.geometry.area for m in merged) == [100, 80 * 30]
    assert next(m for m in merged if m.geometry.area == 2400).tiles == [0, 1]


def test_duplicates_are_merged_by_intersection_over_the_smaller_shape():
    tiles = tiling.tile_grid((100, 100), 100, 0)
    masks = np.zeros((4, 100, 100), bool)
    masks[0, 10:50, 10:50] = True   # an object
    masks[1, 11:50, 10:50] = True   # the same object again, better scored
    masks[2, 20:26, 20:26] = True   # a fragment lying on it (IoU 0.02, IoS 1): merged, adding nothing
    masks[3, 45:60, 45:60] = True   # a neighbour touching its corner: IoS 25 / 225
    instances = _tiled(masks, ["building"] * 4, tiles, scores=[0.4, 0.8, 0.7, 0.3])
    merged = tiling.merge_instances(instances, tiles, dedupe=0.5)
    assert [m.score for m in merged] == pytest.approx([0.8, 0.3])
    assert len(tiling.merge_instances(instances, tiles, dedupe=1.0)) == 4
    other = _tiled(masks[2:3], ["vehicle"], tiles)   # another class is never a duplicate
    assert sorted(m.label for m in tiling.merge_instances(instances + other, tiles)) == ["building"] * 2 + ["vehicle"]


def test_a_scrap_one_tile_saw_of_an_object_its_neighbour_saw_whole_joins_it():
    tiles = tiling.tile_grid((200, 100), 128, 56)   # x 0–128 and 72–200 share 72–128
    whole = np.zeros((100, 128), bool)
    whole[40:60, 30:50] = True        # tile 1 sees the object whole: x 102–122
    fragment = np.zeros((100, 128), bool)
    fragment[42:50, 104:110] = True   # tile 0 sees a scrap of it, x 104–110: IoU in the window 0.12
    instances = [*tiling.tile_instances(Masks(masks=fragment[None], scores=[0.9], labels=["building"],
                                                  image_size=(128, 100)), tiles[0]),
                 *tiling.tile_instances(Masks(masks=whole[None], scores=[0.6], labels=["building"],
                                              image_size=(128, 100)), tiles[1])]
    merged = tiling.merge_instances(instances, tiles)
    assert len(merged) == 1 and merged[0].geometry.area == 400 and merged[0].tiles == [0, 1]
    assert merged[0].score == pytest.approx(0.9)  # the scrap scored higher; the whole shape is kept all the same


def test_tile_instances_drop_stray_specks_but_keep_the_object():
    tile = tiling.tile_grid((64, 64), 64, 0)[0]
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:20, 10:18] = True   # the object, 80 px
    masks[0, 50, 60] = masks[0, 40:42, 2] = True   # specks of 1 and 2 px far from it
    masks[1, 30:32, 30] = True      # a mask that is only a speck
    found = Masks(masks=masks, scores=[0.9, 0.8], labels=["building"] * 2, image_size=(64, 64))
    instances = tiling.tile_instances(found, tile, min_area=4.0)
    assert len(instances) == 1 and instances[0].geometry.area == 80
    assert instances[0].geometry.bounds == (10, 10, 18, 20)   # the specks no longer stretch its box
    assert len(tiling.tile_instances(found, tile, min_area=1.0)) == 2


# ------------------------------------------------------------------------------------ rotated boxes
def test_rotated_box_of_an_axis_aligned_rectangle():
    box = tiling.rotated_box(shapely_box(100, 20, 160, 50))
    assert {tuple(c) for c in box.corners} == {(100, 20), (160, 20), (160, 50), (100, 50)}
    assert (box.length, box.width, box.angle) == (60, 30, 0)


@pytest.mark.parametrize("degrees", [30.0, 120.0])
def test_rotated_box_recovers_a_rotated_rectangle(degrees):
    shape = affinity.rotate(shapely_box(-30, -10, 30, 10), degrees, origin=(0, 0))
    box = tiling.rotated_box(affinity.translate(shape, 100, 100))
    assert box.length == pytest.approx(60) and box.width == pytest.approx(20)
    assert box.angle == pytest.approx(degrees)
    assert shapely.Polygon(box.corners).symmetric_difference(affinity.translate(shape, 100, 100)).area < 1e-6


def test_rotated_box_of_a_rasterised_rotated_building():
    shape = affinity.translate(affinity.rotate(shapely_box(-20, -8, 20, 8), 35, origin=(0, 0)), 64, 64)
    mask = Masks.from_polygons([shape], (128, 128), ["building"])
    box = tiling.rotated_box(mask.to_polygons()[0])
    assert abs(box.angle - 35) < 3 and abs(box.length - 40) < 2.5 and abs(box.width - 16) < 2.5


def test_rotated_box_needs_an_area():
    with pytest.raises(InvalidInputError, match="area"):
        tiling.rotated_box(shapely.Polygon())


# ------------------------------------------------------------------------------------ GeoJSON
def test_geojson_in_pixels_and_through_a_geotransform():
    merged = [tiling.Merged("building", 0.9, shapely_box(100, 20, 160, 50), [0, 1])]
    rotated = {0: tiling.rotated_box(merged[0].geometry)}
    pixel = tiling.to_geojson(merged, None, rotated)
    assert pixel["coordinates"] == "pixel" and "geotransform" not in pixel
    feature = pixel["features"][0]
    assert shapely.geometry.shape(feature["geometry"]).equals(merged[0].geometry)
    assert feature["properties"] == {**feature["properties"], "label": "building", "area_px": 1800.0,
                                     "bbox_px": [100, 20, 160, 50], "tiles": [0, 1], "length_px": 60.0}
    mapped = tiling.to_geojson(merged, (1000, 0.5, 0, 2000, 0, -0.5), rotated)
    geometry = shapely.geometry.shape(mapped["features"][0]["geometry"])
    assert mapped["coordinates"] == "map" and mapped["geotransform"] == [1000, 0.5, 0, 2000, 0, -0.5]
    assert geometry.bounds == (1050, 1975, 1080, 1990) and geometry.area == 1800 * 0.25
    ring = mapped["features"][0]["properties"]["rotated_box"]
    assert ring[0] == ring[-1] and {tuple(p) for p in ring} == {(1050, 1990), (1080, 1990), (1080, 1975), (1050, 1975)}
    json.dumps(mapped)


def test_pixel_to_map_applies_all_six_terms():
    move = tiling.pixel_to_map((10, 2, 1, 20, 0.5, -3))
    assert move(np.array([[4.0, 6.0], [0.0, 0.0]])).tolist() == [[10 + 8 + 6, 20 + 2 - 18], [10, 20]]


@pytest.mark.parametrize("bad", [(1, 2, 3, 4, 5), (0, 1, 0, 0, 0, float("nan")), (0, 1, 2, 0, 2, 4), "x"])
def test_bad_geotransforms_are_refused(bad):
    with pytest.raises(InvalidInputError, match="geotransform"):
        tiling.check_geotransform(bad)


# ------------------------------------------------------------------------------------ measurements
def test_pixel_sizes_areas_and_diameters():
    assert as_pixel_size(0.05) == (0.05, 0.05) and as_pixel_size((0.1, 0.2)) == (0.1, 0.2)
    assert area_mm2(400, 0.05) == pytest.approx(1.0) and area_mm2(100, (0.1, 0.2)) == pytest.approx(2.0)
    assert equivalent_diameter(math.pi * 25) == pytest.approx(10.0)
    assert np.allclose(equivalent_diameter(np.array([math.pi, 4 * math.pi])), [2, 4])


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, float("nan"), float("inf"), "0.1", (0.1,), (0.1, 0), True, None])
def test_zero_negative_or_odd_pixel_sizes_are_refused(bad):
    with pytest.raises(InvalidInputError, match="pixel_size"):
        as_pixel_size(bad)


def test_a_16_bit_ramp_windows_linearly_to_8_bits():
    values = np.arange(0, 1001, dtype=np.uint16).reshape(7, 143)
    picture, used = window_to_8bit(Image.fromarray(values), (0, 100))
    assert used == (0, 1000) and picture.mode == "RGB"
    gray = np.asarray(picture)[..., 0]
    assert np.array_equal(gray, np.rint(values.astype(float) * 255 / 1000).astype(np.uint8))
    assert np.array_equal(np.asarray(picture)[..., 2], gray)


def test_percentile_window_ignores_a_hot_pixel_and_handles_flat_scans():
    rng = np.random.default_rng(0)
    values = rng.integers(1000, 2001, (64, 64)).astype(np.uint16)
    values[3, 3] = 65535
    gray = np.asarray(window_to_8bit(values)[0])[..., 0]
    assert gray[3, 3] == 255 and np.percentile(np.delete(gray.ravel(), 3 * 64 + 3), 99) >= 250
    flat, used = window_to_8bit(np.full((8, 8), 5000, np.uint16))
    assert used == (5000, 5000) and not np.asarray(flat).any()
    rgb = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    same, none = window_to_8bit(rgb)
    assert none is None and np.array_equal(np.asarray(same), np.asarray(rgb))
    with pytest.raises(InvalidInputError, match="window"):
        window_to_8bit(values, (60, 40))
    with pytest.raises(InvalidImageError, match="NaN"):
        window_to_8bit(np.array([[0.0, np.nan]]))


def test_a_16_bit_scan_windows_to_what_the_8_bit_scan_shows():
    scan16 = render_domain("medical", 5, bit_depth=16).image
    scan8 = np.asarray(render_domain("medical", 5).image)[..., 0].astype(float)
    shown = np.asarray(window_to_8bit(scan16)[0])[..., 0].astype(float)
    assert scan16.mode == "I;16" and np.corrcoef(shown.ravel(), scan8.ravel())[0, 1] > 0.99


# ------------------------------------------------------------------------------------ compositing, verdicts
def test_edits_land_only_inside_the_region():
    rng = np.random.default_rng(1)
    original = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    edited = Image.new("RGB", (16, 16), (255, 0, 0))  # the edit decoder's own size
    region = np.zeros((40, 60), bool)
    region[5:20, 10:30] = True
    out = np.asarray(composite_inside(original, edited, region))
    assert np.array_equal(out[~region], np.asarray(original)[~region])
    assert (out[region] == [255, 0, 0]).all()
    with pytest.raises(InvalidImageError, match="region"):
        composite_inside(original, edited, region.T)


def _defect(label: str, area: float) -> Defect:
    return Defect(label=label, score=0.9, xyxy=(0, 0, 1, 1), area_px=int(area * 100), area_mm2=area)


def test_verdicts_by_count_area_and_class():
    found = [_defect("dent", 0.5), _defect("dent", 0.7), _defect("crack", 0.2)]
    assert verdict([], Thresholds()) == (True, [])
    assert verdict(found, Thresholds()) == (False, ["3 part defects > max 0"])
    assert verdict(found, Thresholds(max_count=3, max_area_mm2=1.0)) == (True, [])
    passed, reasons = verdict(found, Thresholds(max_count=None, max_area_mm2=0.6,
                                                per_class={"crack": Limits(max_count=0), "dent": Limits(max_count=2)}))
    assert not passed and reasons == ["dent of 0.7 mm² > max 0.6 mm²", "1 crack defects > max 0"]
    with pytest.raises(InvalidInputError, match="max_count"):
        Thresholds(max_count=-1)


# ------------------------------------------------------------------------------------ inputs, outputs
def test_class_lists_are_checked():
    assert check_names("scratch, dent", "defects") == ["scratch", "dent"]
    for bad, match in [([], "at least one"), (["", "dent"], "non-empty"), (["dent", "dent"], "once"), (3, "list")]:
        with pytest.raises(InvalidPromptError, match=match):
            check_names(bad, "defects")
    with pytest.raises(InvalidPromptError, match=r"unknown \['rust'\]"):
        check_names(["rust"], "defects", ("scratch", "dent"))


def test_gathering_images_from_files_folders_and_globs(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in gather_images(tmp_path)] == ["a.jpg", "b.png"]
    assert [p.name for p in gather_images(str(tmp_path / "*.png"))] == ["b.png"]
    assert [p.name for p in gather_images(tmp_path / "notes.txt")] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    for source, match in [(tmp_path / "missing", "does not exist"), (tmp_path / "empty", "got none"),
                          (str(tmp_path / "*.gif"), "no match")]:
        with pytest.raises(InvalidInputError, match=match):
            gather_images(source)


def test_one_coco_document_for_a_batch():
    a = Boxes(xyxy=[[0, 0, 2, 2], [1, 1, 3, 3]], scores=[0.9, 0.8], labels=["dent", "crack"], image_size=(8, 8))
    b = Boxes(xyxy=[[0, 0, 4, 4]], scores=[0.7], labels=["dent"], image_size=(16, 8))
    coco = merge_coco([("a.png", a), ("b.png", b)], ["scratch", "dent"])
    assert [c["name"] for c in coco["categories"]] == ["scratch", "dent", "crack"]
    assert [(i["id"], i["file_name"], i["width"]) for i in coco["images"]] == [(1, "a.png", 8), (2, "b.png", 16)]
    assert [(x["id"], x["image_id"], x["category_id"]) for x in coco["annotations"]] == [(1, 1, 2), (2, 1, 3), (3, 2, 2)]
