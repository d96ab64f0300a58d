"""Turn: one question and answer in a chat, with the structured results the decoders produced."""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import Field

from ._base import Model, Result
from .boxes import Boxes
from .images import Images
from .masks import Masks
from .poses import Poses

# ``kind`` tells the result types apart when a Turn is read back from JSON.
AnyResult = Annotated[Boxes | Masks | Poses | Images, Field(discriminator="kind")]

_R = TypeVar("_R", bound=Result)


class Turn(Model):
    """One chat turn.

    Attributes:
        index: 0-based position of the turn in the conversation.
        prompt: the user's text.
        text: the assistant's answer, with routing tokens such as ``[DET]`` left in place.
        routes: the routing tokens the answer used, in order (e.g. ``["[DET]", "[SEG]"]``).
        results: one result per decoder call, in the order of ``routes``.
        image_id: the session image the turn looked at, if any.
        timings: seconds per stage (``encode``, ``prefill``/``decode``, one entry per decoder).
        skipped_routes: routes the model chose in a free answer that the loaded model has no decoder
            for (no result stands for them).
    """

    index: int = Field(ge=0)
    prompt: str
    text: str
    routes: list[str] = Field(default_factory=list)
    results: list[AnyResult] = Field(default_factory=list)
    image_id: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    skipped_routes: list[str] = Field(default_factory=list)

    def _first(self, kind: type[_R]) -> _R | None:
        return next((r for r in self.results if isinstance(r, kind)), None)

    @property
    def boxes(self) -> Boxes | None:
        """The first :class:`Boxes` result, or None."""
        return self._first(Boxes)

    @property
    def masks(self) -> Masks | None:
        """The first :class:`Masks` result, or None."""
        return self._first(Masks)

    @property
    def poses(self) -> Poses | None:
        """The first :class:`Poses` result, or None."""
        return self._first(Poses)

    @property
    def images(self) -> Images | None:
        """The first :class:`Images` result, or None."""
        return self._first(Images)

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        results = ", ".join(repr(r) for r in self.results)
        return f"Turn({self.index}, text={text!r}, routes={self.routes}, results=[{results}])"

    __str__ = __repr__
