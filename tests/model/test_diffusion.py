"""[GEN] / [EDIT] decoders on tiny pixel-space (and tiny-VAE) configs: link, losses, sampling, keys."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from visionllm2.model import tokens as T
from visionllm2.model.batch import collate
from visionllm2.model.config import GenerationConfig, TextEncoderConfig, VisionLLMv2Config
from visionllm2.model.convert import map_official_key
from visionllm2.model.decoders import build_decoders
from visionllm2.model.decoders.base import LinkStates
from visionllm2.model.decoders.diffusion import (
    DenoisingStep,
    DiffusionImages,
    DiffusionTarget,
    EditingDecoder,
    GenerationDecoder,
)
from visionllm2.model.decoders.diffusion_parts import (
    CaptionTokenizer,
    PixelSpace,
    PositionAwareUNet,
    parse_sampler,
    to_pixels,
)
from visionllm2.model.errors import CheckpointError, InvalidInputError, UnknownTaskError
from visionllm2.model.processor import ImageSlot, Message
from visionllm2.model.visionllm import VisionLLMv2

WIDTH = 64  # the tiny preset's LLM width


def picture(colour: tuple[int, int, int], left: bool, side: int = 16) -> np.ndarray:
    """A black square image with one coloured block on the left or the right half."""
    image = np.zeros((side, side, 3), dtype=np.uint8)
    quarter = side // 4
    columns = slice(1, side // 2 - 1) if left else slice(side // 2 + 1, side - 1)
    image[quarter: side - quarter, columns] = colour
    return image


def link_of(count: int, route: str = T.GEN, seed: int = 0) -> LinkStates:
    states = torch.randn(count, 8, WIDTH, generator=torch.Generator().manual_seed(seed))  # (G, n, H)
    return LinkStates(states, [route] * count, [f"caption {g}" for g in range(count)], [[]] * count,
                      torch.arange(count))


def generation_chat(processor, caption: str):
    answer = ["Here it is ", *processor.route_segments(T.GEN), "."]
    return processor.build([Message("user", [f"Generate image with caption: {caption}."]), Message("assistant", answer)])


def editing_chat(processor, image, caption: str):
    question = [ImageSlot(0), f"\nEdit the image according to the caption: {caption}."]
    answer = ["Here it is ", *processor.route_segments(T.EDIT), "."]
    return processor.build([Message("user", question), Message("assistant", answer)], [image])


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def generator_decoder() -> GenerationDecoder:
    torch.manual_seed(0)
    return GenerationDecoder(GenerationConfig.tiny(), WIDTH).eval()


@pytest.fixture(scope="module")
def editing_decoder() -> EditingDecoder:
    torch.manual_seed(0)
    return EditingDecoder(GenerationConfig.tiny(edit=True), WIDTH).eval()


# ---------------------------------------------------------------------- structure
def test_link_shapes_mapper_and_frozen_parts():
    torch.manual_seed(0)
    config = GenerationConfig.tiny(latent=True)
    sd = GenerationDecoder(config, WIDTH)
    embeds = sd.prompt_embeds(link_of(3).states)
    assert embeds.shape == (3, config.mapper_queries, config.cross_attention_dim)  # (G, Q, d)
    assert sd.llm2sd_mapper_queries.shape == (1, 16, 32)
    layer = sd.llm2sd_mapper.encoder.layers[0]
    assert layer.norm_first and layer.linear1.out_features == config.mapper_ffn_dim and layer.self_attn.num_heads == 4
    assert len(sd.llm2sd_mapper.encoder.layers) == len(sd.llm2sd_mapper.decoder.layers) == 1
    assert sd.null_embeds().shape == (1, 16, 32)
    trainable = {name.split(".")[0] for name, p in sd.named_parameters() if p.requires_grad}
    assert trainable == {"emb_proj", "llm2sd_mapper", "llm2sd_mapper_queries"}  # UNet, VAE, CLIP frozen for [GEN]
    ip2p = EditingDecoder(GenerationConfig.tiny(edit=True, latent=True), WIDTH)
    assert ip2p.sd_unet.conv_in.in_channels == 8 and all(p.requires_grad for p in ip2p.sd_unet.parameters())
    assert not any(p.requires_grad for p in ip2p.sd_vae.parameters())
    assert isinstance(GenerationDecoder(GenerationConfig.tiny(), WIDTH).sd_vae, PixelSpace)


def test_seven_b_sizes_build_on_the_meta_device():
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        sd = GenerationDecoder(GenerationConfig(), 4096)
        ip2p = EditingDecoder(GenerationConfig.instruct_pix2pix(), 4096)
    expected = {  # the official checkpoint's parameter counts (shared/official/summary.txt)
        "sd": {"emb_proj": 3_737_088, "llm2sd_mapper": 16_542_720, "sd_unet": 859_520_964,
               "sd_vae": 83_653_863, "sd_text_encoder": 123_060_480},
        "ip2p": {"emb_proj": 3_737_088, "llm2sd_mapper": 16_542_720, "sd_unet": 859_532_484,
                 "sd_vae": 83_653_863, "sd_text_encoder": 123_060_480},
    }
    for name, decoder in (("sd", sd), ("ip2p", ip2p)):
        counts = {child: sum(p.numel() for p in module.parameters()) for child, module in decoder.named_children()}
        assert counts == expected[name] and decoder.llm2sd_mapper_queries.shape == (1, 77, 768)
    assert (sd.sd_unet.config.in_channels, ip2p.sd_unet.config.in_channels) == (4, 8)
    assert sd.sd_text_encoder.config.num_hidden_layers == 12 and sd.sd_unet.config.cross_attention_dim == 768


def test_configs_round_trip_and_refuse_parts_that_do_not_fit():
    config = replace(VisionLLMv2Config.preset("tiny"), generation=GenerationConfig.tiny(latent=True),
                     editing=GenerationConfig.tiny(edit=True))
    again = VisionLLMv2Config.from_json(config.to_json())
    assert again == config and again.editing.vae is None and again.generation.unet.block_out_channels == (16, 32)
    assert set(build_decoders(again)) >= {"sd", "ip2p"}
    seven = VisionLLMv2Config.preset("7b")
    assert (seven.generation.unet.in_channels, seven.editing.unet.in_channels) == (4, 8)
    assert (seven.generation.train_unet, seven.editing.train_unet) == (False, True)
    assert (seven.generation.condition_dropout, seven.editing.condition_dropout) == (0.1, 0.05)
    with pytest.raises(CheckpointError, match="unet.in_channels 3 ≠ 6"):
        EditingDecoder(GenerationConfig.tiny(), WIDTH)
    with pytest.raises(CheckpointError, match="max_position_embeddings 16 < mapper_queries 20"):
        GenerationDecoder(replace(GenerationConfig.tiny(), mapper_queries=20), WIDTH)
    with pytest.raises(CheckpointError, match="prediction_type: expected one of .*, got 'sample'"):
        GenerationDecoder(replace(GenerationConfig.tiny(), prediction_type="sample"), WIDTH)
    old_config = config.to_dict()
    del old_config["generation"]["prediction_type"]  # saved before the field existed: SD 1.5's ε
    assert VisionLLMv2Config.from_dict(old_config).generation.prediction_type == "epsilon"


def test_a_position_aware_unet_adds_a_trained_position_embedding_and_round_trips(tmp_path, tiny_config, tokenizer):
    torch.manual_seed(0)
    config = GenerationConfig.tiny()
    config = replace(config, unet=replace(config.unet, position_embedding=True),
                     text_encoder=replace(config.text_encoder, word_embedding_std=1.0))
    sd = GenerationDecoder(config, WIDTH)
    unet = sd.sd_unet.requires_grad_(True)
    assert isinstance(unet, PositionAwareUNet) and unet.position_embedding.shape == (16, 16, 16)  # (C₀, S, S)
    words = sd.sd_text_encoder.get_input_embeddings().weight
    assert 0.9 < float(words.std()) < 1.1  # started wide; CLIP's own start is 0.02
    noisy, context = torch.randn(1, 3, 16, 16), sd.encode_captions(["red square left"])
    out = unet(noisy, torch.tensor([500]), encoder_hidden_states=context).sample
    out.square().mean().backward()
    assert unet.position_embedding.grad is not None and unet.position_embedding.grad.abs().sum() > 0
    with torch.no_grad():
        start = unet.position_embedding.clone()
        unet.position_embedding.zero_()
        assert not torch.allclose(unet(noisy, torch.tensor([500]), encoder_hidden_states=context).sample, out)
        unet.position_embedding.copy_(start)
    bigger = unet(torch.zeros(1, 3, 24, 24), torch.tensor([500]), encoder_hidden_states=context).sample
    assert bigger.shape == (1, 3, 24, 24)  # the embedding is resized to another picture size
    with pytest.raises(CheckpointError, match=r"divisible by 4 \(sine and cosine of x and y\), got 18"):
        GenerationDecoder(replace(config, unet=replace(config.unet, block_out_channels=(18, 32), norm_num_groups=2)), WIDTH)

    model_config = replace(tiny_config, generation=config)
    model = VisionLLMv2.from_config(model_config, {**build_decoders(model_config), "sd": sd}, tokenizer)
    model.save_pretrained(tmp_path)
    loaded = VisionLLMv2.from_pretrained(tmp_path).sd.sd_unet
    assert isinstance(loaded, PositionAwareUNet)
    assert torch.equal(loaded.position_embedding, sd.sd_unet.position_embedding)


def test_checkpoint_round_trip_with_both_decoders(tmp_path, tiny_config, tokenizer):
    torch.manual_seed(0)
    config = replace(tiny_config, generation=GenerationConfig.tiny(), editing=GenerationConfig.tiny(edit=True))
    model = VisionLLMv2.from_config(config, build_decoders(config), tokenizer)
    model.save_pretrained(tmp_path)
    loaded = VisionLLMv2.from_pretrained(tmp_path)
    assert isinstance(loaded.sd, GenerationDecoder) and isinstance(loaded.ip2p, EditingDecoder)
    assert model.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert not loaded.sd.sd_unet.conv_in.weight.requires_grad and loaded.ip2p.sd_unet.conv_in.weight.requires_grad


def test_caption_ids_match_clip_tokenizer_layout(tmp_path):
    builtin = CaptionTokenizer.from_config(GenerationConfig.tiny().text_encoder, 6)
    ids = builtin(["red circle", "a very very very long caption"])
    words = builtin.words("red circle")
    assert ids[0].tolist() == [1, *words, 2, 2, 2] and ids[1, -1].item() == 2 and len(ids[1]) == 6
    assert builtin.null_ids().tolist() == [[1, 2, 2, 2, 2, 2]]
    # A local CLIP tokenizer directory gives what CLIPTokenizer itself gives with max_length padding.
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate([*letters, *(f"{c}</w>" for c in letters)])}
    vocab.update({"re": 52, "red</w>": 53, "<|startoftext|>": 54, "<|endoftext|>": 55})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\n")
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<|endoftext|>"}))
    text = TextEncoderConfig(vocab_size=56, bos_token_id=54, eos_token_id=55, pad_token_id=55, tokenizer=str(tmp_path))
    ours = CaptionTokenizer.from_config(text, 5)
    clip = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    for caption in ["a red cab", "red", ""]:
        expected = clip(caption, padding="max_length", max_length=5, truncation=True).input_ids
        assert ours([caption])[0].tolist() == expected, caption
    with pytest.raises(InvalidInputError, match="needs a CLIP tokenizer"):
        CaptionTokenizer.from_config(replace(text, tokenizer=None), 5)(["red"])
    with pytest.raises(CheckpointError, match="nothing is downloaded"):
        CaptionTokenizer.from_config(replace(text, tokenizer="openai/clip-vit-large-patch14"), 5)


# ---------------------------------------------------------------------- training through the super link
def test_diffusion_losses_reach_the_llm_query_tables(tiny_config, tokenizer, processor):
    torch.manual_seed(0)
    decoders = {"sd": GenerationDecoder(GenerationConfig.tiny(), WIDTH),
                "ip2p": EditingDecoder(GenerationConfig.tiny(edit=True), WIDTH)}
    model = VisionLLMv2.from_config(tiny_config, decoders, tokenizer)
    source, target = picture((255, 0, 0), True, 40), picture((0, 0, 255), True, 40)
    batch = collate([generation_chat(processor, "red square"), editing_chat(processor, source, "make it blue")],
                    tokenizer.pad_id)
    out = model(batch, [None, source], targets={
        "sd": [DiffusionTarget(target, "red square"), None],
        "ip2p": [None, {"image": target, "caption": "make it blue"}],
    })
    assert out.link["sd"].states.shape == (1, 8, WIDTH) and out.link["ip2p"].sample_index.tolist() == [1]
    for name in ("sd", "ip2p"):
        losses = out.decoder_outputs[name].losses
        assert set(losses) == {"diffusion", "caption"} and all(torch.isfinite(v) for v in losses.values())
    (out.decoder_outputs["sd"].loss + out.decoder_outputs["ip2p"].loss).backward()  # not the LM loss
    grads = {
        "gen queries": model.emb_embeddings_gen.weight.grad,
        "edit queries": model.emb_embeddings_edit.weight.grad,
        "llm first layer": model.llm.model.layers[0].self_attn.q_proj.weight.grad,
        "sd emb_proj": model.sd.emb_proj[0].weight.grad,
        "sd mapper queries": model.sd.llm2sd_mapper_queries.grad,
        "ip2p unet": model.ip2p.sd_unet.conv_in.weight.grad,
    }
    for name, grad in grads.items():
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.sd.sd_unet.conv_in.weight.grad is None  # [GEN]'s UNet is frozen
    assert model.emb_embeddings_det.weight.grad is None


def test_condition_dropout_swaps_in_the_null_caption_embedding(generator_decoder, editing_decoder):
    generator_decoder.train()
    try:
        torch.manual_seed(0)
        drop_text, drop_image = generator_decoder.condition_dropout(10_000, torch.device("cpu"))
        assert abs(drop_text.float().mean().item() - 0.1) < 0.02 and not drop_image.any()
    finally:
        generator_decoder.eval()
    editing_decoder.train()
    try:
        drop_text, drop_image = editing_decoder.condition_dropout(10_000, torch.device("cpu"))
    finally:
        editing_decoder.eval()
    both = (drop_text & drop_image).float().mean().item()
    assert abs(drop_text.float().mean().item() - 0.1) < 0.02 and abs(drop_image.float().mean().item() - 0.1) < 0.02
    assert abs(both - 0.05) < 0.015
    assert not generator_decoder.condition_dropout(100, torch.device("cpu"))[0].any()  # eval: never dropped


@pytest.mark.parametrize("decoder_class, config", [(GenerationDecoder, GenerationConfig.tiny()),
                                                   (EditingDecoder, GenerationConfig.tiny(edit=True))])
def test_the_distillation_loss_compares_the_link_with_the_text_encoder_on_the_same_noisy_input(
        monkeypatch, decoder_class, config):
    """The teacher is the UNet on the caption's own embedding, at the student's noisy input and timestep:
    a link that outputs exactly that embedding scores 0 (at any noise), another link does not, and the
    loss trains the link alone (the teacher passes no gradient)."""
    torch.manual_seed(0)
    decoder = decoder_class(replace(config, distill_loss_weight=2.0, condition_dropout=0.0), WIDTH).train()
    link = link_of(3, decoder.routes[0])
    targets = [DiffusionTarget(picture((255 * (g % 2), 0, 255), g < 2), caption=f"a red circle {g}",
                               source=picture((0, 255, 0), True)) for g in range(3)]
    out = decoder(link, targets=targets)
    assert {"diffusion", "caption", "distill"} <= set(out.losses) and out.losses["distill"] > 0
    expected = out.losses["diffusion"] + decoder.config.caption_loss_weight * out.losses["caption"] + 2.0 * out.losses["distill"]
    assert torch.allclose(out.loss, expected)
    out.losses["distill"].backward()
    assert decoder.emb_proj[0].weight.grad.abs().sum() > 0  # the link learns from it
    assert all(p.grad is None for p in decoder.sd_text_encoder.parameters())

    captions = [t.caption for t in targets]
    monkeypatch.setattr(decoder, "prompt_embeds", lambda states: decoder.encode_captions(captions))
    assert decoder(link, targets=targets).losses["distill"] < 1e-12  # the student is the teacher

    decoder.config = replace(decoder.config, condition_dropout=1.0)  # every condition dropped: nothing to distil
    dropped = decoder(link, targets=targets)
    assert dropped.losses["distill"] == 0
    decoder.config = replace(decoder.config, distill_loss_weight=0.0)
    assert "distill" not in decoder(link, targets=targets).losses  # off by default, as in the official code


def test_the_edit_region_weight_weighs_the_changed_pixels_and_their_rim(editing_decoder):
    """Where target and source differ (and one pixel around) the loss weight is 1 + the weight; elsewhere 1.
    Weighted, the loss is the weighted mean of the squared error: all weights 1 give the plain MSE."""
    source, target = picture((255, 0, 0), True), picture((255, 0, 0), True)
    target[6:9, 2:5] = (0, 0, 255)  # the edit: a 3 × 3 patch recoloured
    item = DiffusionTarget(target, "make it blue", source)
    pixels = to_pixels([target], (16, 16))
    decoder = EditingDecoder(replace(GenerationConfig.tiny(edit=True), edit_region_weight=4.0), WIDTH)
    sources = decoder.source_pixels([item], torch.device("cpu"))  # (1, 3, 16, 16)
    assert torch.equal(sources, to_pixels([source], (16, 16)))
    weight = decoder.loss_weight(pixels, sources, (16, 16))  # (1, 1, 16, 16)
    expected = torch.ones(16, 16)
    expected[5:10, 1:6] = 5.0  # the patch grown by one pixel
    assert weight.shape == (1, 1, 16, 16) and torch.equal(weight[0, 0], expected)
    assert decoder.loss_weight(pixels, sources, (8, 8)).shape == (1, 1, 8, 8)  # pooled to the latents (max)
    assert decoder.loss_weight(sources, sources, (16, 16)).eq(1).all()  # nothing changed: all alike
    assert editing_decoder.loss_weight(pixels, sources, (16, 16)) is None  # off by default (official plain MSE)

    prediction, truth = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    step = DenoisingStep(torch.zeros(1, 6, 16, 16), torch.zeros(1), torch.zeros(1, dtype=torch.bool), prediction, truth)
    weighted = replace(step, weight=weight)
    squared = (prediction - truth).pow(2)
    assert torch.allclose(weighted.loss(), (squared * weight).sum() / (3 * weight.sum()))
    assert torch.allclose(replace(step, weight=torch.ones(1, 1, 16, 16)).loss(), step.loss())
    decoder.train()
    out = decoder(link_of(1, T.EDIT), targets=[item])
    assert torch.isfinite(out.loss) and out.losses["diffusion"] > 0


def test_a_sampler_is_a_diffusers_scheduler_and_a_positive_number_of_steps():
    assert parse_sampler("DDPMScheduler:50") == ("DDPMScheduler", 50)
    for bad in ("DDPMScheduler", "Nope:20", "DDIMScheduler:0", "DDIMScheduler:-3", "DDIMScheduler:x"):
        with pytest.raises(InvalidInputError, match="scheduler|sampler"):
            parse_sampler(bad)


def test_a_tiny_model_overfits_two_captioned_images(tiny_config, tokenizer, processor):
    torch.manual_seed(0)
    decoder = GenerationDecoder(replace(GenerationConfig.tiny(), train_unet=True), WIDTH)
    model = VisionLLMv2.from_config(tiny_config, {"sd": decoder}, tokenizer)
    captions = ["red square left", "blue square right"]
    targets = [DiffusionTarget(picture((255, 0, 0), True), captions[0]),
               DiffusionTarget(picture((0, 0, 255), False), captions[1])]
    batch = collate([generation_chat(processor, c) for c in captions], tokenizer.pad_id)

    def held_fixed_loss() -> float:  # the ε-loss on the same noises and timesteps every time
        model.eval()
        values = []
        with torch.no_grad():
            for seed in range(4):
                torch.manual_seed(100 + seed)
                values.append(model(batch, targets={"sd": targets}).decoder_outputs["sd"].losses["diffusion"].item())
        model.train()
        return sum(values) / len(values)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    curve = [held_fixed_loss()]
    for step in range(40):
        loss = model(batch, targets={"sd": targets}).decoder_outputs["sd"].loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 9:
            curve.append(held_fixed_loss())
    print("overfit curve (held-fixed ε-loss):", [round(x, 4) for x in curve])
    assert curve[-1] < 0.4 * curve[0], curve


# ---------------------------------------------------------------------- sampling
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("decoder_class, config", [(GenerationDecoder, GenerationConfig.tiny()),
                                                   (EditingDecoder, GenerationConfig.tiny(edit=True))])
def test_an_oracle_denoiser_gives_back_its_image_through_the_pipelines(monkeypatch, decoder_class, config,
                                                                       prediction_type):
    """A UNet that knows the answer: exact ε (or v) for one image under the training schedule.

    Training loss 0 and sampling returns that image: the pixel-space "VAE", the schedules of training
    and sampling, the prediction type, the pipelines' scaling and post-processing all agree.
    """
    torch.manual_seed(0)
    decoder = decoder_class(replace(config, prediction_type=prediction_type), WIDTH).eval()
    target, source = picture((255, 0, 0), True), picture((0, 255, 0), False)
    clean = to_pixels([target], (16, 16))  # (1, 3, 16, 16)
    alphas = decoder.noise_scheduler.alphas_cumprod

    def oracle(sample, timestep, encoder_hidden_states=None, return_dict=True, **unused):
        a = alphas[torch.as_tensor(timestep).long()].reshape(-1, 1, 1, 1)
        eps = (sample[:, :3] - a.sqrt() * clean) / (1 - a).sqrt()  # [EDIT]: the first 3 of 6 channels
        out = a.sqrt() * eps - (1 - a).sqrt() * clean if prediction_type == "v_prediction" else eps
        return SimpleNamespace(sample=out) if return_dict else (out,)

    monkeypatch.setattr(decoder.sd_unet, "forward", oracle)
    link = link_of(1, decoder.routes[0])
    assert decoder(link, [source], targets=[DiffusionTarget(target)]).losses["diffusion"] < 1e-10
    for scheduler in ("DDIMScheduler", "DPMSolverMultistepScheduler"):
        made = decoder.predict(link, [source], seed=0, num_inference_steps=10, scheduler=scheduler)
        # DDIM stops at ᾱ_0 < 1 (set_alpha_to_one False, as SD 1.5): a trace of noise is left.
        assert np.abs(pixels(made.images[0]) - target).max() <= 6, scheduler


@pytest.mark.parametrize("latent", [False, True])
def test_pixel_space_sampling_clamps_the_clean_estimate_and_latent_sampling_does_not(latent):
    """Pixel values live in [−1, 1]; latents do not. The clamp must survive the pipelines, which
    reset ``clip_sample`` (hence dynamic thresholding with its ceiling at 1), for every scheduler
    that can threshold."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    for edit, decoder_class in ((False, GenerationDecoder), (True, EditingDecoder)):
        decoder = decoder_class(GenerationConfig.tiny(latent=latent, edit=edit), WIDTH)
        for scheduler in (decoder._fresh_scheduler(None), decoder._fresh_scheduler(DPMSolverMultistepScheduler),
                          decoder._fresh_scheduler("DDPMScheduler")):
            kept = decoder.pipeline(scheduler).scheduler.config
            assert kept.thresholding is not latent and kept.sample_max_value == 1.0, type(scheduler).__name__
    # The clamp: a clean estimate far outside the pixel range comes back inside it.
    scheduler = GenerationDecoder(GenerationConfig.tiny(latent=latent), WIDTH)._fresh_scheduler(DDPMScheduler)
    scheduler.set_timesteps(10)
    wild = torch.full((1, 3, 4, 4), 5.0)  # with ε = 0 the clean estimate is ≈ the sample: far out of range
    last = scheduler.step(torch.zeros_like(wild), scheduler.timesteps[-1], wild).pred_original_sample
    assert (last.abs().max() <= 1.0) is not latent


