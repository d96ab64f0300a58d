"""Which parameters each stage trains, and LoRA on the LLM (peft) for stage 2.

LoRA is injected into the LLM in place (``peft.inject_adapter_in_model``) rather than by wrapping
it in a ``PeftModel``: the composite model keeps calling ``self.llm.model`` / ``self.llm.lm_head``,
and the checkpoint keys stay the model's own. :func:`merge_lora` folds the adapters back into the
base weights when the stage ends, so the saved model loads without peft.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data.samples import TASK_DECODERS
from ..errors import InvalidInputError
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
    if config.stage == 0:  # without the LLM: each asked decoder's UNet + text encoder, the tower if counting
        asked = {TASK_DECODERS[task] for task, weight in config.task_weights.items() if weight > 0}
        pretrained = [part for name, d in model.decoders().items() if name in asked and hasattr(d, "pretraining_loss")
                      for part in (d.sd_unet, d.sd_text_encoder)]
        tower = [model.vis_encoder] if config.trains_tower else []
        for module in [*pretrained, *tower]:
            module.requires_grad_(True)
        for module in frozen_parts(model, config.freeze):  # e.g. ["ip2p"]: pre-train [GEN]'s denoiser alone
            module.requires_grad_(False)
        return {"decoders": [p for m in pretrained for p in m.parameters() if p.requires_grad],
                "backbone": [p for p in model.vis_encoder.parameters() if p.requires_grad] if tower else []}
    if config.stage == 1:
        backbone = [model.vis_encoder, model.vl_bridge, model.llm]
        trained_decoders: list[nn.Module] = []
    elif config.stage == 2:
        backbone = [model.vl_bridge, model.region_encoder, *tables, *([model.vis_encoder] if config.train_vision else [])]
        if config.lora_rank:
            add_lora(model, config)
        else:  # the whole LLM: a small one trained from scratch gains nothing from a low-rank update
            backbone.append(model.llm)
        trained_decoders = decoders
    else:
        backbone, trained_decoders = tables, decoders
    for module in [*backbone, *trained_decoders]:
        module.requires_grad_(True)
    if config.stage == 2 and config.lora_rank:  # LoRA's own matrices (the base weights stay frozen)
        for name, parameter in model.llm.named_parameters():
            parameter.requires_grad_("lora_" in name)
    for module in frozen_parts(model, config.freeze):  # e.g. teach the picture tokens, keep the LLM's reading
        module.requires_grad_(False)
    trained_decoders = [d for d in trained_decoders if any(p.requires_grad for p in d.parameters())]
    for decoder in trained_decoders:  # frozen-by-design parts (SD's text encoder; its UNet unless configured)
        for parameter in getattr(decoder, "frozen_parameters", list)():
            parameter.requires_grad_(False)
    decoder_ids = {id(p) for d in trained_decoders for p in d.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {"decoders": [p for p in trainable if id(p) in decoder_ids],
            "backbone": [p for p in trainable if id(p) not in decoder_ids]}


def frozen_parts(model: VisionLLMv2, names: Sequence[str]) -> list[nn.Module]:
    """The modules ``TrainConfig.freeze`` names (see ``FREEZABLE``); a named decoder the model lacks is an error."""
    decoders = model.decoders()
    parts: dict[str, list[nn.Module]] = {
        "vision": [model.vis_encoder], "bridge": [model.vl_bridge], "region_encoder": [model.region_encoder],
        "query_tables": [getattr(model, name) for name in QUERY_TABLES if hasattr(model, name)],
        "llm": [model.llm], "decoders": list(decoders.values()),
        # the generation decoders' caption encoders: the links were fitted to their embeddings
        "text_encoders": [d.sd_text_encoder for d in decoders.values() if hasattr(d, "sd_text_encoder")],
    }
    modules = []
    for name in names:
        if name in parts:
            modules += parts[name]
        elif name in decoders:
            modules.append(decoders[name])
        else:
            raise InvalidInputError(f"freeze: the model has no {name!r} decoder; it has {sorted(decoders)}")
    return modules


DECODER_CONFIG_FIELDS = {"gdino": "detection", "unipose": "pose", "sd": "generation", "ip2p": "editing"}


def attach_decoders(model: VisionLLMv2, donor: VisionLLMv2, names: Sequence[str] | None = None,
                    warm_start: bool = False, keep_tables: bool = False, keep_link: bool = False) -> VisionLLMv2:
    """``model`` with decoders of ``donor`` grafted on: their config, weights and their routes' query tables.

    names: the decoders to take. ``None`` takes those only ``donor`` has (e.g. stage 0's denoisers,
    whose link is trained afterwards). Naming a decoder ``model`` already has replaces it — e.g. a pose
    decoder trained further in its own run; that only makes sense when both models share the LLM the
    decoder reads, so everything outside the grafted parts must be equal, else :class:`InvalidInputError`.
    warm_start: the grafted decoders are only a starting point for a stage that trains them against
    ``model``'s LLM (``TrainConfig.attach_decoders``), so the donor's LLM may differ.
    keep_tables: keep ``model``'s own query tables for the grafted routes, which its LLM was trained
    to read (a donor fresh from stage 0 has untrained ones); only the decoders are grafted.
    keep_link: keep ``model``'s own link parts of the grafted decoders too (a generation decoder's
    ``emb_proj`` and mapper, its ``link_parts``): only the denoiser is grafted — a denoiser trained
    further in stage 0 behind a link already trained on this LLM.
    """
    import dataclasses

    from .. import tokens as T
    from ..decoders import build_decoders

    if names is None:
        names = [name for name in donor.decoders() if name not in model.decoders()]
    names = list(dict.fromkeys(names))
    missing = [name for name in names if name not in donor.decoders()]
    if missing:
        raise InvalidInputError(f"attach: the donor has decoders {sorted(donor.decoders())}, not {missing}")
    tables = {f"emb_embeddings_{T.QUERY_TABLE_OF_ROUTE[r]}" for n in names for r in donor.decoders()[n].routes}
    grafted = set(names) if keep_tables else {*names, *tables}
    state, donor_state = model.state_dict(), donor.state_dict()
    replaced = [name for name in names if name in model.decoders()]
    if replaced and not warm_start:
        # Other decoders and query tables may differ (each run trains its own); the rest may not.
        own = {*model.decoders(), *QUERY_TABLES}
        differ = sorted(k for k, v in state.items() if k.split(".")[0] not in own
                        and (k not in donor_state or not torch.equal(v, donor_state[k])))
        if differ:
            raise InvalidInputError(
                f"attach: replacing {replaced} needs the same LLM, vision tower and bridge in both models "
                f"(the decoders read their states); {len(differ)} weights differ, e.g. {differ[0]!r}")
    fields = {DECODER_CONFIG_FIELDS[n]: getattr(donor.config, DECODER_CONFIG_FIELDS[n]) for n in names}
    config = dataclasses.replace(model.config, **fields)
    merged = VisionLLMv2.from_config(config, build_decoders(config), model.tokenizer)
    # Drop the replaced decoders' own weights: the donor's may differ in size (strict load below).
    kept = _own_link(model, donor, names, state, donor_state) if keep_link else {}
    state = {k: v for k, v in state.items() if k.split(".")[0] not in grafted}
    state.update({k: v for k, v in donor_state.items() if k.split(".")[0] in grafted})
    merged.load_state_dict({**state, **kept}, strict=True)
    return merged


def _own_link(model: VisionLLMv2, donor: VisionLLMv2, names: Sequence[str], state: dict[str, torch.Tensor],
              donor_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model``'s weights of the named decoders' link parts, which must match the donor's in shape."""
    for name in names:
        if not getattr(donor.decoders()[name], "link_parts", ()) or name not in model.decoders():
            raise InvalidInputError(f"attach_keep_link: {name!r} has no link of the init model's to keep "
                                    f"(expected a generation decoder both models have; the init model has "
                                    f"{sorted(model.decoders())})")
    prefixes = tuple(f"{name}.{part}" for name in names for part in donor.decoders()[name].link_parts)
    kept = {k: v for k, v in state.items() if k.startswith(prefixes)}
    differ = sorted(k for k, v in kept.items() if k not in donor_state or v.shape != donor_state[k].shape)
    if differ:
        raise InvalidInputError(f"attach_keep_link: {differ[0]!r} differs in shape between the models "
                                f"({tuple(kept[differ[0]].shape)} vs "
                                f"{tuple(donor_state[differ[0]].shape) if differ[0] in donor_state else 'absent'}); "
                                "a link fits only a decoder of its width")
    return kept


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
