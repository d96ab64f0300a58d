"""The composite model on the tiny preset: shapes, super-link gradients, generation, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from forced_decoding import forced
from torch import nn

from visionllm2.model import tokens as T
from visionllm2.model.batch import collate
from visionllm2.model.decoders.base import DecoderOutput, TaskDecoder
from visionllm2.model.errors import CheckpointError, InvalidInputError, InvalidPromptError
from visionllm2.model.processor import ImageSlot, Message, RegionInput, RegionSlot
from visionllm2.model.visionllm import VisionLLMv2, clean_label


class ProbeDecoder(TaskDecoder):
    """A stand-in decoder: pools each group's query states and regresses a target per group."""

    routes = (T.DET, T.GRD, T.SEG)

    def __init__(self, width: int) -> None:
        super().__init__()
        self.link = nn.Linear(width, 1)

    def forward(self, link, images=None, targets=None):
        scores = self.link(link.states.mean(1))[:, 0]  # (G,)
        loss = None if targets is None else ((scores - torch.cat([torch.as_tensor(t) for t in targets])) ** 2).mean()
        return DecoderOutput(loss=loss, losses={} if loss is None else {"probe": loss}, predictions=scores)


def detection_conversation(processor, image, with_region=True):
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[20:40, 30:60] = True
    image_input = processor.process_image(image)
    regions = [RegionInput(0, processor.region_mask(mask, image_input.size))] if with_region else []
    question = [ImageSlot(0), "\nCan you analyze the image and identify the red circle, blue star present?"]
    if with_region:
        question += [" like ", RegionSlot("region1")]
    answer = ["Yes, here are the results for ", *processor.route_segments(T.DET, "red circle"), ", ",
              *processor.route_segments(T.DET, "blue star"), "."]
    messages = [Message("user", question), Message("assistant", answer)]
    return processor.build(messages, [image_input], regions)


def test_forward_shapes_labels_and_link(tiny_config, tokenizer, processor, rgb_image):
    torch.manual_seed(0)
    model = VisionLLMv2.from_config(tiny_config, {"gdino": ProbeDecoder(64)}, tokenizer)
    chat = detection_conversation(processor, rgb_image)
    tiles = chat.images[0].pixel_values.shape[0]
    assert chat.input_ids.count(tokenizer.token_id(T.IMAGE_PATCH)) == tiles * 16
    query_positions = [i for i, t in enumerate(chat.input_ids) if t == tokenizer.token_id("[EMB]")]
    assert all(chat.labels[i] == -100 for i in query_positions)  # query slots are never LM targets
    batch = collate([chat, chat], tokenizer.pad_id)
    out = model(batch, targets={"gdino": [[1.0, 0.0], [0.0, 1.0]]})
    assert out.logits.shape == (2, len(chat.input_ids), tiny_config.llm.vocab_size)
    link = out.link["gdino"]
    assert link.states.shape == (4, 4, 64)
    assert link.labels == ["red circle", "blue star"] * 2
    assert link.sample_index.tolist() == [0, 0, 1, 1]
    assert torch.isfinite(out.loss) and "probe" in out.decoder_outputs["gdino"].losses


def test_decoder_loss_reaches_llm_queries_region_encoder_and_bridge(tiny_config, tokenizer, processor, rgb_image):
    torch.manual_seed(0)
    model = VisionLLMv2.from_config(tiny_config, {"gdino": ProbeDecoder(64)}, tokenizer)
    out = model(collate([detection_conversation(processor, rgb_image)], tokenizer.pad_id), targets={"gdino": [[1.0, -1.0]]})
    out.decoder_outputs["gdino"].loss.backward()  # the decoder's loss alone, not the LM's
    grads = {
        "query table": model.emb_embeddings_det.weight.grad,
        "llm first layer": model.llm.model.layers[0].self_attn.q_proj.weight.grad,
        "llm last layer": model.llm.model.layers[-1].mlp.down_proj.weight.grad,
        "region encoder stem": model.region_encoder.mask_embedding[0].weight.grad,
        "region up_dim": model.region_encoder.up_dim.weight.grad,
        "vl_bridge": model.vl_bridge[0].weight.grad,
        "vision tower": model.vis_encoder.embeddings.patch_embedding.weight.grad,
    }
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.emb_embeddings_pose.weight.grad is None  # no [POSE] group in this answer


