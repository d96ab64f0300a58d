"""The language model (Llama / Vicuna) and the super-link query tables."""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from .config import LinkConfig, LLMConfig


def build_llm(config: LLMConfig) -> LlamaForCausalLM:
    """``LlamaForCausalLM`` with untied input/output embeddings (as Vicuna-7B-v1.5)."""
    llama_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta,
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(llama_config)


@torch.no_grad()
def add_token_rows(llm: LlamaForCausalLM, new_vocab_size: int) -> None:
    """Grow the vocabulary to ``new_vocab_size``; new input and output rows start as the mean of the old.

    This is how the 26 special tokens join a pretrained Vicuna (32000 → 32026): starting from the
    mean keeps the first logits of the new tokens ordinary instead of random.
    """
    old_embeddings = llm.get_input_embeddings().weight
    old_size = old_embeddings.shape[0]
    if new_vocab_size <= old_size:
        return
    old_output = llm.get_output_embeddings().weight
    input_mean = old_embeddings.mean(0, keepdim=True)
    output_mean = old_output.mean(0, keepdim=True)
    llm.resize_token_embeddings(new_vocab_size, mean_resizing=False)
    llm.get_input_embeddings().weight[old_size:] = input_mean
    llm.get_output_embeddings().weight[old_size:] = output_mean


def build_query_tables(link: LinkConfig, width: int) -> dict[str, nn.Embedding]:
    """The learnable super-link queries: ``emb_embeddings_{det,pose,gen,edit}`` ``(n, width)``."""
    counts = {"det": link.det_queries, "pose": link.pose_queries, "gen": link.gen_queries, "edit": link.edit_queries}
    return {name: nn.Embedding(count, width) for name, count in counts.items()}
