"""Ids for the images and results a toolkit hands to an agent, and the lineage of each.

Result ids are ``"turn<N>.<kind>"`` (kind: ``boxes``, ``masks``, ``poses``, ``images``): the
first result of that kind in ``session.turns[N]``; ``"turn<N>.<kind>[k]"`` is its item ``k``.
Image ids are the session's own (``"image1"``). Results the session made without the toolkit
resolve too. When a tool changes a result before handing it out (an edit confined to a region
is composited onto its source), the registry holds the changed one under the turn's id;
``session.turns[N]`` keeps the model's raw output.

Recipe tools (:mod:`.recipe_tools`) run in conversations of their own, so their results have no
turn in the session: the registry holds them under ``"recipe<N>.<kind>"`` (kind ``boxes``,
``masks`` or ``images``; one ``N`` per image a recipe call worked on), with the session image they
lie on. They resolve, index (``"recipe0.masks[1]"``) and trace like turn results.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from visionllm2.sdk import Result, Turn
from visionllm2.sdk.errors import InvalidInputError

RESULT_KINDS = ("boxes", "masks", "poses", "images")
RESULT_ID = re.compile(r"^turn(\d+)\.(boxes|masks|poses|images)(?:\[(-?\d+)\])?$")
RECIPE_ID = re.compile(r"^recipe(\d+)\.(boxes|masks|images)(?:\[(-?\d+)\])?$")


class Lineage(BaseModel):
    """Where an id came from: the tool, its arguments, and the ids it was made from."""

    id: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)


def result_id(result: Result) -> str:
    """``"turn<N>.<kind>"`` of a result that came from a session turn."""
    if result.turn is None or not hasattr(result, "kind"):
        raise InvalidInputError(f"result_id: expected a result from a session turn, got {result!r}")
    return f"turn{result.turn}.{result.kind}"


def kind_of(ref: object) -> str | None:
    """The result kind a result id names (``"turn0.boxes[2]"`` → ``"boxes"``); None for anything else."""
    match = (RESULT_ID.match(ref) or RECIPE_ID.match(ref)) if isinstance(ref, str) else None
    return match.group(2) if match else None


def base_id(ref: str) -> str:
    """The id without an item index: ``"turn0.boxes[2]"`` → ``"turn0.boxes"``."""
    return ref.split("[", 1)[0]


class Registry:
    """The ids of one session's images and results, with their lineage."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._made: dict[str, tuple[Turn, Result]] = {}  # results a tool changed before handing them out
        self._lineage: dict[str, Lineage] = {}
        self._turns: dict[str, Turn] = {}  # the turn each recorded lineage belongs to
        self._held: dict[str, tuple[Result, str | None]] = {}  # recipe id → (result, the image it lies on)
        self._recipes = 0

    # ------------------------------------------------------------------ recording
    def add_turn(self, turn: Turn, tool: str, args: dict[str, Any], inputs: list[str],
                 replaced: Result | None = None) -> list[str]:
        """Record a turn's results; returns their ids. ``replaced`` stands in for the turn's result of its kind."""
        ids = []
        for result in turn.results:
            rid = result_id(result)
            if rid in ids:
                continue  # a second result of the same kind has no id of its own
            ids.append(rid)
            self._lineage[rid] = Lineage(id=rid, tool=tool, args=args, inputs=inputs)
            self._turns[rid] = turn
            self._made.pop(rid, None)
        if replaced is not None:
            self._made[result_id(replaced)] = (turn, replaced)
        return ids

    def add_image(self, image_id: str, tool: str, args: dict[str, Any], inputs: list[str]) -> None:
        self._lineage[image_id] = Lineage(id=image_id, tool=tool, args=args, inputs=inputs)

    def add_recipe(self, results: dict[str, Result], image_id: str | None, tool: str, args: dict[str, Any],
                   inputs: list[str]) -> list[str]:
        """Hold what a recipe made on one image (kind → result) under new ``"recipe<N>.<kind>"`` ids."""
        prefix = f"recipe{self._recipes}"
        self._recipes += 1
        ids = []
        for kind, result in results.items():
            rid = f"{prefix}.{kind}"
            # the recipe's turn numbers count its own conversation, not the session's
            self._held[rid] = (result.model_copy(update={"turn": None}), image_id)
            self._lineage[rid] = Lineage(id=rid, tool=tool, args=args, inputs=inputs)
            ids.append(rid)
        return ids

    # ------------------------------------------------------------------ looking up
    def ids(self) -> list[str]:
        """Every result id of the current conversation, oldest first."""
        return [f"turn{turn.index}.{kind}" for turn in self.session.turns for kind in RESULT_KINDS
                if any(getattr(r, "kind", None) == kind for r in turn.results)] + list(self._held)

    def image_of(self, ref: str) -> str | None:
        """The session image a result id's objects lie on (None for a generated image)."""
        if isinstance(ref, str) and RECIPE_ID.match(ref):
            return self._held_result(ref)[1]
        return self.turn_of(ref).image_id

    def _held_result(self, ref: str) -> tuple[Result, str | None]:
        held = self._held.get(base_id(ref))
        if held is None:
            raise InvalidInputError(
                f"result id: expected one of {self.ids()[-12:] or '[] (no results yet)'}, got {ref!r}, which no "
                "recipe made")
        return held

    def turn_of(self, ref: str) -> Turn:
        """The session turn a result id points into."""
        match = RESULT_ID.match(ref) if isinstance(ref, str) else None
        turns = self.session.turns
        if match is None or int(match.group(1)) >= len(turns):
            known = self.ids()
            raise InvalidInputError(
                f"result id: expected one of {known[-12:] or '[] (no results yet)'} (add [k] for item k, e.g. "
                f"'turn0.boxes[1]'), got {ref!r}"
            )
        return turns[int(match.group(1))]

    def result(self, ref: str) -> Result:
        """The result a result id names (one item of it with ``[k]``)."""
        if isinstance(ref, str) and RECIPE_ID.match(ref):
            return _item(self._held_result(ref)[0], ref)
        turn = self.turn_of(ref)
        match = RESULT_ID.match(ref)
        assert match is not None  # turn_of checked it
        base = base_id(ref)
        made = self._made.get(base)
        if made is not None and made[0] is turn:
            result = made[1]
        else:
            result = next((r for r in turn.results if getattr(r, "kind", None) == match.group(2)), None)
        if result is None:
            kinds = sorted({r.kind for r in turn.results if hasattr(r, "kind")})
            raise InvalidInputError(
                f"result id: expected a kind turn {turn.index} has ({kinds or 'none: it answered in text'}), got {ref!r}"
            )
        return _item(result, ref)

    def lineage(self, ref: str) -> Lineage | None:
        """How an id was made, if a tool of this toolkit made it in the current conversation."""
        ref = base_id(ref)
        if ref in self._turns:
            turns = self.session.turns
            turn = self._turns[ref]
            if turn.index >= len(turns) or turns[turn.index] is not turn:
                return None  # the conversation was reset since
        return self._lineage.get(ref)

    def ancestry(self, ref: str) -> list[Lineage]:
        """The lineage of ``ref`` and of everything it was made from, nearest first."""
        chain, seen, queue = [], set(), [base_id(ref)]
        while queue:
            current = queue.pop(0)
            if current in seen:
                continue
            seen.add(current)
            record = self.lineage(current)
            if record is not None:
                chain.append(record)
                queue += [base_id(i) for i in record.inputs]
        return chain


def _item(result: Result, ref: str) -> Result:
    """``result``, or its item ``k`` when ``ref`` ends in ``[k]``."""
    if "[" not in ref:
        return result
    index = int(ref[ref.index("[") + 1: -1])
    if not -len(result) <= index < len(result):
        raise InvalidInputError(
            f"result id: expected an item index in [0, {len(result)}) for {base_id(ref)} ({len(result)} items), "
            f"got {ref!r}")
    return result[index]
