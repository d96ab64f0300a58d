"""BatchPredictor: many pictures, several one-turn conversations per forward, each answered as a fresh
Session would answer it alone (tiny preset: random weights, so only agreement is asserted)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from forced_decoding import forced

from visionllm2.model import tokens as T
from visionllm2.sdk import (
    Box,
    CapabilityError,
    InvalidImageError,
    InvalidInputError,
    InvalidPromptError,
    Point,
    Session,
    Turn,
)
from visionllm2.sdk.batch import BatchPredictor


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # float32 on the CPU: random weights leave near-tied scores, which bfloat16 on a GPU reorders
    # between a batch and a single picture (measured on an H200); batching itself is what is tested.
    loaded = Session.from_pretrained("tiny", device="cpu", max_new_tokens=8).model
    loaded.unipose.config.score_threshold = 0.0  # random weights: keep every figure, so there is something to compare
    return loaded


@pytest.fixture(scope="module")
def pictures() -> list[np.ndarray]:
    """Five pictures of three sizes, two of them 128²: batches mix sizes and share them."""
    from skimage import data

    photo = data.astronaut()[::4, ::4]  # (128, 128, 3), a real photograph
    coffee = data.coffee()[::4, ::4]  # (100, 150, 3)
    return [photo, coffee, photo[:, ::-1].copy(), coffee[::-1].copy(), photo[20:, :].copy()]


def assert_same_turn(batched: Turn, alone: Turn, first_turn: bool = True) -> None:
    assert batched.text == alone.text and batched.routes == alone.routes and batched.index == alone.index
    assert batched.index == 0 or not first_turn
    assert batched.image_id == alone.image_id and [r.kind for r in batched.results] == [r.kind for r in alone.results]
    for got, expected in zip(batched.results, alone.results):
        assert got.image_size == expected.image_size and got.asked == expected.asked and len(got) == len(expected)
        if got.kind == "images":
            assert got.seeds == expected.seeds and got.captions == expected.captions
            for a, b in zip(got.images, expected.images):
                assert np.abs(np.asarray(a, float) - np.asarray(b, float)).max() <= 1  # batched UNet rounding
            continue
        assert got.labels == expected.labels
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-4)
        boxes = (got.xyxy, expected.xyxy) if got.kind == "boxes" else (got.boxes, expected.boxes)
        np.testing.assert_allclose(*boxes, atol=1e-2)
        if got.kind == "poses":
            np.testing.assert_allclose(got.keypoints, expected.keypoints, atol=1e-2)
        if got.kind == "masks":
            assert got.masks.shape == expected.masks.shape and (got.masks != expected.masks).sum() <= got.masks.size // 1000


VERBS = {
    "detect": (lambda p, images: p.detect(["person", "cup"], images=images),
               lambda s, image, i, pictures: s.detect(["person", "cup"], image=image)),
    "detect, classes per picture": (
        lambda p, images: p.detect([["person"], ["cup", "saucer"], ["face"], ["cup"], ["person", "hat"]], images=images),
        lambda s, image, i, pictures: s.detect([["person"], ["cup", "saucer"], ["face"], ["cup"], ["person", "hat"]][i], image=image)),
    "ground, an expression per picture": (
        lambda p, images: p.ground(["the person", "the cup", "the face", "the cup", "the helmet"], images=images),
        lambda s, image, i, pictures: s.ground(["the person", "the cup", "the face", "the cup", "the helmet"][i], image=image)),
    "segment classes": (lambda p, images: p.segment(["person"], images=images),
                        lambda s, image, i, pictures: s.segment(["person"], image=image)),
    "segment visual prompts": (
        lambda p, images: p.segment(images=images, prompts=[[Point(x=10 + 5 * i, y=40)] if i % 2 else
                                                            [Box(5, 5, 60, 70), Point(x=30, y=30)] for i in range(5)]),
        lambda s, image, i, pictures: s.segment(prompts=[Point(x=10 + 5 * i, y=40)] if i % 2 else [Box(5, 5, 60, 70), Point(x=30, y=30)],
                                      image=image)),
    "segment by examples on other pictures": (
        lambda p, images: p.segment(images=images, examples=[(images[0], Box(5, 5, 60, 70)), (images[1], Point(x=20, y=30)),
                                                             (images[0], Point(x=90, y=90))]),
        lambda s, image, i, pictures: s.segment(image=image, examples=[(pictures[0], Box(5, 5, 60, 70)),
                                                                  (pictures[1], Point(x=20, y=30)),
                                                                  (pictures[0], Point(x=90, y=90))])),
    "pose": (lambda p, images: p.pose(["person"], images=images, keypoints=["nose", "tail"]),
             lambda s, image, i, pictures: s.pose(["person"], keypoints=["nose", "tail"], image=image)),
    "pose, classes and keypoints per picture": (
        lambda p, images: p.pose([["person"], ["dog"]] * 2 + [["cat"]], images=images,
                                 keypoints=[["nose", "tail"], ["nose", "left ear", "tail"]] * 2 + [["tail"]]),
        lambda s, image, i, pictures: s.pose([["person"], ["dog"]][i % 2] if i < 4 else ["cat"], image=image,
                                   keypoints=[["nose", "tail"], ["nose", "left ear", "tail"]][i % 2] if i < 4 else ["tail"])),
    "ask": (lambda p, images: p.ask("what is in the picture?", images=images, max_new_tokens=6),
            lambda s, image, i, pictures: s.ask("what is in the picture?", image=image, max_new_tokens=6)),
}


@pytest.mark.parametrize("verb", list(VERBS))
def test_each_verb_batched_answers_as_one_fresh_session_per_picture(model, pictures, verb):
    batched_call, alone_call = VERBS[verb]
    turns = batched_call(BatchPredictor(model, batch_size=3), pictures)  # the first batch holds two 128² pictures
    assert len(turns) == len(pictures)
    for i, (turn, picture) in enumerate(zip(turns, pictures)):
        assert_same_turn(turn, alone_call(Session(model, max_new_tokens=8), picture, i, pictures))
    assert set(turns[0].timings) >= {"encode", "prefill" if verb != "ask" else "generate"}


def test_a_free_answer_that_routes_is_decoded_like_a_sessions(model, pictures):
    routes = [T.DET, T.SEG, T.DET, T.SEG]
    tokens = [model.special_ids[route] for route in routes]
    turns = BatchPredictor(model, batch_size=4).ask("find it", images=pictures[:4], logits_processor=forced([[5, t] for t in tokens]))
    for row, turn in enumerate(turns):
        alone = Session(model).ask("find it", image=pictures[row], logits_processor=forced([[5, tokens[row]]]))
        assert turn.routes == [routes[row]] and turn.results
        assert_same_turn(turn, alone)


def test_one_rows_unusable_answer_costs_no_other_row_its_results(model, pictures):
    """A [POSE] answer with one group (no keypoint names) cannot be decoded; its neighbour's can."""
    pose = model.special_ids[T.POSE]
    sequences = [[5, pose], [5, pose, 6, pose], [5, pose]]
    turns = BatchPredictor(model, batch_size=3).ask("pose?", images=pictures[:3], logits_processor=forced(sequences))
    for row, turn in enumerate(turns):
        alone = Session(model).ask("pose?", image=pictures[row], logits_processor=forced(sequences[row:row + 1]))
        assert turn.skipped_routes == alone.skipped_routes == ([T.POSE] if row != 1 else [])
        assert_same_turn(turn, alone)
    assert turns[1].poses is not None


