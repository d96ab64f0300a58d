import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from visionllm2.model import tokens as T
from visionllm2.model.config import VisionLLMv2Config
from visionllm2.model.data.coco import load_coco_samples, load_llava_samples, save_coco, scenes_to_coco
from visionllm2.model.data.domains import DOMAINS, render_domain
from visionllm2.model.data.figures import FIGURE_KEYPOINTS, FIGURE_SKELETONS, render_figures
from visionllm2.model.data.shapes import render_scene
from visionllm2.model.errors import DatasetError, InvalidInputError, UnknownTaskError
from visionllm2.model.processor import ImageSlot, Processor, Special
from visionllm2.model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def processor():
    return Processor(VisionLLMv2Config.preset("tiny"), Tokenizer.builtin())


def _same_scene(a, b):
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    items_a = getattr(a, "figures", None) or a.objects
    items_b = getattr(b, "figures", None) or b.objects
    assert len(items_a) == len(items_b)
    for x, y in zip(items_a, items_b):
        assert np.array_equal(x.box, y.box) and np.array_equal(x.mask, y.mask)


# ---------------------------------------------------------------------------------- figures
def test_figures_are_deterministic_varied_and_of_one_kind():
    _same_scene(render_figures(5), render_figures(5))
    assert np.array_equal(render_figures(5).figures[0].keypoints, render_figures(5).figures[0].keypoints)
    assert not np.array_equal(np.asarray(render_figures(5).image), np.asarray(render_figures(6).image))
    scenes = [render_figures(seed, count=(1, 3)) for seed in range(40)]
    assert {s.kind for s in scenes} == {"person", "dog"}
    assert all(f.kind == s.kind for s in scenes for f in s.figures)
    assert max(len(s.figures) for s in scenes) >= 2
    heights = [f.box[3] - f.box[1] for s in scenes for f in s.figures]
    assert max(heights) > 2 * min(heights)  # sizes vary
    first = [s.figures[0].keypoints[:, :2] - s.figures[0].box[:2] for s in scenes if s.kind == "person"]
    spans = [np.ptp(k[:, 0]) / np.ptp(k[:, 1]) for k in first]
    assert np.std(spans) > 0.1  # poses vary, not one template scaled
    with pytest.raises(ValueError, match="figure kind"):
        render_figures(0, kind="cat")


def test_keypoints_lie_inside_boxes_and_on_drawn_pixels():
    visibility = Counter()
    for seed in range(60):
        scene = render_figures(seed, kind="person" if seed % 2 else "dog", count=(1, 3))
        assert scene.image.mode == "RGB" and scene.image.size == (128, 128)
        masks = [f.mask for f in scene.figures]
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                assert not (masks[i] & masks[j]).any()  # a pixel belongs to one figure
        for figure in scene.figures:
            assert figure.keypoints.shape == (len(FIGURE_KEYPOINTS[figure.kind]), 3)
            assert figure.keypoints.dtype == np.float32 and figure.box.dtype == np.float32
            ys, xs = np.nonzero(figure.mask)
            x0, y0, x1, y1 = figure.box
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
            for x, y, v in figure.keypoints:
                visibility[int(v)] += 1
                if v == 0:
                    assert x == 0 and y == 0  # outside the picture, written as COCO does
                    continue
                assert x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1
                if v == 2:
                    row, col = int(y), int(x)
                    assert figure.mask[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].any()
            if figure.kind == "person":  # seen from behind: the person's left is the image's left
                names = FIGURE_KEYPOINTS["person"]
                assert figure.keypoints[names.index("left shoulder"), 0] < figure.keypoints[names.index("right shoulder"), 0]
    assert visibility[2] > 10 * visibility[1] > 0


def test_dogs_face_both_ways_and_skeletons_index_their_keypoints():
    names = FIGURE_KEYPOINTS["dog"]
    facing = {bool(f.keypoints[names.index("nose"), 0] > f.keypoints[names.index("tail"), 0])
              for seed in range(20) for f in render_figures(seed, kind="dog").figures}
    assert facing == {True, False}
    for kind, bones in FIGURE_SKELETONS.items():
        assert len(set(FIGURE_KEYPOINTS[kind])) == len(FIGURE_KEYPOINTS[kind])
        assert {j for bone in bones for j in bone} == set(range(len(FIGURE_KEYPOINTS[kind])))


