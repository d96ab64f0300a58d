"""The task prompts and answers the model is trained on (DESIGN §2), in one place.

The Session's verbs and the training data both build their turns here, so that what a user asks
through ``Session.detect`` is word for word what the model saw in training.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import tokens as T
from .processor import Processor, RegionSlot, Segment

RESULTS_LEAD = "Yes, here are the results for "


def detect_question(classes: Sequence[str]) -> str:
    return f"Can you analyze the image and identify the {', '.join(classes)} present?"


def segment_question(classes: Sequence[str]) -> str:
    return f"Can you analyze the image and segment the {', '.join(classes)} present?"


def ground_question(expression: str) -> str:
    """``expression`` without its leading article: "largest blue square"."""
    return f"Where can we locate the {expression} in the image?"


def pose_question(classes: Sequence[str], keypoints: Sequence[str]) -> str:
    return (f"{detect_question(classes)} Can you examine the image and pinpoint the keypoint locations of the "
            f"{', '.join(keypoints)}?")


def generate_question(caption: str) -> str:
    return f"Generate image with caption: {caption}."


def edit_question(caption: str) -> str:
    return f"Edit the image according to the caption: {caption}."


INTERACTIVE_QUESTION = "Can you segment the objects denoted as"
EXAMPLES_QUESTION = "Can you find and segment the objects like the examples?"


def region_segments(names: Sequence[str]) -> list[Segment]:
    """`` <reg>region1<region></reg>, <reg>region2…``: the visual prompts after the question."""
    segments: list[Segment] = []
    for index, name in enumerate(names):
        segments += [", " if index else " ", RegionSlot(name)]
    return segments


def group_answer(processor: Processor, route: str, labels: Sequence[str], lead: str = RESULTS_LEAD) -> list[Segment]:
    """``lead`` + ``label[ROUTE][EMB]…`` per label, comma-separated, then ``.``: one group per label."""
    answer: list[Segment] = [lead]
    for index, label in enumerate(labels):
        answer += [*([", "] if index else []), *processor.route_segments(route, label)]
    return answer + ["."]


def single_answer(processor: Processor, route: str) -> list[Segment]:
    """One unlabelled group: ``Yes, it is [GRD][EMB]….`` for grounding, ``Here it is [GEN]….`` for pictures."""
    lead = "Here it is " if route in (T.GEN, T.EDIT) else "Yes, it is "
    return [lead, *processor.route_segments(route), "."]