def test_generate_and_edit_give_each_picture_the_next_seed(tokenizer):
    from route_steps import tiny_config_with_denoisers

    from visionllm2.model.visionllm import VisionLLMv2

    torch.manual_seed(0)
    model = VisionLLMv2.from_config(tiny_config_with_denoisers(), tokenizer=tokenizer).eval()
    captions = ["a red circle on the left", "a blue square", "a green hexagon at the top"]
    made = BatchPredictor(model, batch_size=2).generate(captions, seed=7, num_inference_steps=3)
    for i, (turn, caption) in enumerate(zip(made, captions)):
        assert turn.images.seeds == [7 + i] and turn.images.captions == [caption] and turn.image_id is None
        assert_same_turn(turn, Session(model).generate(caption, seed=7 + i, num_inference_steps=3))
    sources = [np.full((40, 60, 3), 90, np.uint8), np.full((32, 32, 3), 200, np.uint8)]
    edited = BatchPredictor(model).edit(["make it blue", "make it red"], images=sources, seed=1, num_inference_steps=3)
    for i, turn in enumerate(edited):
        assert_same_turn(turn, Session(model).edit(["make it blue", "make it red"][i], image=sources[i], seed=1 + i,
                                                   num_inference_steps=3))


def test_bad_pictures_and_arguments_are_refused_with_the_index_and_typed_errors(model, pictures):
    predictor = BatchPredictor(model, batch_size=2)
    with pytest.raises(InvalidImageError, match=r"images\[2\]"):
        predictor.detect(["person"], images=[pictures[0], pictures[1], b"not an image"])
    with pytest.raises(InvalidInputError, match="non-empty list of pictures"):
        predictor.detect(["person"], images=[])
    with pytest.raises(InvalidInputError, match="non-empty list of pictures"):
        predictor.detect(["person"], images="photo.png")  # one path: pass [path]
    with pytest.raises(InvalidPromptError, match=r"one per picture \(2\), got 3"):
        predictor.ground(["the person", "the cup", "the face"], images=pictures[:2])
    with pytest.raises(InvalidPromptError, match="picture 1: .*expression"):
        predictor.ground(["the person", ""], images=pictures[:2])
    with pytest.raises(InvalidPromptError, match="one entry per picture"):
        predictor.segment(images=pictures[:2], prompts=[[Point(x=3, y=3)]])
    with pytest.raises(InvalidPromptError, match="one of classes, prompts or examples, got classes and prompts"):
        predictor.segment(["person"], images=pictures[:2], prompts=[[Point(x=3, y=3)]] * 2)
    with pytest.raises(CapabilityError, match="picture 0"):
        predictor.generate(["a red circle"])  # the tiny preset carries no denoisers
    with pytest.raises(InvalidInputError, match="unknown"):
        predictor.ask("hi", images=pictures[:1], temprature=0.5)
    for size in (0, -1, 2.5, "8"):
        with pytest.raises(InvalidInputError, match="batch_size"):
            BatchPredictor(model, batch_size=size)