def test_every_name_is_in_the_tokenizer_vocabulary():
    tokenizer = Tokenizer.builtin()
    words = [*FIGURE_KEYPOINTS, *(n for names in FIGURE_KEYPOINTS.values() for n in names),
             *(c.replace("_", " ") for classes in DOMAINS.values() for c in classes)]
    for word in words:
        assert 0 not in tokenizer.encode_text(word), word


# ---------------------------------------------------------------------------------- domains
@pytest.mark.parametrize("domain", list(DOMAINS))
def test_domains_are_deterministic_and_cover_their_classes(domain):
    _same_scene(render_domain(domain, 3), render_domain(domain, 3))
    assert not np.array_equal(np.asarray(render_domain(domain, 3).image), np.asarray(render_domain(domain, 4).image))
    seeds = range(6) if domain == "remote_sensing" else range(30)
    scenes = [render_domain(domain, seed) for seed in seeds]
    assert {o.kind for s in scenes for o in s.objects} == set(DOMAINS[domain])
    side = 512 if domain == "remote_sensing" else 128
    for scene in scenes:
        assert scene.image.size == (side, side) and scene.image.mode == "RGB"
        masks = [o.mask for o in scene.objects]
        union = np.zeros((side, side), int)
        for obj in scene.objects:
            ys, xs = np.nonzero(obj.mask)
            assert obj.box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert obj.colour == "" and obj.name.strip() == obj.kind
            assert obj.size in ("small", "large") and obj.place in ("left", "right", "top", "bottom", "centre")
            union += obj.mask
        assert len(masks) == 0 or union.max() == 1  # occlusion: a pixel belongs to one object


def test_domain_specifics():
    flawless = sum(not render_domain("industrial", seed).objects for seed in range(60))
    assert 4 <= flawless <= 24  # about one part in five has no defect
    pixels = np.asarray(render_domain("medical", 1).image).astype(int)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    deep = render_domain("medical", 1, bit_depth=16)
    assert deep.image.mode == "I;16" and np.asarray(deep.image).max() > 255
    _, plain = render_domain("medical", 1), render_domain("medical", 1)
    assert [o.mask.tolist() for o in deep.objects] == [o.mask.tolist() for o in plain.objects]
    with pytest.raises(ValueError, match="bit_depth"):
        render_domain("industrial", 0, bit_depth=16)
    with pytest.raises(ValueError, match="domain"):
        render_domain("underwater", 0)
    tile = render_domain("remote_sensing", 2)
    buildings = [o for o in tile.objects if o.kind == "building"]
    assert len(buildings) >= 10
    assert any(o.box[0] == 0 or o.box[1] == 0 or o.box[2] == 512 or o.box[3] == 512 for o in buildings)  # seams
    assert render_domain("remote_sensing", 2, size=256).image.size == (256, 256)


# ---------------------------------------------------------------------------------- COCO
def _key(name, box, mask=None):
    return (name, tuple(np.round(box, 3).tolist()), None if mask is None else np.packbits(mask).tobytes())


