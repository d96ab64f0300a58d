"""``Session.stream``: a free answer's text as the model writes it, then the finished turn.

    stream = session.stream("What is in the picture?", image="street.jpg")
    for piece in stream:
        print(piece, end="", flush=True)
    stream.turn.boxes                 # the Turn, with its results, once the answer is done

The turn runs in a worker thread with transformers' ``TextIteratorStreamer``, which hands each
decoded piece to the reader; routing tokens (``[DET]`` …) appear in the text as in ``turn.text``.
To print as you go without a loop, pass any transformers streamer to ``ask``:
``session.ask(question, streamer=TextStreamer(session.model.tokenizer, skip_prompt=True))``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import InvalidInputError
from .results import Turn


class TurnStream:
    """An ``ask`` turn read while it is written. Iterate once for the text pieces; then ``turn`` is
    the finished :class:`Turn`. A failed turn raises its typed error from the loop (when nothing was
    written, on the first step) and leaves the session as it was. Leaving the loop early lets the
    turn finish in the background: it still joins the conversation."""

    def __init__(self, session: Any, text: str, image: Any, prompts: Sequence[Any], examples: Sequence[Any],
                 generation: dict[str, Any]) -> None:
        if "streamer" in generation:
            raise InvalidInputError("stream: it makes its own streamer; pass yours to ask(streamer=…) instead")
        self._session, self._arguments, self._generation = session, (text, image, prompts, examples), generation
        self._started = False
        self.turn: Turn | None = None

    def __iter__(self) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        if self._started:
            raise InvalidInputError("stream: a turn is streamed once; ask again for another")
        self._started = True
        streamer = TextIteratorStreamer(self._session.model.tokenizer, skip_prompt=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.turn = self._session.ask(*self._arguments, streamer=streamer, **self._generation)
            except Exception as error:  # noqa: BLE001 - re-raised in the reader's thread, below
                failure.append(error)
                streamer.end()  # the reader waits on the streamer: a turn that failed before decoding never ends it

        worker = threading.Thread(target=run, name="visionllm2-stream", daemon=True)
        worker.start()
        try:
            yield from (piece for piece in streamer if piece)
        finally:
            worker.join()
        if failure:
            raise failure[0]
