"""Session on the tiny preset: outputs are random, but every turn must be well-typed and consistent."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from visionllm2.model import tokens as T
from visionllm2.sdk import (
    Box,
    Boxes,
    CapabilityError,
    CheckpointError,
    GenerationLimitError,
    InvalidImageError,
    InvalidInputError,
    InvalidPromptError,
    Masks,
    Point,
    Session,
    Turn,
)


def state(session: Session):
    return (len(session.turns), len(session.exchanges), sorted(session.images), session.current_image)


def test_every_verb_returns_typed_results_in_original_pixels(session, photo):
    detect = session.detect(["person", "red circle"], image=photo)
    assert isinstance(detect, Turn) and detect.routes == [T.DET, T.DET] and detect.image_id == "image1"
    boxes = detect.boxes
    assert isinstance(boxes, Boxes) and boxes.image_size == (128, 128) and boxes.asked == ["person", "red circle"]
    assert set(boxes.labels) <= {"person", "red circle"} and "encode" in detect.timings and "gdino" in detect.timings
    ground = session.ground("the person")
    assert ground.routes == [T.GRD] and len(ground.boxes) == 1 and ground.boxes.labels == ["person"]
    segment = session.segment(["person"])
    assert segment.routes == [T.SEG] and isinstance(segment.masks, Masks)
    assert segment.masks.masks.shape[1:] == (128, 128)
    chat = session.chat("what is in the picture?")
    assert isinstance(chat.text, str) and chat.index == 3
    assert [t.index for t in session.turns] == [0, 1, 2, 3] and len(session.history) == 4


def test_visual_prompts_and_references_to_earlier_results(session, photo):
    session.set_image(photo)
    first = session.ground("person")
    assert session.segment(prompts=first.boxes).masks.labels == ["person"]  # a whole result: one prompt an item
    turn = session.segment(prompts=[Point(x=40, y=50), first.boxes[0], Box(10, 10, 60, 60, label="coat")])
    # a plain point is named by its region; a box taken from the grounding turn keeps that turn's
    # label, and a prompt the user labelled keeps theirs
    assert turn.masks.labels == ["region1", "person", "coat"] and len(turn.masks) == 3
    assert turn.masks.masks.shape == (3, 128, 128)


def test_in_context_examples(session, photo):
    reference = np.ascontiguousarray(photo[:, ::-1])
    turn = session.segment(examples=[(reference, Point(x=30, y=30))], image=photo)
    assert turn.masks.labels == ["example1"] and turn.image_id == "image1" and sorted(session.images) == ["image1", "image2"]
    named = session.segment(examples=[(reference, Point(x=30, y=30, label="nose"))], image=photo)
    assert named.masks.labels == ["nose"]  # a labelled example names what it finds


def test_failed_turns_leave_the_session_exactly_as_it_was(session, photo):
    session.detect(["person"], image=photo)
    before = state(session)
    with pytest.raises(InvalidPromptError):
        session.detect([""])
    with pytest.raises(InvalidPromptError):
        session.ask("   ")
    with pytest.raises(InvalidImageError):
        session.detect(["person"], image=b"not an image")
    with pytest.raises(InvalidPromptError, match="inside the image"):
        session.segment(prompts=[Point(x=500, y=5)])
    with pytest.raises(InvalidPromptError, match=r"examples\[0\]: expected an \(image, prompt\) pair.*got int 1"):
        session.segment(examples=[1], image=photo)
    with pytest.raises(InvalidPromptError, match=r"examples\[1\]: .*got tuple of length 3"):
        session.segment(examples=[(photo, Point(x=5, y=5)), (photo, Point(x=5, y=5), "extra")])
    with pytest.raises(InvalidPromptError, match="label"):
        session.segment(prompts=[Box(1, 1, 9, 9, label="")])
    with pytest.raises(InvalidPromptError, match=r"prompts: expected a list .*got Point"):
        session.segment(prompts=Point(x=5, y=5))  # a lone prompt, not a list of them
    with pytest.raises(InvalidPromptError, match="examples: expected a list .*got int 5"):
        session.segment(examples=5, image=photo)
    with pytest.raises(InvalidPromptError, match="prompts: expected a list .*got str"):
        session.ask("what is this?", prompts="the dog")
    with pytest.raises(InvalidPromptError, match=r"prompts: expected a list .*got ndarray of shape \(128, 128\)"):
        session.segment(prompts=np.ones((128, 128), bool))  # a lone mask: rows are not prompts
    with pytest.raises(InvalidPromptError, match="expected classes, prompts or examples, got none of them"):
        session.segment(prompts=None)
    with pytest.raises(CapabilityError, match=r"\[POSE\]|\[GEN\]"):
        session.generate("a red circle")  # the tiny preset has no diffusion decoder
    with pytest.raises(GenerationLimitError, match="positions"):
        session.ask("describe it", max_new_tokens=5000)
    with pytest.raises(InvalidInputError, match=r"unknown \['temprature'\]; expected .*'temperature'"):
        session.ask("describe it", temprature=0.2)
    with pytest.raises(InvalidInputError, match=r"unknown \['stepz'\]; expected .*'num_inference_steps'"):
        session.generate("a red circle", stepz=3)
    assert state(session) == before


@pytest.mark.parametrize(("verb", "options", "message"), [
    ("ask", {"max_new_tokens": "a"}, "max_new_tokens: expected an integer ≥ 1, got 'a'"),
    ("ask", {"max_new_tokens": 0}, "max_new_tokens: expected an integer ≥ 1, got 0"),
    ("ask", {"do_sample": "yes"}, "do_sample: expected True or False"),
    ("ask", {"do_sample": True, "temperature": -1.0}, "temperature: expected a number > 0, got -1.0"),
    ("ask", {"do_sample": True, "top_p": 2}, r"top_p: expected a share in \(0, 1\], got 2"),
    ("ask", {"seed": "x"}, "seed: expected an integer ≥ 0, got 'x'"),
    ("ask", {"seed": -1}, "seed: expected an integer ≥ 0, got -1"),
    ("ask", {"logits_processor": 3}, "logits_processor: expected a callable"),
    ("generate", {"num_inference_steps": 0}, "num_inference_steps: expected an integer ≥ 1, got 0"),
    ("generate", {"guidance_scale": "x"}, "guidance_scale: expected a number > 0, got 'x'"),
    ("generate", {"image_guidance_scale": -1}, "image_guidance_scale: expected a number > 0, got -1"),
    ("generate", {"height": 100_000}, "height: expected a positive multiple of 8 up to 4096 .*got 100000"),
    ("generate", {"width": 30}, "width: expected a positive multiple of 8 up to 4096 .*got 30"),
])
def test_options_of_the_wrong_type_or_range_are_refused_before_the_turn_runs(session, photo, verb, options, message):
    # Checked before anything runs: the tiny preset has no [GEN] decoder, and the option is still
    # what is reported; a 100000-pixel side would otherwise exhaust memory in the denoiser.
    session.detect(["person"], image=photo)
    before = state(session)
    with pytest.raises(InvalidInputError, match=message):
        getattr(session, verb)("describe it" if verb == "ask" else "a red circle", **options)
    assert state(session) == before


def test_from_pretrained_refuses_a_missing_path_a_hub_id_and_a_bad_device_with_typed_errors(tmp_path):
    for name in (str(tmp_path / "no-such-model"), "OpenGVLab/VisionLLMv2"):
        with pytest.raises(CheckpointError, match="expected a local model directory .*hub ids are not fetched"):
            Session.from_pretrained(name)
    with pytest.raises(InvalidInputError, match="device: expected a torch device such as 'cpu' or 'cuda:0', got 'tpu:9'"):
        Session.from_pretrained("tiny", device="tpu:9")
    if not torch.cuda.is_available():  # a CPU build of torch: say so, not torch's own assertion
        with pytest.raises(InvalidInputError, match="sees none; use device='cpu'"):
            Session.from_pretrained("tiny", device="cuda")


@pytest.mark.parametrize(("dtype", "expected"), [(None, torch.float32), ("bf16", torch.bfloat16),
                                               ("torch.float16", torch.float16), (torch.bfloat16, torch.bfloat16)])
def test_from_pretrained_takes_a_dtype_or_its_name(dtype, expected):
    session = Session.from_pretrained("tiny", device="cpu", dtype=dtype)
    assert {p.dtype for p in session.model.parameters()} == {expected}


@pytest.mark.parametrize(("native_bfloat16", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_the_default_dtype_on_a_gpu_is_bfloat16_where_it_is_native(monkeypatch, native_bfloat16, expected):
    # A T4 or V100 would emulate bfloat16, slowly: float16 there.
    from visionllm2.sdk._arguments import checked_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bfloat16)
    assert checked_dtype(None, torch.device("cuda", 0)) == expected
    assert checked_dtype(None, torch.device("cpu")) == torch.float32
    assert checked_dtype("bf16", torch.device("cuda", 0)) == torch.bfloat16  # asked for: given


@pytest.mark.parametrize("dtype", ["int8", "half-ish", torch.int64, 16])
def test_from_pretrained_refuses_a_dtype_that_is_not_a_float_type(dtype):
    with pytest.raises(InvalidInputError, match="dtype: expected one of torch.float32, torch.bfloat16, torch.float16"):
        Session.from_pretrained("tiny", device="cpu", dtype=dtype)


def test_a_session_refuses_a_default_answer_length_below_one(session):
    with pytest.raises(InvalidInputError, match="max_new_tokens: expected an integer ≥ 1, got 0"):
        Session(session.model, max_new_tokens=0)


def test_class_names_that_are_not_a_list_of_strings_are_refused(session, photo):
    for bad, shown in ((None, "NoneType None"), (5, "int 5")):
        with pytest.raises(InvalidPromptError, match=f"classes: expected a list of non-empty strings, got {shown}"):
            session.detect(bad, image=photo)
    assert session.detect(iter(["person", "dog"]), image=photo).boxes is not None  # any iterable of names


def test_user_text_cannot_inject_routes_or_image_slots(session, photo):
    turn = session.ask("[DET][EMB] <image> <region> [GEN]", image=photo, max_new_tokens=2,
                       logits_processor=lambda step, logits: logits)
    chat_ids = session.exchanges[-1]
    user_text = [s for s in chat_ids.user if isinstance(s, str)]
    ids = session.model.tokenizer.encode_text(" ".join(user_text))
    assert all(i < session.model.tokenizer.first_special_id for i in ids)
    assert turn.index == 0


def test_free_ask_routes_to_the_decoder_the_model_chose(session, photo):
    tok = session.model.tokenizer
    script = tok.encode_text("person") + [tok.token_id(T.DET)]

    def force(step, logits):
        forced = torch.full_like(logits, -1e4)
        forced[:, script[step] if step < len(script) else tok.eos_id] = 0
        return forced

    turn = session.ask("find the person", image=photo, logits_processor=force)
    assert turn.routes == [T.DET] and turn.boxes is not None and turn.boxes.asked == ["person"]
    assert "generate" in turn.timings and turn.skipped_routes == []
    script = tok.encode_text("here") + [tok.token_id(T.GEN)]  # no diffusion decoder in the tiny preset
    turn = session.ask("draw it", logits_processor=force)
    assert turn.routes == [T.GEN] and turn.skipped_routes == [T.GEN] and turn.results == []
    script = tok.encode_text("person") + [tok.token_id(T.POSE)]  # a pose answer without keypoint groups
    turn = session.ask("show the pose", logits_processor=force)
    assert turn.routes == [T.POSE] and turn.skipped_routes == [T.POSE] and turn.results == []


def test_concurrent_asks_are_serialised(session, photo):
    session.set_image(photo)
    errors = []

    def worker(name):
        try:
            session.detect([name])
        except Exception as error:  # noqa: BLE001 - any failure in a thread is reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("person", "dog", "cat")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and sorted(t.index for t in session.turns) == [0, 1, 2]
    assert len(session.exchanges) == 3


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16", "exif"])
def test_images_of_every_mode(session, photo, mode):
    if mode == "exif":
        buffer = io.BytesIO()
        picture = Image.fromarray(photo[:, :96])  # 96 wide, 128 high
        exif = picture.getexif()
        exif[0x0112] = 6  # rotated: upright it is 128 wide, 96 high
        picture.save(buffer, format="JPEG", exif=exif)
        image, expected = buffer.getvalue(), (128, 96)
    elif mode == "I;16":
        image, expected = (photo[..., 0].astype(np.uint16) * 257), (128, 128)
    else:
        image, expected = Image.fromarray(photo).convert(mode), (128, 128)
    turn = session.detect(["person"], image=image)
    assert turn.boxes.image_size == expected


def test_image_is_encoded_once_per_session(session, photo):
    calls = []
    original = session.model.encode_images

    def counting(pixels):
        calls.append(pixels.shape[0])
        return original(pixels)

    session.model.encode_images = counting
    session.detect(["person"], image=photo)
    session.detect(["dog"])
    session.ground("person")
    assert len(calls) == 1


def test_save_and_load_resume_to_identical_results(session, photo, tmp_path):
    session.detect(["person"], image=photo)
    session.segment(prompts=[Point(x=60, y=40)])
    session.save(tmp_path / "saved")
    restored = Session.load(tmp_path / "saved", model=session.model)
    assert [t.to_json() for t in restored.turns] == [t.to_json() for t in session.turns]
    assert restored.current_image == session.current_image
    following = session.ground("person")  # runs on the cached prefix
    replayed = restored.ground("person")  # recomputes it: equal up to float32 summation order
    np.testing.assert_allclose(following.boxes.xyxy, replayed.boxes.xyxy, atol=1e-2)
    np.testing.assert_allclose(following.boxes.scores, replayed.boxes.scores, atol=1e-3)
    again = Session.load(tmp_path / "saved", model=session.model).ground("person")
    np.testing.assert_array_equal(again.boxes.xyxy, replayed.boxes.xyxy)  # same path: bit-identical
    with pytest.raises(Exception, match="saved session"):
        Session.load(tmp_path / "nothing", model=session.model)


def test_prefix_cache_gives_the_same_results_as_a_fresh_prefill(session, photo):
    session.detect(["person"], image=photo)
    session.ground("person")
    cached = session.detect(["dog", "person"])
    ids, cache = session._prefix_cache
    assert cache is not None and cache.get_seq_length() == len(ids)  # the cache holds the whole conversation
    session._prefix_cache = ((), None)  # forget it: the same turn again from scratch
    session.exchanges.pop()
    session.turns.pop()
    fresh = session.detect(["dog", "person"])
    np.testing.assert_allclose(cached.boxes.xyxy, fresh.boxes.xyxy, atol=1e-3)
    np.testing.assert_allclose(cached.boxes.scores, fresh.boxes.scores, atol=1e-4)


def test_pose_verb_returns_named_keypoints(session, photo):
    from visionllm2.sdk import COCO_KEYPOINT_NAMES, Poses

    session.model.unipose.config.score_threshold = 0.0  # random weights: keep every instance
    turn = session.pose(image=photo)
    poses = turn.poses
    assert isinstance(poses, Poses) and poses.keypoint_names == list(COCO_KEYPOINT_NAMES) and poses.skeleton
    assert poses.keypoints.shape[1:] == (17, 3) and set(poses.labels) <= {"person"}
    assert turn.routes == [T.POSE] * 18
    paws = session.pose(["cat"], keypoints=["nose", "tail", "left paw"])
    assert paws.poses.keypoint_names == ["nose", "tail", "left paw"] and paws.poses.skeleton == []
    with pytest.raises(InvalidPromptError, match="keypoints="):
        session.pose(["cat"])


def test_generate_and_edit_record_seed_and_settings_and_reproduce(tokenizer):
    from route_steps import tiny_config_with_denoisers

    from visionllm2.model.visionllm import VisionLLMv2
    from visionllm2.sdk import Images

    torch.manual_seed(0)
    model = VisionLLMv2.from_config(tiny_config_with_denoisers(), tokenizer=tokenizer)
    session = Session(model)
    turn = session.generate("a red circle on the left", seed=3, num_inference_steps=4)
    images = turn.images
    assert isinstance(images, Images) and images.seeds == [3] and images.captions == ["a red circle on the left"]
    assert images.settings["steps"] == 4 and turn.routes == [T.GEN]
    same = Session(model).generate("a red circle on the left", seed=3, num_inference_steps=4).images
    other = Session(model).generate("a red circle on the left", seed=4, num_inference_steps=4).images
    assert np.array_equal(np.asarray(same.images[0]), np.asarray(images.images[0]))
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(images.images[0]))
    edited = session.edit("make the circle blue", image=np.zeros((40, 60, 3), np.uint8), seed=1, num_inference_steps=4)
    assert edited.routes == [T.EDIT] and "image_guidance_scale" in edited.images.settings

    # A caption → picture request shows no picture, not even the current one after reset(): the
    # [GEN] slots would read a prompt no generate request is trained on. The current image stays.
    from visionllm2.sdk.session import ImageRef

    session.reset()
    assert session.current_image is not None
    again = session.generate("a red circle on the left", seed=3, num_inference_steps=4)
    assert again.image_id is None and not any(isinstance(s, ImageRef) for s in session.exchanges[-1].user)
    assert np.array_equal(np.asarray(again.images.images[0]), np.asarray(images.images[0]))  # as in a fresh session
    assert session.edit("make the circle blue", seed=1, num_inference_steps=4).image_id == session.current_image


def test_free_answers_extend_the_prefix_cache_and_match_a_fresh_run(session, photo):
    session.detect(["person"], image=photo)
    first = session.ask("what is it?", max_new_tokens=6)
    ids, cache = session._prefix_cache
    assert cache is not None and cache.get_seq_length() == len(ids)
    cached = session.ask("and the colour?", max_new_tokens=6)  # reuses the cache of both turns
    session._prefix_cache = ((), None)
    session.exchanges.pop()
    session.turns.pop()
    fresh = session.ask("and the colour?", max_new_tokens=6)
    assert cached.text == fresh.text and first.index == 1


def test_from_pretrained_directory_with_an_accelerate_device_map(tmp_path, photo, tokenizer):
    from visionllm2.model.config import VisionLLMv2Config
    from visionllm2.model.visionllm import VisionLLMv2

    torch.manual_seed(0)
    VisionLLMv2.from_config(VisionLLMv2Config.preset("tiny"), tokenizer=tokenizer).save_pretrained(tmp_path / "m")
    plain = Session.from_pretrained(str(tmp_path / "m"), device="cpu")
    mapped = Session.from_pretrained(str(tmp_path / "m"), device_map={"": "cpu"})
    assert plain.model.dtype == torch.float32
    np.testing.assert_array_equal(plain.ground("person", image=photo).boxes.xyxy,
                                  mapped.ground("person", image=photo).boxes.xyxy)


def test_a_device_map_picks_the_default_dtype_of_where_it_runs():
    # A map of "cpu" and "disk" runs in float32 though the machine has a GPU (it loaded bfloat16 there,
    # and its answers drifted from the CPU's); a map that names a GPU gets the GPU's half precision.
    from visionllm2.sdk._loading import mapped_device

    assert mapped_device({"": "cpu"}) == mapped_device({"llm": "disk", "gdino": torch.device("cpu")}) == "cpu"
    assert mapped_device({"llm": 0, "gdino": "cpu"}) == mapped_device({"": "cuda:1"}) == "cuda"
    assert mapped_device("auto") is None  # a strategy: the default device, CUDA when present
    if not torch.cuda.is_available():  # a map onto a GPU this torch cannot see: the typed error, not accelerate's
        with pytest.raises(InvalidInputError, match="expected a CUDA GPU"):
            Session.from_pretrained("tiny", device_map={"": 0})


def test_parts_offloaded_by_a_device_map_answer_as_if_they_were_loaded(tmp_path, photo, tokenizer):
    # Offloaded parts hold empty meta weights outside their own calls (accelerate's hooks load them
    # then), as on a GPU too small for the 7B model. Before, the query tables were read through
    # `.weight` (answers from empty queries), `model.device` said "meta", and every decoder failed.
    from route_steps import tiny_config_with_denoisers

    from visionllm2.model.decoders import build_decoders
    from visionllm2.model.visionllm import VisionLLMv2

    torch.manual_seed(0)
    config = tiny_config_with_denoisers()
    config.detection.score_threshold = config.pose.score_threshold = 0.0  # random weights: show every answer
    VisionLLMv2.from_config(config, build_decoders(config), tokenizer).save_pretrained(tmp_path / "m")
    plain = Session.from_pretrained(str(tmp_path / "m"), device="cpu")
    names = [name for name, _ in plain.model.named_children()]
    kept = {"vl_bridge"}  # one part stays, so the map mixes loaded and offloaded ones
    device_map = {name: "cpu" if name in kept else "disk" for name in names}
    mapped = Session.from_pretrained(str(tmp_path / "m"), device_map=device_map, offload_folder=str(tmp_path / "off"))
    assert mapped.model.llm.get_input_embeddings().weight.is_meta and mapped.model.device == torch.device("cpu")
    assert not any(p.is_meta for decoder in mapped.model.decoders().values() for p in decoder.parameters())
    for session in (plain, mapped):
        session.detect(["person", "rocket"], image=photo)
        session.segment(prompts=[Box(40, 30, 200, 220)])  # the region encoder
        session.pose(["person"])
        session.generate("a red circle", seed=3)
        session.edit("make it blue", image=photo, seed=3)
    assert [len(r) for t in mapped.turns for r in t.results if r.kind != "images"] == [len(r) for t in plain.turns for r in t.results if r.kind != "images"]
    assert all(len(r) for t in plain.turns for r in t.results)  # something to compare in every turn
    for ours, theirs in zip(plain.turns, mapped.turns, strict=True):
        assert ours.text == theirs.text
        for a, b in zip(ours.results, theirs.results, strict=True):
            if a.kind == "images":
                assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
            else:
                np.testing.assert_allclose(a.xyxy if a.kind == "boxes" else a.boxes,
                                           b.xyxy if b.kind == "boxes" else b.boxes, atol=1e-3)


def test_a_session_goes_on_after_its_model_is_cast_or_moved(photo):
    # The conversation's KV cache and the image's features were made for the old device and dtype;
    # reused as they were, the next turn raised (attention: bfloat16 queries, float32 cached keys).
    session = Session.from_pretrained("tiny", device="cpu")
    session.detect(["person"], image=photo)
    session.model.to(torch.bfloat16)
    session.detect(["rocket"])
    session.ask("What is in the picture?")
    session.model.to(torch.float32)
    session.segment(prompts=[Box(40, 30, 200, 220)])
    assert [t.routes for t in session.turns][:2] == [["[DET]"], ["[DET]"]] and len(session.turns) == 4


def test_only_the_most_recently_used_images_keep_their_features(photo):
    # A loop over many pictures in one session once kept every picture's features on the device.
    from skimage import data

    session = Session.from_pretrained("tiny", device="cpu", max_encoded_images=2)
    session.model.config.detection.score_threshold = 0.0  # random weights: keep every answer
    pictures = [photo, data.coffee()[::4, ::4], data.chelsea()[::4, ::4]]
    first = session.detect(["person"], image=pictures[0]).boxes
    for picture in pictures[1:]:
        session.reset()
        session.detect(["person"], image=picture)
    assert {name: image.features is not None for name, image in session.images.items()} == {
        "image1": False, "image2": True, "image3": True}
    session.reset()
    again = session.detect(["person"], image="image1").boxes  # encoded again, the same answer
    assert len(first) > 0 and np.allclose(first.xyxy, again.xyxy, atol=1e-4)
    assert [name for name, image in session.images.items() if image.features is not None] == ["image1", "image3"]
    for bad in (0, -1, 2.5, "8"):
        with pytest.raises(InvalidInputError, match="max_encoded_images: expected an integer ≥ 1"):
            Session(session.model, max_encoded_images=bad)
    session.reset(images=True)  # the pictures go too
    assert session.images == {} and session.current_image is None and not session.turns
    assert session.set_image(photo) == "image1"


def test_the_options_a_session_accepts_are_the_ones_decoding_takes():
    """The option check keeps its own list of the LLM's decoding options; it must not drift from
    generate()'s keywords (``seed`` becomes its ``generator``)."""
    import inspect

    from visionllm2.model.generation import generate
    from visionllm2.sdk._arguments import LLM_OPTIONS

    internal = {"model", "batch", "image_features", "cache", "cached_tokens", "generator"}
    assert set(LLM_OPTIONS) == set(inspect.signature(generate).parameters) - internal | {"seed"}