def prompts(processor, image):
    with_image = processor.build([Message("user", [ImageSlot(0), "\nidentify the red circle"])], [image],
                                 add_generation_prompt=True)
    text_only = processor.build([Message("user", ["make a blue star please"])], add_generation_prompt=True)
    return with_image, text_only


def script(tokenizer, *parts):
    ids = []
    for part in parts:
        ids += [tokenizer.token_id(part)] if part in T.SPECIAL_TOKENS else tokenizer.encode_text(part)
    return ids


def test_generation_appends_exactly_the_route_queries(tiny_model, tokenizer, processor, rgb_image):
    scripts = [script(tokenizer, "red circle", T.DET, ", blue star", T.DET, "."), script(tokenizer, "here it is", T.GEN)]
    results = tiny_model.generate(collate(prompts(processor, rgb_image), tokenizer.pad_id, "left"), max_new_tokens=12,
                                  logits_processor=forced(scripts))
    det, gen = results
    assert det.routes == [T.DET, T.DET] and gen.routes == [T.GEN]
    det_run = det.token_ids[det.token_ids.index(tokenizer.token_id(T.DET)) + 1:][:5]
    assert det_run[:4] == [tokenizer.token_id(q) for q in T.QUERY_TOKENS[:4]] and det_run[4] not in T.QUERY_TOKENS
    gen_position = gen.token_ids.index(tokenizer.token_id(T.GEN))
    query_ids = {tokenizer.token_id(q) for q in T.QUERY_TOKENS}
    assert sum(t in query_ids for t in gen.token_ids[gen_position + 1:]) == tiny_model.config.link.gen_queries
    assert [g.states.shape for g in det.groups] == [(4, 64), (4, 64)] and gen.groups[0].states.shape == (8, 64)
    assert [g.label for g in det.groups] == ["red circle", "blue star"]
    assert det.text.startswith("red circle[DET][EMB][EMB2][EMB3][EMB4], blue star[DET]")


def test_batched_generation_equals_one_by_one_and_a_full_recompute(tiny_model, tokenizer, processor, rgb_image):
    scripts = [script(tokenizer, "red circle", T.DET, ", blue star", T.DET, "."), script(tokenizer, "ok", T.GEN)]
    chats = prompts(processor, rgb_image)
    together = tiny_model.generate(collate(chats, tokenizer.pad_id, "left"), max_new_tokens=12,
                                   logits_processor=forced(scripts))
    for chat, row_script, batched in zip(chats, scripts, together):
        alone = tiny_model.generate(collate([chat], tokenizer.pad_id, "left"), max_new_tokens=12,
                                    logits_processor=forced([row_script]))[0]
        assert alone.token_ids == batched.token_ids
        for a, b in zip(alone.groups, batched.groups):
            torch.testing.assert_close(a.states, b.states, atol=1e-4, rtol=1e-4)
        # The cached, chunked decode sees what one teacher-forced pass over the whole text sees.
        full = collate([type(chat)(chat.input_ids + alone.token_ids, None, chat.images, chat.regions, chat.answer_start)],
                       tokenizer.pad_id)
        with torch.no_grad():
            link = tiny_model(full).link
        states = torch.cat([v.states for v in link.values()])
        torch.testing.assert_close(states, torch.stack([g.states for g in alone.groups]), atol=1e-4, rtol=1e-4)


