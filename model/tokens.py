"""The special tokens VisionLLM v2 adds to the Vicuna vocabulary, and the routes they name.

The 26 tokens get ids ``base_vocab .. base_vocab + 25`` in exactly this order (32000–32025 for
Vicuna); ``<unk> <s> </s>`` already exist and the pad token is ``<unk>``'s sibling ``[PAD]``.
"""

from __future__ import annotations

PAD = "[PAD]"
IMAGE = "<image>"
IMAGE_PATCH = "<im_patch>"
REGION = "<region>"
IMAGE_START, IMAGE_END = "<img>", "</img>"
REGION_START, REGION_END = "<reg>", "</reg>"
DET_START, DET_END = "<det>", "</det>"
GRD_START, GRD_END = "<grd>", "</grd>"
DET, GRD, SEG, POSE, GEN, EDIT = "[DET]", "[GRD]", "[SEG]", "[POSE]", "[GEN]", "[EDIT]"
QUERY_TOKENS = ("[EMB]", "[EMB2]", "[EMB3]", "[EMB4]", "[EMB5]", "[EMB6]", "[EMB7]", "[EMB8]")

SPECIAL_TOKENS: tuple[str, ...] = (
    PAD, IMAGE, IMAGE_PATCH, REGION, IMAGE_START, IMAGE_END, REGION_START, REGION_END,
    DET_START, DET_END, GRD_START, GRD_END, DET, GRD, SEG, POSE, GEN, EDIT, *QUERY_TOKENS,
)
assert len(SPECIAL_TOKENS) == 26

UNK, BOS, EOS = "<unk>", "<s>", "</s>"

ROUTES: tuple[str, ...] = (DET, GRD, SEG, POSE, GEN, EDIT)

# Which learned query table a routing token draws from (`emb_embeddings_<name>` in the checkpoint).
QUERY_TABLE_OF_ROUTE: dict[str, str] = {DET: "det", GRD: "det", SEG: "det", POSE: "pose", GEN: "gen", EDIT: "edit"}


def query_tokens(count: int) -> list[str]:
    """The placeholder tokens that hold ``count`` query slots after a routing token.

    Up to 8 queries use ``[EMB] [EMB2] … [EMB8]``; longer runs (the 64 of [GEN]/[EDIT]) repeat
    ``[EMB]``. Their embeddings are replaced by the route's learned queries, so only the count matters.
    """
    if count <= len(QUERY_TOKENS):
        return list(QUERY_TOKENS[:count])
    return [QUERY_TOKENS[0]] * count