def test_same_seed_same_image_other_seed_other_image(generator_decoder):
    link = link_of(2)
    first = generator_decoder.predict(link, seed=7)
    again = generator_decoder.predict(link, seed=7)
    other = generator_decoder.predict(link, seed=8)
    assert isinstance(first, DiffusionImages) and first.seeds == [7, 8]
    assert [im.size for im in first.images] == [(16, 16)] * 2 and first.images[0].mode == "RGB"
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first.images, again.images))
    assert not np.array_equal(pixels(first.images[0]), pixels(other.images[0]))
    # The second image has seed 8 (7 + 1): alone with seed 8 it comes out the same.
    second = LinkStates(link.states[1:], [T.GEN], ["x"], [[]], torch.zeros(1, dtype=torch.long))
    alone = generator_decoder.predict(second, seed=8)
    assert np.abs(pixels(alone.images[0]) - pixels(first.images[1])).max() <= 1
    assert first.settings() == {"scheduler": "DDIMScheduler", "steps": 10, "guidance_scale": 1.5}
    assert first.captions == ["caption 0", "caption 1"] and first.route == T.GEN


def test_generators_and_global_seed_are_reproducible_and_recorded(generator_decoder):
    link = link_of(1)
    a = generator_decoder.predict(link, generator=torch.Generator().manual_seed(3))
    b = generator_decoder.predict(link, generator=torch.Generator().manual_seed(3))
    assert a.seeds == b.seeds and np.array_equal(pixels(a.images[0]), pixels(b.images[0]))
    replay = generator_decoder.predict(link, seed=a.seeds[0])
    assert np.array_equal(pixels(replay.images[0]), pixels(a.images[0]))
    torch.manual_seed(11)
    c = generator_decoder(link).predictions  # forward without targets samples with the config's defaults
    torch.manual_seed(11)
    assert generator_decoder(link).predictions.seeds == c.seeds