def test_it_is_exported_lazily_and_loads_presets():
    from visionllm2 import sdk

    assert "BatchPredictor" in sdk.__all__ and sdk.BatchPredictor is BatchPredictor
    predictor = BatchPredictor.from_pretrained("tiny", batch_size=3, device="cpu")
    assert predictor.batch_size == 3 and predictor.model.device.type == "cpu"


def test_a_batch_that_runs_out_of_memory_runs_again_at_half_the_size(model, pictures, monkeypatch):
    alone = BatchPredictor(model, batch_size=1).detect(["person"], images=pictures)
    predictor = BatchPredictor(model, batch_size=8)
    encode, sizes = predictor._encode, []

    def short_of_memory(sessions):  # more than two pictures do not fit on this "device"
        sizes.append(len(sessions))
        if len(sessions) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(sessions)

    monkeypatch.setattr(predictor, "_encode", short_of_memory)
    with pytest.warns(RuntimeWarning) as caught:
        turns = predictor.detect(["person"], images=pictures)
    assert [str(w.message).rsplit(" ", 1)[-1] for w in caught] == ["4", "2"] and caught[0].filename == __file__
    assert predictor.batch_size == 2 and sizes == [5, 4, 2, 2, 1]
    for got, expected in zip(turns, alone):
        assert_same_turn(got, expected)

    def out_of_memory(sessions):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    def other_error(sessions):
        raise RuntimeError("shape mismatch")

    single = BatchPredictor(model, batch_size=1)
    monkeypatch.setattr(single, "_encode", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):  # one picture that does not fit is the caller's to see
        single.detect(["person"], images=pictures[:1])
    other = BatchPredictor(model, batch_size=4)
    monkeypatch.setattr(other, "_encode", other_error)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not retried
        other.detect(["person"], images=pictures)
    assert other.batch_size == 4


def test_each_reference_picture_is_read_and_encoded_once_per_call(model, pictures, monkeypatch):
    from visionllm2.model.images import load_image

    predictor = BatchPredictor(model, batch_size=2)
    tiles = [predictor.processor.process_image(load_image(p)).pixel_values.shape[0] for p in pictures]
    encode, encoded = model.encode_images, []
    monkeypatch.setattr(model, "encode_images", lambda pixels: encoded.append(pixels.shape[0]) or encode(pixels))
    examples = [(pictures[3], Box(5, 5, 40, 40)), (pictures[3], Point(x=10, y=10)), (pictures[4], Point(x=20, y=20))]
    turns = predictor.segment(images=pictures[:3], examples=examples)
    assert [t.masks.labels for t in turns] == [["example1", "example2", "example3"]] * 3
    assert sum(encoded) == sum(tiles[:3]) + tiles[3] + tiles[4]  # the three targets, and each reference once
    with pytest.raises(InvalidImageError, match=r"examples\[1\]"):
        predictor.segment(images=pictures[:1], examples=[examples[0], (b"not an image", Point(x=1, y=1))])