def test_coco_round_trip_gives_back_boxes_and_exact_masks(tmp_path, processor):
    scenes = [render_scene(1, count=(3, 4)), render_scene(2), render_domain("industrial", 5),
              render_domain("medical", 2), render_domain("industrial", 11)]
    data = scenes_to_coco(scenes, tmp_path / "images")
    path = save_coco(data, tmp_path / "annotations.json")
    coco = COCO(str(path))  # pycocotools reads it
    assert len(coco.getImgIds()) == len(scenes) and len(coco.getAnnIds()) == sum(len(s.objects) for s in scenes)
    first = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    assert np.array_equal(coco.annToMask(first).astype(bool), scenes[0].objects[0].mask)
    samples = load_coco_samples(path, tmp_path / "images", task="segment", processor=processor)
    assert len(samples) == len(scenes)
    negatives = 0
    for sample, scene in zip(samples, scenes):
        target, asked = sample.targets["gdino"], sample.meta["classes"]
        got = sorted(_key(asked[label], box, mask) for box, label, mask in zip(target.boxes, target.labels, target.masks))
        want = sorted(_key(o.name.strip(), o.box, o.mask) for o in scene.objects)
        assert got == want
        negatives += len(set(asked) - {o.name.strip() for o in scene.objects})
        assert np.array_equal(np.asarray(sample.images[0]), np.asarray(scene.image.convert("RGB")))
        assert sample.messages[0].segments[0] == ImageSlot(0)
        assert sample.messages[0].segments[1] == f"\nCan you analyze the image and segment the {', '.join(asked)} present?"
        answer = sample.messages[1].segments
        assert answer[0] == "Yes, here are the results for " and answer.count(Special(T.SEG)) == len(asked)
        assert answer.count(Special("[EMB]")) == len(asked)
        chat = processor.build(sample.messages, sample.images)
        assert 0 not in chat.input_ids  # every word is in the vocabulary
    assert negatives > 0  # absent classes are asked too
    detect = load_coco_samples(path, tmp_path / "images", "detect", classes_per_sample=2, seed=3, processor=processor)
    assert all(len(s.meta["classes"]) == 2 and s.targets["gdino"].masks is None for s in detect)
    assert detect[0].messages[1].segments.count(Special(T.DET)) == 2
    again = load_coco_samples(path, tmp_path / "images", "detect", classes_per_sample=2, seed=3, processor=processor)
    assert [s.meta["classes"] for s in again] == [s.meta["classes"] for s in detect]


def test_coco_pose_round_trip(tmp_path, processor):
    scenes = [render_figures(seed, count=(1, 3)) for seed in range(6)]
    path = save_coco(scenes_to_coco(scenes, tmp_path, file_prefix="fig"), tmp_path / "pose.json")
    coco = COCO(str(path))
    person = coco.loadCats(coco.getCatIds(catNms=["person"]))[0]
    assert person["keypoints"] == list(FIGURE_KEYPOINTS["person"]) and [1, 2] in person["skeleton"]
    samples = load_coco_samples(path, tmp_path, task="pose", processor=processor)
    assert len(samples) == len(scenes)
    for sample, scene in zip(samples, scenes):
        target = sample.targets["unipose"]
        names = list(FIGURE_KEYPOINTS[scene.kind])
        assert target.num_objects == 1 and sample.meta["classes"] == [scene.kind]
        assert np.allclose(target.boxes, np.stack([f.box for f in scene.figures]))
        assert np.allclose(target.keypoints, np.stack([f.keypoints for f in scene.figures]))
        assert target.keypoints.shape == (len(scene.figures), len(names), 3)
        question = sample.messages[0].segments[1]
        assert question.endswith(f"pinpoint the keypoint locations of the {', '.join(names)}?")
        assert sample.messages[1].segments.count(Special(T.POSE)) == 1 + len(names)
        assert 0 not in processor.build(sample.messages, sample.images).input_ids


def test_coco_polygons_uncompressed_rle_crowds_and_sixteen_bit_images(tmp_path, processor):
    Image.fromarray(np.full((20, 30), 4000, np.uint16)).save(tmp_path / "scan.png")
    data = {
        "images": [{"id": 7, "file_name": "scan.png", "width": 30, "height": 20}],
        "categories": [{"id": 1, "name": "liver"}, {"id": 2, "name": "kidney"}, {"id": 3, "name": "lesion"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 3, 10, 5], "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 8, 2, 8]]},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 2], "iscrowd": 0,
             "segmentation": {"size": [20, 30], "counts": [0, 2, 598]}},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [5, 5, 2, 2], "iscrowd": 1,
             "segmentation": {"size": [20, 30], "counts": [0, 600]}},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    (sample,) = load_coco_samples(tmp_path / "a.json", tmp_path, "segment", processor=processor)
    target, asked = sample.targets["gdino"], sample.meta["classes"]
    assert sorted(asked) == ["kidney", "liver"]  # the crowd-only class is neither asked nor a negative
    liver = target.masks[list(target.labels).index(asked.index("liver"))]
    assert liver[3:8, 2:12].all() and liver.sum() <= 11 * 6
    kidney = target.masks[list(target.labels).index(asked.index("kidney"))]
    assert kidney[:2, 0].all() and kidney.sum() == 2
    assert np.asarray(sample.images[0]).max() == 255 and sample.images[0].mode == "RGB"