def test_options_schedulers_and_latent_vae(generator_decoder):
    from diffusers import EulerDiscreteScheduler

    link = link_of(1)
    out = generator_decoder.predict(link, seed=1, num_inference_steps=3, guidance_scale=1.0, height=24, width=40,
                                    scheduler="DPMSolverMultistepScheduler", captions=["a red square"])
    assert out.images[0].size == (40, 24) and out.steps == 3 and out.scheduler == "DPMSolverMultistepScheduler"
    assert out.captions == ["a red square"]
    kept = generator_decoder.scheduler
    generator_decoder.scheduler = EulerDiscreteScheduler.from_config(kept.config)
    try:
        assert generator_decoder.predict(link, seed=1, num_inference_steps=2).scheduler == "EulerDiscreteScheduler"
    finally:
        generator_decoder.scheduler = kept
    with pytest.raises(UnknownTaskError, match="diffusers scheduler"):
        generator_decoder.predict(link, scheduler="NoSuchScheduler")
    with pytest.raises(InvalidInputError, match="multiple of 8"):
        generator_decoder.predict(link, height=20)
    with pytest.raises(InvalidInputError, match="one per image"):
        generator_decoder.predict(link_of(2), seed=[1])
    with pytest.raises(InvalidInputError, match="num_inference_steps: expected an integer ≥ 1, got 0"):
        generator_decoder.predict(link, num_inference_steps=0)  # 0 is not "the default"
    with pytest.raises(InvalidInputError, match="up to 4096"):
        generator_decoder.predict(link, width=8192)
    assert generator_decoder.predict(link_of(2), seed=np.int64(5), num_inference_steps=1).seeds == [5, 6]
    torch.manual_seed(0)
    latent = GenerationDecoder(GenerationConfig.tiny(latent=True), WIDTH).eval()
    made = latent.predict(link, seed=2, num_inference_steps=2)
    assert made.images[0].size == (32, 32)


