import numpy as np

from visionllm2.model.data.shapes import BACKGROUNDS, COLOURS, SHAPES, place_word, render_scene


def test_same_seed_same_scene_and_different_seed_differs():
    a, b, c = render_scene(7), render_scene(7), render_scene(8)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and [o.name for o in a.objects] == [o.name for o in b.objects]
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


def test_masks_are_visible_parts_and_boxes_are_tight():
    for seed in range(30):
        scene = render_scene(seed, count=(3, 5))
        masks = [o.mask for o in scene.objects]
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                assert not (masks[i] & masks[j]).any()  # occlusion: one pixel belongs to one shape
        for obj in scene.objects:
            ys, xs = np.nonzero(obj.mask)
            assert obj.box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert obj.size in ("small", "large") and obj.place in ("left", "right", "top", "bottom", "centre")


def test_the_vocabulary_is_covered_and_edges_are_anti_aliased():
    scenes = [render_scene(seed, count=(2, 4)) for seed in range(60)]
    kinds = {o.kind for s in scenes for o in s.objects}
    colours = {o.colour for s in scenes for o in s.objects}
    assert kinds == set(SHAPES) and colours == set(COLOURS)
    plain = render_scene(3, background="plain", jpeg=False)
    values = {tuple(v) for v in np.asarray(plain.image).reshape(-1, 3)}
    assert len(values) > 2 + len(plain.objects)  # edge pixels blend shape and background
    assert set(BACKGROUNDS) == {"plain", "gradient", "noise", "texture"}


def test_place_words():
    assert place_word(np.array([0, 50, 20, 70]), 128) == "left"
    assert place_word(np.array([50, 0, 70, 20]), 128) == "top"
    assert place_word(np.array([54, 54, 74, 74]), 128) == "centre"
