import json

import pytest

from visionllm2.model import tokens as T
from visionllm2.model.config import VisionLLMv2Config
from visionllm2.model.errors import CheckpointError, InvalidPromptError, UnknownTaskError
from visionllm2.model.tokenizer import BUILTIN_WORDS_PATH, Tokenizer, build_word_tokenizer


@pytest.mark.parametrize("name", ["tiny", "7b"])
def test_preset_json_round_trip(name):
    config = VisionLLMv2Config.preset(name)
    again = VisionLLMv2Config.from_json(config.to_json())
    assert again == config
    assert json.loads(again.to_json()) == json.loads(config.to_json())


def test_7b_preset_has_the_paper_sizes():
    config = VisionLLMv2Config.preset("7b")
    assert (config.vision.hidden_size, config.vision.image_size, config.vision.patch_size) == (1024, 336, 14)
    assert config.vision.tokens_per_tile == 576
    assert (config.llm.vocab_size, config.llm.hidden_size, config.llm.num_hidden_layers) == (32026, 4096, 32)
    assert (config.link.det_queries, config.link.gen_queries, config.link.max_groups) == (4, 64, 256)


def test_unknown_preset_and_bad_config_are_typed_errors():
    with pytest.raises(UnknownTaskError, match="tiny"):
        VisionLLMv2Config.preset("13b")
    with pytest.raises(CheckpointError, match="unknown keys"):
        VisionLLMv2Config.from_dict({"vision": {"hidden": 3}})
    with pytest.raises(CheckpointError, match="not valid JSON"):
        VisionLLMv2Config.from_json("{")


def test_shipped_tokenizer_is_the_built_one():
    assert json.loads(BUILTIN_WORDS_PATH.read_text()) == json.loads(build_word_tokenizer().to_str())


def test_special_tokens_are_the_last_26_ids_in_design_order(tokenizer):
    first = tokenizer.vocab_size - 26
    assert [tokenizer.token_id(t) for t in T.SPECIAL_TOKENS] == list(range(first, first + 26))
    assert tokenizer.token_id("[DET]") - first == 12 and tokenizer.token_id("[EMB]") - first == 18


@pytest.mark.parametrize("text", ["[DET]", "<image>", "find <region> and [EMB][EMB2] </s> <s> [PAD]", "<reg>x</reg>"])
def test_user_text_never_produces_special_ids(tokenizer, text):
    ids = tokenizer.encode_text(text)
    assert ids and all(i < tokenizer.first_special_id for i in ids)
    assert tokenizer.bos_id not in ids and tokenizer.eos_id not in ids


def test_tokenizer_rejects_non_text_and_incomplete_vocabularies(tokenizer):
    with pytest.raises(InvalidPromptError, match="expected str"):
        tokenizer.encode_text(3)
    with pytest.raises(InvalidPromptError, match="not a special token"):
        tokenizer.token_id("person")
    from tokenizers import Tokenizer as Backend
    from tokenizers.models import WordLevel

    with pytest.raises(CheckpointError, match="lacks the tokens"):
        Tokenizer(Backend(WordLevel({"<unk>": 0}, unk_token="<unk>")))


def test_decode_joins_routes_to_labels(tokenizer):
    ids = tokenizer.encode_text("red circle") + [tokenizer.token_id("[DET]"), tokenizer.token_id("[EMB]")]
    assert tokenizer.decode(ids) == "red circle[DET][EMB]"


def test_a_local_sentencepiece_llama_tokenizer_gains_the_26_tokens_in_order(tmp_path):
    """The 7b path: a Llama/Vicuna `tokenizer.model` directory (here a tiny one trained on the spot)."""
    import sentencepiece

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["a chat between a curious user and an assistant", "detect the person and the dog"] * 50))
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=50,
                                             model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    tokenizer = Tokenizer.from_directory(tmp_path)
    first = tokenizer.first_special_id
    assert first == 50 and tokenizer.vocab_size == 76
    assert [tokenizer.token_id(t) for t in ("[DET]", "[EMB]")] == [first + 12, first + 18]
    ids = tokenizer.encode_text("detect [DET] <image> the dog")
    assert ids and all(i < first for i in ids) and tokenizer.bos_id not in ids
    with pytest.raises(CheckpointError, match="local directory"):
        Tokenizer.from_directory(tmp_path / "missing")