def test_editing_reads_the_input_image(editing_decoder):
    link = link_of(2, T.EDIT)
    red, blue = picture((255, 0, 0), True, 48), picture((0, 0, 255), False, 48)
    first = editing_decoder.predict(link, [red, red], seed=[5, 5])
    # Same states, seed and source → same image; another source → another image.
    again = editing_decoder.predict(link, [red, red], seed=[5, 5])
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    changed = editing_decoder.predict(link, [red, blue], seed=[5, 5])
    assert np.array_equal(pixels(changed.images[0]), pixels(first.images[0]))
    assert not np.array_equal(pixels(changed.images[1]), pixels(first.images[1]))
    assert first.image_guidance_scale == 1.5 and "image_guidance_scale" in first.settings()
    wide = editing_decoder.predict(link_of(1, T.EDIT), [np.zeros((40, 80, 3), np.uint8)], seed=0)
    assert wide.images[0].size == (16, 8)  # the source's aspect ratio, longer side image_size
    with pytest.raises(InvalidInputError, match="no input image"):
        editing_decoder.predict(link, None)


def test_training_targets_are_checked(generator_decoder):
    with pytest.raises(InvalidInputError, match="has a \\[GEN\\] group but no target"):
        generator_decoder(link_of(2), targets=[DiffusionTarget(picture((255, 0, 0), True))])
    with pytest.raises(InvalidInputError, match="DiffusionTarget"):
        generator_decoder(link_of(1), targets=["not a target"])
    with pytest.raises(InvalidInputError, match="DiffusionTarget"):
        generator_decoder(link_of(1), targets=[{"picture": picture((255, 0, 0), True)}])
    out = generator_decoder(link_of(1), targets=[DiffusionTarget(picture((255, 0, 0), True))])
    assert set(out.losses) == {"diffusion"}  # no caption, no caption loss


