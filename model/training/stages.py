"""Which parameters each stage trains, and LoRA on the LLM (peft) for stage 2.

LoRA is injected into the LLM in place (``peft.inject_adapter_in_model``) rather than by wrapping
it in a ``PeftModel``: the composite model keeps calling ``self.llm.model`` / ``self.llm.lm_head``,
and the checkpoint keys stay the model's own. :func:`merge_lora` folds the adapters back into the
base weights when the stage ends, so the saved model loads without peft.
"""

from __future__ import annotations

from torch import nn

from ..visionllm import VisionLLMv2
from .config import LORA_TARGETS, TrainConfig

QUERY_TABLES = ("emb_embeddings_det", "emb_embeddings_pose", "emb_embeddings_gen", "emb_embeddings_edit")


def prepare_stage(model: VisionLLMv2, config: TrainConfig) -> dict[str, list[nn.Parameter]]:
    """Freeze and unfreeze for ``config.stage``; return the trainable parameters by group.

    Groups: ``"decoders"`` (learning rate ``lr``) and ``"backbone"`` (``lr × backbone_lr_scale``).
    """
    model.requires_grad_(False)
    decoders = list(model.decoders().values())
    tables = [getattr(model, name) for name in QUERY_TABLES if hasattr(model, name)]
    if config.stage == 0:  # the denoisers alone: UNet + text encoder of each generation decoder
        pretrained = [part for d in decoders if hasattr(d, "pretraining_loss") for part in (d.sd_unet, d.sd_text_encoder)]
        for module in pretrained:
            module.requires_grad_(True)
        return {"decoders": [p for m in pretrained for p in m.parameters()], "backbone": []}
    if config.stage == 1:
        backbone = [model.vis_encoder, model.vl_bridge, model.llm]
        trained_decoders: list[nn.Module] = []
    elif config.stage == 2:
        add_lora(model, config)
        backbone = [model.vl_bridge, model.region_encoder, *tables, *([model.vis_encoder] if config.train_vision else [])]
        trained_decoders = decoders
    else:
        backbone, trained_decoders = tables, decoders
    for module in [*backbone, *trained_decoders]:
        module.requires_grad_(True)
    if config.stage == 2:  # LoRA's own matrices (the base weights stay frozen)
        for name, parameter in model.llm.named_parameters():
            parameter.requires_grad_("lora_" in name)
    for decoder in trained_decoders:  # frozen-by-design parts (SD's text encoder; its UNet unless configured)
        for parameter in getattr(decoder, "frozen_parameters", list)():
            parameter.requires_grad_(False)
    decoder_ids = {id(p) for d in trained_decoders for p in d.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {"decoders": [p for p in trainable if id(p) in decoder_ids],
            "backbone": [p for p in trainable if id(p) not in decoder_ids]}


def attach_decoders(model: VisionLLMv2, donor: VisionLLMv2) -> VisionLLMv2:
    """``model`` with the decoders only ``donor`` has (config, weights and their routes' query tables),
    e.g. stage 0's denoisers, or generation decoders whose link was trained beside the other decoders."""
    import dataclasses

    fields = {"gdino": "detection", "unipose": "pose", "sd": "generation", "ip2p": "editing"}
    added = [name for name in donor.decoders() if name not in model.decoders()]
    config = dataclasses.replace(model.config, **{fields[n]: getattr(donor.config, fields[n]) for n in added})
    from ..decoders import build_decoders

    merged = VisionLLMv2.from_config(config, build_decoders(config), model.tokenizer)
    state = model.state_dict()
    donor_state = donor.state_dict()
    # The decoders' weights, and the super-link query tables of their routes (trained with them).
    from .. import tokens as T

    tables = {f"emb_embeddings_{T.QUERY_TABLE_OF_ROUTE[r]}" for n in added for r in donor.decoders()[n].routes}
    state.update({k: v for k, v in donor_state.items() if k.split(".")[0] in {*added, *tables}})
    merged.load_state_dict(state, strict=True)
    return merged


def add_lora(model: VisionLLMv2, config: TrainConfig) -> None:
    """Rank-``lora_rank`` adapters on the LLM's q, k, v, o, up and down projections."""
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(model):
        return
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(LORA_TARGETS))
    inject_adapter_in_model(lora, model.llm.model)


def has_lora(model: VisionLLMv2) -> bool:
    return any("lora_" in name for name, _ in model.llm.named_parameters())


def merge_lora(model: VisionLLMv2) -> None:
    """Fold every LoRA adapter into its base layer and put the plain layer back."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.llm.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.llm.get_submodule(parent_name), child, module.get_base_layer())