def test_coco_bad_inputs_give_typed_errors(tmp_path, processor):
    scenes = [render_scene(4)]
    path = save_coco(scenes_to_coco(scenes, tmp_path / "img"), tmp_path / "ok.json")
    with pytest.raises(DatasetError, match="img000000.png"):
        load_coco_samples(path, tmp_path / "elsewhere", processor=processor)
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_coco_samples(tmp_path / "broken.json", tmp_path, processor=processor)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DatasetError, match="'images'"):
        load_coco_samples(tmp_path / "list.json", tmp_path, processor=processor)
    with pytest.raises(DatasetError, match="does not exist"):
        load_coco_samples(tmp_path / "absent.json", tmp_path, processor=processor)
    with pytest.raises(UnknownTaskError):
        load_coco_samples(path, tmp_path / "img", task="caption", processor=processor)
    with pytest.raises(DatasetError, match="keypoints"):
        load_coco_samples(path, tmp_path / "img", task="pose", processor=processor)
    bad = json.loads(path.read_text())
    bad["annotations"][0]["category_id"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="category 99"):
        load_coco_samples(tmp_path / "bad.json", tmp_path / "img", processor=processor)
    assert issubclass(DatasetError, InvalidInputError)


# ---------------------------------------------------------------------------------- LLaVA
def test_llava_conversations_become_chat_samples(tmp_path, processor):
    (tmp_path / "pics").mkdir()
    render_scene(0).image.save(tmp_path / "pics" / "a.png")
    entries = [
        {"id": "x", "image": "pics/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the image?"}, {"from": "gpt", "value": "a red circle."},
            {"from": "human", "value": "Where is it?"}, {"from": "gpt", "value": "at the top."}]},
        {"id": "y", "conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi."}]},
        {"id": "z", "image": "pics/a.png", "conversations": [
            {"from": "human", "value": "What colour is the shape?"}, {"from": "gpt", "value": "red"}]},
    ]
    (tmp_path / "chat.json").write_text(json.dumps(entries))
    first, second, third = load_llava_samples(tmp_path / "chat.json", tmp_path)
    assert first.task == "chat" and first.decoder is None and first.meta["id"] == "x"
    assert [m.role for m in first.messages] == ["user", "assistant", "user", "assistant"]
    assert first.messages[0].segments == [ImageSlot(0), "\nWhat is in the image?"]
    assert first.messages[1].segments == ["a red circle."] and first.images[0].size == (128, 128)
    assert second.images == [] and second.messages[0].segments == ["Hello"]
    assert third.messages[0].segments == [ImageSlot(0), "\n", "What colour is the shape?"]  # LLaVA puts it first
    chat = processor.build(first.messages, first.images)
    assert chat.input_ids.count(processor.tokenizer.token_id(T.IMAGE_START)) == 1


def test_llava_bad_inputs_give_typed_errors(tmp_path):
    def write(entries):
        (tmp_path / "c.json").write_text(json.dumps(entries))
        return tmp_path / "c.json"

    with pytest.raises(DatasetError, match="missing.jpg"):
        load_llava_samples(write([{"image": "missing.jpg", "conversations": [
            {"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "ok"}]}]), tmp_path)
    with pytest.raises(DatasetError, match="1 <image> tags but the entry names 0 images"):
        load_llava_samples(write([{"conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "ok"}]}]),
                           tmp_path)
    with pytest.raises(DatasetError, match="'from'"):
        load_llava_samples(write([{"conversations": [{"from": "robot", "value": "hi"}]}]), tmp_path)
    with pytest.raises(DatasetError, match="no 'gpt' turn"):
        load_llava_samples(write([{"conversations": [{"from": "human", "value": "hi"}]}]), tmp_path)
    with pytest.raises(DatasetError, match="list of conversations"):
        load_llava_samples(write({"conversations": []}), tmp_path)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_llava_samples(tmp_path / "broken.json", tmp_path)
    (tmp_path / "junk.png").write_bytes(b"not a picture")
    with pytest.raises(DatasetError, match="cannot be read"):
        load_llava_samples(write([{"image": "junk.png", "conversations": [
            {"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}]}]), tmp_path)