# ---------------------------------------------------------------------- official keys
def test_text_encoder_rename_rule():
    official = "sd.sd_text_encoder.text_model.final_layer_norm.weight"
    assert map_official_key(official) == ["sd.sd_text_encoder.final_layer_norm.weight"]
    assert map_official_key("ip2p.sd_unet.conv_in.weight") == ["ip2p.sd_unet.conv_in.weight"]
    assert map_official_key("ip2p.llm2sd_mapper_queries") == ["ip2p.llm2sd_mapper_queries"]


def test_convert_check_maps_every_sd_and_ip2p_key(official):
    from visionllm2.recipes.cli import app

    result = CliRunner().invoke(app, ["convert", "--check", str(official / "visionllmv2_7b_state_dict_manifest.json"),
                                      "--prefix", "sd,ip2p"])
    assert result.exit_code == 0, result.output
    row = [line for line in result.output.splitlines() if "2338" in line]
    assert row, result.output
    assert [int(c) for c in row[0].replace("│", " ").split()] == [2338, 2338, 0, 0, 0, 0]


def test_pipelines_import_without_transformers_torchvision_notice():
    # A fresh process: transformers warns once per process, and pipelines may already be imported here.
    import subprocess
    import sys

    code = ("from visionllm2.model.decoders.diffusion_parts import pipeline_class\n"
            "for name in ('StableDiffusionPipeline', 'StableDiffusionInstructPix2PixPipeline'):\n"
            "    print(pipeline_class(name).__name__)")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["StableDiffusionPipeline", "StableDiffusionInstructPix2PixPipeline"]
    assert "torchvision" not in result.stderr  # the CLIP / SigLIP image-processor fallback notice is muted
