"""ShapesWorld tasks: official formats, consistent targets, disjoint deterministic splits; the checker."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from visionllm2.model import tokens as T
from visionllm2.model.config import VisionLLMv2Config
from visionllm2.model.data.checker import check_picture
from visionllm2.model.data.samples import TASK_DECODERS, TOWER_TASKS
from visionllm2.model.data.shapes import COLOURS, render_scene
from visionllm2.model.data.tasks import VQA_FORMS, ShapesWorld, referring_expressions
from visionllm2.model.processor import Processor, Special
from visionllm2.model.tokenizer import Tokenizer
from visionllm2.model.training.trainer import samples_to_inputs


@pytest.fixture(scope="module")
def processor() -> Processor:
    return Processor(VisionLLMv2Config.preset("tiny"), Tokenizer.builtin())


def routes_of(sample) -> list[str]:
    return routes_of_message([m for m in sample.messages if m.role == "assistant"][-1])


def routes_of_message(message) -> list[str]:
    return [s.token for s in message.segments if isinstance(s, Special) and s.token in T.ROUTES]


def test_some_interactive_training_samples_follow_a_detection_turn(processor):
    # detect → segment(prompts=boxes) is how the recipes hand boxes on: the marks' turn must work
    # after another turn too. Held-out samples stay single-turn, as the scorer asks them.
    train = ShapesWorld(processor, tasks={"interactive": 1.0})
    samples = [train.sample(index) for index in range(40)]
    later = [s for s in samples if len(s.messages) == 4]
    assert 4 <= len(later) <= 24
    for sample in later:
        first, second = routes_of_message(sample.messages[1]), routes_of(sample)
        assert set(first) == {T.DET} and len(second) == len(sample.regions)
        target = sample.targets["gdino"]
        marked = sample.meta["objects"]
        assert len(target.boxes) >= len(marked) and np.array_equal(target.boxes[-len(marked):], np.stack([o.box for o in marked]))
        batch, _, _ = samples_to_inputs(processor, [sample], Tokenizer.builtin().pad_id)
        assert batch.region_masks.shape[0] == len(sample.regions)
    heldout = ShapesWorld(processor, "heldout", tasks={"interactive": 1.0})
    assert all(len(heldout.sample(index).messages) == 2 for index in range(40))


def test_generate_requests_can_follow_an_earlier_turn_on_another_picture(processor):
    # A session asks for a picture after it has detected or segmented something: the [GEN] slots then
    # read past that picture, so the link must be trained on such requests too (opt-in, by a rate).
    first_only = ShapesWorld(processor, tasks={"generate": 1.0})
    later = ShapesWorld(processor, tasks={"generate": 1.0}, generate_history_rate=0.5)
    pairs = [(first_only.sample(index), later.sample(index)) for index in range(30)]
    assert all(len(a.messages) == 2 and a.images == [] for a, _ in pairs)
    followed = [b for _, b in pairs if len(b.messages) == 4]
    assert 6 <= len(followed) <= 24
    for a, b in pairs:  # the request itself is the same sample with or without the earlier turn
        assert b.meta == a.meta and b.messages[-2:] == a.messages
        assert np.array_equal(np.asarray(b.targets["sd"].image), np.asarray(a.targets["sd"].image))
    earlier = {routes_of_message(b.messages[1])[0] for b in followed}
    assert earlier == {T.DET, T.SEG}
    for sample in followed:
        assert len(sample.images) == 1 and routes_of(sample) == [T.GEN]
        batch, images, targets = samples_to_inputs(processor, [sample], Tokenizer.builtin().pad_id)
        assert list(targets) == ["sd"] and images == [sample.images[0]] and 0 not in batch.input_ids[0].tolist()
    heldout = ShapesWorld(processor, "heldout", tasks={"generate": 1.0}, generate_history_rate=1.0)
    assert all(len(heldout.sample(index).messages) == 2 for index in range(10))
    with pytest.raises(ValueError, match="generate_history_rate"):
        ShapesWorld(processor, tasks={"generate": 1.0}, generate_history_rate=1.5)


@pytest.mark.parametrize("task", sorted(set(TASK_DECODERS) - TOWER_TASKS))  # counts train the tower alone, no chat
def test_every_task_builds_model_inputs_with_matching_targets(processor, task):
    world = ShapesWorld(processor, tasks={task: 1.0}, domains=("industrial", "medical", "remote_sensing"))
    for index in range(6):
        sample = world.sample(index)
        assert sample.task == task or (task == "ground" and sample.task == "detect")  # ambiguous scenes fall back
        batch, _, targets = samples_to_inputs(processor, [sample], Tokenizer.builtin().pad_id)
        assert 0 not in batch.input_ids[0].tolist(), "every word is in the shipped vocabulary"
        routes = routes_of(sample)
        if sample.task == "chat":
            assert routes == [] and sample.meta["answer"] and not targets
            continue
        (decoder,) = targets
        assert decoder == sample.decoder
        target = sample.targets[decoder]
        if sample.task in ("detect", "segment"):
            assert len(routes) == len(sample.meta["asked"]) and set(routes) == {T.DET if sample.task == "detect" else T.SEG}
            assert target.labels.max(initial=-1) < len(routes) and len(target.boxes) == len(target.masks)
        elif sample.task == "ground":
            assert routes == [T.GRD] and len(target.boxes) == 1
        elif sample.task == "interactive":
            assert len(routes) == len(sample.regions) and batch.region_masks.shape[0] == len(sample.regions)
            marks = target.labels[-len(routes):]  # after a detection turn, that turn's groups come first
            groups = sum(len(routes_of_message(m)) for m in sample.messages if m.role == "assistant")
            assert marks.tolist() == list(range(groups - len(routes), groups)) and target.labels.max() < groups
        elif sample.task == "pose":
            assert routes == [T.POSE] * (1 + len(sample.meta["keypoint_names"]))
            assert target.keypoints.shape[1] == len(sample.meta["keypoint_names"])
        else:
            assert routes == [T.GEN if task == "generate" else T.EDIT] and target.caption == sample.meta["caption"]


def test_every_vqa_sample_names_the_kind_of_question_it_asks(processor):
    # eval reports exact match per kind of question, so each sample's form must be the one it asks
    openings = {"count": "How many", "count_all": "How many shapes", "colour": "What colour",
                "shape": "What shape", "exists": "Is there"}
    world = ShapesWorld(processor, tasks={"chat": 1.0})
    forms = []
    for index in range(60):
        sample = world.sample(index)
        question = [m for m in sample.messages if m.role == "user"][-1].segments[-1]
        answer = [m for m in sample.messages if m.role == "assistant"][-1].segments[-1]
        form = sample.meta["form"]
        assert form in VQA_FORMS and question.strip().startswith(openings[form]) and answer == sample.meta["answer"]
        assert form != "count" or not question.strip().startswith(openings["count_all"])
        forms.append(form)
    assert set(forms) == set(VQA_FORMS)  # every kind is drawn


def test_long_mixed_streams_never_fail(processor):
    """Hundreds of samples of every task over shapes, figures and all domain packs (data only: fast)."""
    world = ShapesWorld(processor, tasks={t: 1.0 for t in TASK_DECODERS},
                        domains=("industrial", "medical", "remote_sensing"), domain_rate=0.5)
    tasks = {world.sample(index).task for index in range(400)}
    assert tasks == set(TASK_DECODERS)


def test_splits_are_deterministic_and_disjoint(processor):
    train, heldout = ShapesWorld(processor, "train"), ShapesWorld(processor, "heldout")
    assert {train.seed(i) for i in range(500)}.isdisjoint({heldout.seed(i) for i in range(500)})
    a, b = train.sample(3, "detect"), train.sample(3, "detect")
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0])) and a.meta["asked"] == b.meta["asked"]
    assert not np.array_equal(np.asarray(a.images[0]), np.asarray(heldout.sample(3, "detect").images[0]))
    with pytest.raises(ValueError, match="split"):
        ShapesWorld(processor, "test")
    with pytest.raises(ValueError, match="tasks"):
        ShapesWorld(processor, tasks={"juggle": 1.0})


def test_referring_expressions_name_exactly_one_object():
    for seed in range(40):
        objects = render_scene(seed).objects
        for obj in objects:
            for expression in referring_expressions(obj, objects):
                words = expression.split()
                matches = [o for o in objects if o.colour in words and o.kind in words]
                assert obj in matches
                if "on" not in words and "in" not in words and words[0] not in ("largest", "smallest", "small", "large"):
                    assert matches == [obj]


def test_edit_pairs_change_only_the_named_kind(processor):
    sample = ShapesWorld(processor, tasks={"edit": 1.0}).sample(5)
    before, after = np.asarray(sample.images[0]), np.asarray(sample.targets["ip2p"].image)
    changed = np.abs(before.astype(int) - after.astype(int)).sum(-1) > 0
    assert changed.any() and changed.mean() < 0.5
    new_colour = np.array(COLOURS[sample.meta["colour"]])
    assert np.abs(after[changed].astype(int) - new_colour).sum(-1).min() < 30  # the named colour is painted in


@pytest.mark.parametrize("side", [128, 32])
def test_the_checker_judges_an_edit_on_the_object_it_names(processor, side):
    """The true edited pictures pass (a perfect editor scores near 1), the unedited sources fail (an
    editor that does nothing scores near 0), even when the named object touches a larger one."""
    world = ShapesWorld(processor, "heldout", tasks={"edit": 1.0})
    passed, unedited = [], []
    for index in range(40):
        sample = world.sample(index)
        meta = sample.meta
        for pictures, image in ((passed, sample.targets["ip2p"].image), (unedited, sample.images[0])):
            verdict = check_picture(image.resize((side, side), Image.BICUBIC), meta["colour"], meta["kind"],
                                    meta["place"], near=meta["box"])
            pictures.append(verdict["all"])
    assert np.mean(passed) >= 0.8 and np.mean(unedited) <= 0.05  # 0.82–0.93 / 0.0, measured
    # Two touching shapes, the named one smaller: judged on the one in the box, not the larger one.
    image = Image.new("RGB", (64, 64), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((4, 4, 44, 44), fill=COLOURS["green"])
    draw.rectangle((40, 20, 58, 38), fill=COLOURS["blue"])
    box = np.array([40, 20, 59, 39]) / 64
    assert check_picture(image, "blue", "square", "right", near=box)["all"]
    assert check_picture(image, "green", "circle", "centre")["all"]  # without ``near``: the largest
    assert not check_picture(image, "blue", "square", "right", near=np.array([0.0, 0.9, 0.05, 1.0]))["all"]


@pytest.mark.parametrize("side", [128, 32])  # 32²: the generation decoders' size, judged by matching
def test_checker_reads_rendered_pictures_and_refuses_blank_ones(side):
    hits = []
    for seed in range(40):
        scene = render_scene(seed, count=(1, 1), background="plain", jpeg=False)
        obj = scene.objects[0]
        hits.append(check_picture(scene.image.resize((side, side), Image.BICUBIC), obj.colour, obj.kind, obj.place)["all"])
    assert np.mean(hits) >= 0.9
    blank = Image.new("RGB", (32, 32), (200, 200, 200))
    assert check_picture(blank, "red", "circle", "left") == {"colour": False, "kind": False, "place": False, "all": False}
    scene = render_scene(1, count=(1, 1), background="plain", jpeg=False)
    obj = scene.objects[0]
    wrong = next(c for c in ("red", "blue") if c != obj.colour)
    assert not check_picture(scene.image, wrong, obj.kind, obj.place)["all"]


def test_domain_weights_draw_some_packs_more_often(processor, monkeypatch):
    """A mapping pack → weight skews which pack a domain scene comes from; weight 0 never appears."""
    from visionllm2.model.data import domains as packs

    drawn: list[str] = []
    render = packs.render_domain
    monkeypatch.setattr(packs, "render_domain", lambda name, *a, **k: drawn.append(name) or render(name, *a, **k))

    def packs_drawn(domains) -> dict[str, int]:
        drawn.clear()
        world = ShapesWorld(processor, tasks={"detect": 1.0}, domains=domains, domain_rate=1.0)
        for index in range(300):
            world.scene(world.seed(index), np.random.default_rng(index))
        return {name: drawn.count(name) for name in packs.DOMAINS}

    even = packs_drawn(("industrial", "medical"))
    skewed = packs_drawn({"industrial": 3.0, "medical": 1.0, "remote_sensing": 0.0})
    assert even["remote_sensing"] == skewed["remote_sensing"] == 0
    assert sum(even.values()) == sum(skewed.values()) == 300 and abs(even["industrial"] - 150) < 30
    assert abs(skewed["industrial"] - 225) < 30
    with pytest.raises(ValueError, match="unknown packs"):
        ShapesWorld(processor, domains=("industrial", "lunar"))
    with pytest.raises(ValueError, match="weights"):
        ShapesWorld(processor, domains={"industrial": -1.0, "medical": 1.0})
    with pytest.raises(ValueError, match="above 0"):
        ShapesWorld(processor, domains={"industrial": 0.0})
    with pytest.raises(TypeError, match="a list of packs"):
        ShapesWorld(processor, domains="industrial")


def test_samples_of_a_task_leave_out_the_scenes_that_fell_back_to_another(processor, monkeypatch):
    world = ShapesWorld(processor, "heldout")
    real = world.sample
    # Scenes where every object is ambiguous are rare; make every odd index one (ground → detect).
    monkeypatch.setattr(world, "sample", lambda index, task: real(index, "detect" if index % 2 else task))
    kept = world.samples_of("ground", 5, 40)
    assert [s.task for s in kept] == ["ground"] * 20
    assert [s.meta["expression"] for s in kept] == [real(i, "ground").meta["expression"] for i in range(6, 45, 2)]
