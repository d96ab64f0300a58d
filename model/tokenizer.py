"""Tokenizers: the Vicuna tokenizer for ``7b``, and a shipped word-level one for small presets.

Both are wrapped by :class:`Tokenizer`, whose one rule matters most: **user text never produces
special-token ids**. A user typing ``[DET]`` or ``<image>`` gets those characters as plain text;
only the processor's own template code inserts special tokens, by name.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as BackendTokenizer

from .errors import CheckpointError, InvalidPromptError
from .tokens import BOS, EOS, SPECIAL_TOKENS, UNK

BUILTIN_WORDS_PATH = Path(__file__).with_name("assets") / "words_tokenizer.json"

# The vocabulary of the shipped word-level tokenizer: the chat template, the task prompts and
# answers, ShapesWorld's words, COCO's classes and keypoints, numbers, and common English.
_VOCABULARY_TEXT = ["a", "chat", "between", "curious", "user", "and", "an", "artificial", "intelligence", "assistant", "the", "gives", "helpful", "detailed", "polite", "answers", "to", "user's", "questions", "assistant", "can", "you", "analyze", "image", "identify", "present", "where", "we", "locate", "in", "it", "is", "yes", "here", "are", "results", "for", "please", "segment", "objects", "denoted", "as", "region", "regions", "generate", "with", "caption", "edit", "according", "examine", "pinpoint", "keypoint", "keypoints", "locations", "of", "detect", "find", "ground", "show", "mark", "outline", "draw", "make", "change", "turn", "into", "sure", "ok", "no", "none", "not", "there", "is", "are", "was", "were", "be", "this", "that", "these", "those", "them", "they", "its", "it's", "what", "which", "who", "how", "many", "much", "colour", "color", "shape", "size", "largest", "smallest", "biggest", "left", "right", "top", "bottom", "centre", "center", "middle", "upper", "lower", "above", "below", "near", "next", "beside", "behind", "front", "on", "off", "at", "by", "from", "into", "over", "under", "small", "large", "big", "tiny", "huge", "medium", "short", "tall", "long", "wide", "narrow", "thin", "thick", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "zero", "first", "second", "third", "last", "other", "another", "each", "every", "all", "some", "any", "only", "also", "more", "most", "less", "least", "than", "then", "same", "different", "both", "either", "neither", "image", "picture", "photo", "scene", "background", "foreground", "object", "thing", "part", "area", "red", "green", "blue", "yellow", "orange", "purple", "white", "black", "gray", "grey", "brown", "pink", "cyan", "magenta", "gold", "silver", "circle", "square", "triangle", "star", "hexagon", "rectangle", "ellipse", "disc", "ring", "cross", "line", "dot", "shape", "shapes", "circles", "squares", "triangles", "stars", "hexagons", "head", "neck", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "tail", "paw", "foot", "hand", "eye", "ear", "nose", "mouth", "body", "leg", "arm", "stick", "figure", "animal", "person", "people", "dog", "cat", "bird", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic", "light", "fire", "hydrant", "stop", "sign", "parking", "meter", "bench", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports", "ball", "kite", "baseball", "bat", "glove", "skateboard", "surfboard", "tennis", "racket", "bottle", "wine", "glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "broccoli", "carrot", "hot", "pizza", "donut", "cake", "chair", "couch", "potted", "plant", "bed", "dining", "table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell", "phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy", "hair", "drier", "toothbrush", "scratch", "scratches", "dent", "dents", "crack", "cracks", "hole", "holes", "defect", "defects", "stain", "rust", "surface", "metal", "fabric", "lesion", "lesions", "organ", "tumor", "nodule", "cyst", "liver", "kidney", "lung", "heart", "vessel", "bone", "tissue", "scan", "building", "buildings", "vehicle", "vehicles", "road", "roads", "river", "field", "tree", "trees", "roof", "ship", "ships", "tile", "water", "forest", "grass", "sky", "sun", "moon", "cloud", "snow", "sand", "rock", "house", "window", "door", "wall", "floor", "street", "i", "my", "me", "your", "yours", "our", "us", "he", "she", "his", "her", "him", "we", "you", "do", "does", "did", "have", "has", "had", "will", "would", "could", "should", "may", "might", "must", "shall", "just", "very", "really", "too", "so", "but", "or", "if", "because", "when", "while", "with", "without", "about", "after", "before", "again", "once", "here", "there", "why", "new", "old", "good", "bad", "best", "better", "well", "up", "down", "out", "in", "inside", "outside", "around", "through", "across", "along", "toward", "towards", "against", "between", "among", "within", "add", "remove", "replace", "put", "move", "rotate", "flip", "brighter", "darker", "darken", "brighten", "larger", "smaller"]

_WORD_VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(
        [*_VOCABULARY_TEXT, *(str(n) for n in range(101)), *"abcdefghijklmnopqrstuvwxyz",
         *".,?!:;'\"()[]{}<>/\\-_+=*&%$#@|~`^"]
    )
)


def build_word_tokenizer() -> BackendTokenizer:
    """Build the shipped word-level tokenizer: ``<unk> <s> </s>``, the words, then the 26 specials."""
    vocab = {UNK: 0, BOS: 1, EOS: 2}
    for word in _WORD_VOCABULARY:
        vocab.setdefault(word, len(vocab))
    backend = BackendTokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.normalizer = normalizers.Lowercase()
    # Words split on white space, each punctuation mark a token of its own, digit runs apart from
    # letters ("region12" → "region", "12").
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated"),
         pre_tokenizers.Digits(individual_digits=False)]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in (UNK, BOS, EOS)])
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    return backend


class Tokenizer:
    """A tokenizer that keeps user text and special tokens apart.

    ``encode_text`` is for anything a user wrote; ``token_id`` names special tokens for the
    templates. ``vocab_size`` counts the special tokens; their ids are contiguous, in DESIGN order.
    """

    def __init__(self, backend: BackendTokenizer, word_level: bool = False) -> None:
        self.backend = backend
        self.word_level = word_level
        missing = [t for t in (UNK, BOS, EOS, *SPECIAL_TOKENS) if backend.token_to_id(t) is None]
        if missing:
            raise CheckpointError(f"tokenizer lacks the tokens {missing}; expected the 26 VisionLLM v2 specials")
        ids = [backend.token_to_id(t) for t in SPECIAL_TOKENS]
        if ids != list(range(ids[0], ids[0] + len(ids))):
            raise CheckpointError(f"special-token ids must be contiguous in DESIGN order, got {ids}")
        self.first_special_id = ids[0]
        self.special_ids = frozenset(ids) | {backend.token_to_id(t) for t in (UNK, BOS, EOS)}
        self.bos_id = backend.token_to_id(BOS)
        self.eos_id = backend.token_to_id(EOS)
        self.pad_id = backend.token_to_id(SPECIAL_TOKENS[0])

    # ------------------------------------------------------------------ loading
    @classmethod
    def builtin(cls) -> Tokenizer:
        """The word-level tokenizer shipped inside the package (small presets)."""
        return cls(_load_builtin(), word_level=True)

    @classmethod
    def from_directory(cls, path: str | Path) -> Tokenizer:
        """A local Llama/Vicuna tokenizer directory (``tokenizer.json`` or ``tokenizer.model``).

        The 26 VisionLLM v2 tokens are added when absent, so a plain Vicuna-7B-v1.5 tokenizer and the
        released checkpoint's tokenizer give the same ids (``[DET]`` 32012, ``[EMB]`` 32018, …).
        """
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"tokenizer: expected a local directory, got {str(path)!r}")
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        backend = hf.backend_tokenizer
        absent = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
        if absent:
            backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in absent])
        return cls(backend)

    @classmethod
    def from_spec(cls, spec: str) -> Tokenizer:
        """``builtin:words`` or a directory path, as written in ``LLMConfig.tokenizer``."""
        return cls.builtin() if spec == "builtin:words" else cls.from_directory(spec)

    # ------------------------------------------------------------------ ids
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        """The id of a special token by name (for templates)."""
        token_id = self.backend.token_to_id(token)
        if token_id is None or token_id not in self.special_ids:
            raise InvalidPromptError(f"{token!r} is not a special token of this tokenizer")
        return token_id

    def encode_text(self, text: str) -> list[int]:
        """Token ids of user text, with special-token spellings read as plain characters."""
        if not isinstance(text, str):
            raise InvalidPromptError(f"text: expected str, got {type(text).__name__}")
        self.backend.encode_special_tokens = True
        try:
            ids = self.backend.encode(text, add_special_tokens=False).ids
        finally:
            self.backend.encode_special_tokens = False
        # Defence in depth: the backend setting above is the rule; this proves it held.
        leaked = [i for i in ids if i >= self.first_special_id or i in (self.bos_id, self.eos_id)]
        if leaked:
            raise InvalidPromptError(f"user text produced special-token ids {leaked}; this is a tokenizer bug")
        return ids

    def decode(self, ids: list[int] | int, skip_special_tokens: bool = False) -> str:
        """Ids (or one id, as transformers' tokenizers take it) → text."""
        text = self.backend.decode([ids] if isinstance(ids, int) else list(ids), skip_special_tokens=skip_special_tokens)
        if self.word_level:
            text = re.sub(r" ?(\[[A-Z0-9]+\]) ?", r"\1", text)  # "person [DET] [EMB]" → "person[DET][EMB]"
        return text

    def token_to_str(self, token_id: int) -> str:
        return self.backend.id_to_token(token_id)


@cache
def _load_builtin() -> BackendTokenizer:
    return BackendTokenizer.from_file(str(BUILTIN_WORDS_PATH))


def builtin_vocab_size() -> int:
    """Size of the shipped word-level vocabulary, specials included (for small presets)."""
    return _load_builtin().get_vocab_size(with_added_tokens=True)


def write_builtin_tokenizer(path: Path = BUILTIN_WORDS_PATH) -> None:
    """Regenerate the shipped tokenizer file: ``python -m visionllm2.model.tokenizer``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json.loads(build_word_tokenizer().to_str()), indent=1, ensure_ascii=False))


if __name__ == "__main__":
    write_builtin_tokenizer()
    print(f"wrote {BUILTIN_WORDS_PATH} ({builtin_vocab_size()} tokens)")