def test_sessions_go_on_turn_after_turn_as_one_at_a_time(model, pictures, tmp_path):
    """detect → segment the marks → a free question, batched over sessions, against each session alone."""
    marks = [[Box(5, 5, 60, 70)], [Point(x=30, y=40), Box(10, 10, 50, 50)], [Point(x=60, y=60)]]
    alone = [Session(model, max_new_tokens=8) for _ in range(3)]
    together = [Session(model, max_new_tokens=8) for _ in range(3)]
    predictor = BatchPredictor(model, batch_size=2)
    steps = [
        (lambda s, i: s.detect(["person", "cup"], image=pictures[i]),
         lambda: predictor.detect(["person", "cup"], images=pictures[:3], sessions=together)),
        (lambda s, i: s.segment(prompts=marks[i]), lambda: predictor.segment(prompts=marks, sessions=together)),
        (lambda s, i: s.ask("and the colour?", max_new_tokens=6),
         lambda: predictor.ask("and the colour?", sessions=together, max_new_tokens=6)),
        (lambda s, i: s.ground("the person", image=pictures[3]),  # a new picture, mid-conversation
         lambda: predictor.ground("the person", images=[pictures[3]] * 3, sessions=together)),
    ]
    for alone_step, batched_step in steps:
        expected = [alone_step(s, i) for i, s in enumerate(alone)]
        for got, want in zip(batched_step(), expected):
            assert got.index == want.index and got.image_id == want.image_id
            assert_same_turn(got, want, first_turn=False)
    for got, want in zip(together, alone):  # the sessions themselves go on alike
        assert got.history == want.history and sorted(got.images) == sorted(want.images)
        assert got.current_image == want.current_image
        assert_same_turn(got.ask("how many?", max_new_tokens=6), want.ask("how many?", max_new_tokens=6), first_turn=False)
    together[0].save(str(tmp_path / "saved"))  # and a batched conversation saves and resumes like any other
    assert Session.load(str(tmp_path / "saved"), model=model).history == alone[0].history


def test_a_failed_batch_leaves_the_sessions_it_continues_as_they_were(model, pictures):
    sessions = [Session(model) for _ in range(2)]
    predictor = BatchPredictor(model)
    predictor.detect(["person"], images=pictures[:2], sessions=sessions)
    before = [(len(s.turns), len(s.exchanges), sorted(s.images), s.current_image) for s in sessions]
    with pytest.raises(InvalidPromptError, match="picture 1: .*expression"):
        predictor.ground(["the person", " "], images=pictures[2:4], sessions=sessions)
    with pytest.raises(InvalidInputError, match=r"one per session \(2\), got 1"):
        predictor.detect(["person"], images=pictures[:1], sessions=sessions)
    with pytest.raises(InvalidInputError, match="each at most once"):
        predictor.detect(["person"], sessions=[sessions[0], sessions[0]])
    with pytest.raises(InvalidInputError, match="Session objects"):
        predictor.detect(["person"], sessions=[])
    with pytest.raises(InvalidInputError, match="this predictor's model"):
        predictor.detect(["person"], sessions=[Session.from_pretrained("tiny")])
    assert [(len(s.turns), len(s.exchanges), sorted(s.images), s.current_image) for s in sessions] == before


def test_pictures_of_one_shape_at_different_sizes_share_a_decoder_call(model, pictures, monkeypatch):
    """The decoder resizes each picture to its input size; pictures that land on the same one batch exactly."""
    from PIL import Image

    photo = Image.fromarray(pictures[0])  # 128²
    same_shape = [photo, photo.resize((192, 192)), photo.resize((96, 96)), Image.fromarray(pictures[1])]  # and a 150×100
    gdino = model.decoders()["gdino"]
    assert len({gdino.input_size(p.size) for p in same_shape[:3]}) == 1
    forward, rows = type(gdino).forward, []

    def counted(self, link, images=None, *args, **kwargs):
        rows.append(len(images))
        return forward(self, link, images, *args, **kwargs)

    monkeypatch.setattr(type(gdino), "forward", counted)
    turns = BatchPredictor(model, batch_size=4).detect(["person"], images=same_shape)
    assert sorted(rows) == [1, 3]  # the three squares together, the 150×100 alone
    rows.clear()
    for turn, picture in zip(turns, same_shape):
        assert_same_turn(turn, Session(model).detect(["person"], image=picture))


def test_another_threads_turn_waits_while_a_batch_plans_on_the_session(model, pictures):
    import threading

    session = Session(model)
    done: list[object] = []
    with session._lock, session._planning():  # what BatchPredictor holds while it plans this session's turn
        worker = threading.Thread(target=lambda: done.append(session.detect(["person"], image=pictures[0])))
        worker.start()
        worker.join(timeout=0.3)
        assert worker.is_alive() and not done  # it waits for the lock; it is not handed a plan
    worker.join(timeout=30)
    assert isinstance(done[0], Turn) and len(session.turns) == 1