def test_sampling_is_reproducible_with_a_generator(tiny_model, tokenizer, processor, rgb_image):
    batch = collate(prompts(processor, rgb_image), tokenizer.pad_id, "left")
    runs = [tiny_model.generate(batch, max_new_tokens=6, do_sample=True, temperature=0.8, top_p=0.9,
                                generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert [r.token_ids for r in runs[0]] == [r.token_ids for r in runs[1]]


def test_save_load_round_trip_gives_identical_outputs(tmp_path, tiny_config, tokenizer, processor, rgb_image):
    torch.manual_seed(0)
    model = VisionLLMv2.from_config(tiny_config, tokenizer=tokenizer).eval()  # with its detection decoder
    assert "gdino" in model.decoders()
    batch = collate([detection_conversation(processor, rgb_image)], tokenizer.pad_id)
    model.save_pretrained(tmp_path / "one")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="300KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    with torch.no_grad():
        expected = model(batch, [rgb_image])
        for name in ("one", "sharded"):
            loaded = VisionLLMv2.from_pretrained(tmp_path / name).eval()
            # Same weights bit for bit, shared heads still shared; oneDNN's conv may sum in another
            # order for other buffer alignments, so outputs agree to float32 rounding.
            assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
            assert loaded.gdino.bbox_embed[0] is loaded.gdino.bbox_embed[-1] is loaded.gdino.model.decoder.bbox_embed[0]
            got = loaded(batch, [rgb_image])
            torch.testing.assert_close(got.logits, expected.logits, atol=1e-6, rtol=0)
            torch.testing.assert_close(got.decoder_outputs["gdino"].predictions[0].best_boxes,
                                       expected.decoder_outputs["gdino"].predictions[0].best_boxes, atol=1e-4, rtol=0)
            assert loaded.tokenizer.vocab_size == tokenizer.vocab_size


def test_half_precision_keeps_the_rotary_frequencies_in_float32(tmp_path, tiny_config, tokenizer):
    # transformers' loading keeps them float32; a blanket .to(bfloat16) would round each by up to 2⁻⁹.
    model = VisionLLMv2.from_config(tiny_config, tokenizer=tokenizer)
    exact = model.llm.model.rotary_emb.inv_freq.clone()
    model.save_pretrained(tmp_path / "m")
    for half in (model.to(torch.bfloat16), model.half(), VisionLLMv2.from_pretrained(tmp_path / "m", torch.bfloat16)):
        assert half.dtype in (torch.bfloat16, torch.float16)
        rotary = half.llm.model.rotary_emb
        assert rotary.inv_freq.dtype == rotary.original_inv_freq.dtype == torch.float32
        assert torch.equal(rotary.inv_freq, exact)
    assert not torch.equal(exact.bfloat16().float(), exact)  # what rounding would have cost


def test_strict_loading_names_missing_unexpected_and_mis_shaped_keys(tmp_path, tiny_config, tokenizer):
    from safetensors.torch import load_file, save_file

    VisionLLMv2.from_config(tiny_config, tokenizer=tokenizer).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("vl_bridge.0.bias")
    weights["extra.weight"] = torch.zeros(1)
    weights["emb_embeddings_det.weight"] = torch.zeros(5, 64)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        VisionLLMv2.from_pretrained(tmp_path)
    message = str(error.value)
    assert "missing: vl_bridge.0.bias" in message and "unexpected: extra.weight" in message
    assert "emb_embeddings_det.weight expected (4, 64) got (5, 64)" in message
    with pytest.raises(CheckpointError, match="config.json"):
        VisionLLMv2.from_pretrained(tmp_path / "nowhere")


def test_corrupt_weights_and_config_name_their_file(tmp_path, tiny_config, tokenizer):
    VisionLLMv2.from_config(tiny_config, tokenizer=tokenizer).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted copy
    with pytest.raises(CheckpointError, match=r"model.safetensors: expected a readable safetensors file"):
        VisionLLMv2.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"config.json: config is not valid JSON"):
        VisionLLMv2.from_pretrained(tmp_path)


def test_bad_inputs_raise_typed_errors(tiny_model, tokenizer, processor, rgb_image):
    chat = detection_conversation(processor, rgb_image, with_region=False)
    with pytest.raises(InvalidInputError, match="<im_patch>"):
        tiny_model(collate([type(chat)(chat.input_ids, chat.labels)], tokenizer.pad_id))
    with pytest.raises(InvalidPromptError, match="names 1 regions, got 0 masks"):
        processor.build([Message("user", [RegionSlot("region1")])])
    with pytest.raises(InvalidPromptError, match="at least one message"):
        processor.build([])
    with pytest.raises(InvalidPromptError, match="role"):
        processor.build([Message("system", ["hi"])])
    with pytest.raises(InvalidInputError, match="left-padded"):
        tiny_model.generate(collate(prompts(processor, rgb_image), tokenizer.pad_id, "right"))
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        tiny_model.generate(collate([chat], tokenizer.pad_id, "left"), max_new_tokens=0)


@pytest.mark.parametrize(
    "text, label",
    [("Yes, here are the results for person", "person"), (", dog", "dog"), ("red circle", "red circle"), ("", "")],
)
def test_clean_label(text, label):
    assert clean_label(text) == label
