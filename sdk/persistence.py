"""Saving a session to a folder and loading it back: transcript, images, visual prompts, answers.

Layout: ``session.json`` (the conversation as the model saw it, and every Turn with its results)
and ``images/<id>.png``. A loaded session continues exactly where the saved one stopped: the next
turn sees the same token ids and gives the same results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from visionllm2.model.errors import CheckpointError
from visionllm2.model.processor import RegionSlot, Special, TokenIds

from .results import Turn
from .results._base import decode_array, encode_array

if TYPE_CHECKING:
    from .session import Session

FORMAT_VERSION = 1


def _segment_to_json(segment: Any) -> dict[str, Any]:
    from .session import ImageRef

    if isinstance(segment, str):
        return {"text": segment}
    if isinstance(segment, Special):
        return {"special": segment.token}
    if isinstance(segment, ImageRef):
        return {"image": segment.image_id}
    if isinstance(segment, RegionSlot):
        return {"region": segment.name}
    if isinstance(segment, TokenIds):
        return {"ids": list(segment.ids)}
    raise CheckpointError(f"session: cannot save a message segment of type {type(segment).__name__}")


def _segment_from_json(data: dict[str, Any]) -> Any:
    from .session import ImageRef

    kinds = {"text": str, "special": Special, "image": ImageRef, "region": RegionSlot}
    for key, build in kinds.items():
        if key in data:
            return build(data[key])
    if "ids" in data:
        return TokenIds(tuple(int(i) for i in data["ids"]))
    raise CheckpointError(f"session.json: unknown message segment {data!r}")


def save_session(session: Session, directory: str | Path) -> Path:
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    for image_id, record in session.images.items():
        record.picture.save(directory / "images" / f"{image_id}.png")
    state = {
        "format": FORMAT_VERSION,
        "current_image": session.current_image,
        "max_new_tokens": session.max_new_tokens,
        "images": list(session.images),
        "exchanges": [
            {
                "user": [_segment_to_json(s) for s in exchange.user],
                "regions": [{"image": image_id, "mask": encode_array(mask)} for image_id, mask in exchange.regions],
                "answer": list(exchange.answer),
            }
            for exchange in session.exchanges
        ],
        "turns": [json.loads(turn.to_json()) for turn in session.turns],
    }
    (directory / "session.json").write_text(json.dumps(state))
    return directory


def load_session(directory: str | Path, model: Any) -> Session:
    from .session import Exchange, Session, SessionImage

    directory = Path(directory)
    try:
        state = json.loads((directory / "session.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{directory}: expected a saved session (session.json), could not read it ({error})") from error
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: session format {state.get('format')!r}, this version reads {FORMAT_VERSION}")
    session = Session(model, max_new_tokens=state["max_new_tokens"])
    for image_id in state["images"]:
        with Image.open(directory / "images" / f"{image_id}.png") as opened:
            picture = opened.convert("RGB")
        session.images[image_id] = SessionImage(image_id, picture, session.processor.process_image(picture))
    session.current_image = state["current_image"]
    session.exchanges = [
        Exchange(
            user=[_segment_from_json(s) for s in exchange["user"]],
            regions=[(r["image"], decode_array(r["mask"])) for r in exchange["regions"]],
            answer=tuple(exchange["answer"]),
        )
        for exchange in state["exchanges"]
    ]
    session.turns = [Turn.from_json(json.dumps(turn)) for turn in state["turns"]]
    return session
