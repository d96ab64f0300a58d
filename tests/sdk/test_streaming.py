"""Streaming a free answer: transformers' streamers through ``ask``, and ``Session.stream`` (tiny preset)."""

from __future__ import annotations

import pytest
import torch
from forced_decoding import forced
from transformers import TextStreamer

from visionllm2.model import tokens as T
from visionllm2.model.batch import collate
from visionllm2.sdk import InvalidInputError, InvalidPromptError
from visionllm2.sdk.batch import BatchPredictor


class Recorder:
    """A streamer that keeps what it is given."""

    def __init__(self) -> None:
        self.puts: list[torch.Tensor] = []
        self.ends = 0

    def put(self, value: torch.Tensor) -> None:
        self.puts.append(value)

    def end(self) -> None:
        self.ends += 1


def routing_then_words(model, words: int = 2):
    """A logits processor: ``words`` plain words, then ``[DET]``, then ``</s>``."""
    return forced([[5 + i for i in range(words)] + [model.special_ids[T.DET]]])


def test_a_streamer_gets_the_prompt_then_the_answer_it_decodes_to(session, photo):
    recorder = Recorder()
    turn = session.ask("find it", image=photo, streamer=recorder, logits_processor=routing_then_words(session.model))
    prompt, *answer = recorder.puts
    assert prompt.ndim == 2 and prompt.shape[0] == 1 and recorder.ends == 1
    streamed = [int(t) for part in answer for t in part.tolist()]
    assert session.model.tokenizer.decode(streamed) == turn.text and turn.routes == [T.DET] and turn.boxes is not None
    assert "[DET]" in turn.text and 2 not in streamed  # the closing </s> is not streamed, as turn.text leaves it out


def test_transformers_text_streamer_prints_the_answer(session, photo, capsys):
    streamer = TextStreamer(session.model.tokenizer, skip_prompt=True)
    turn = session.ask("what is it?", image=photo, streamer=streamer, max_new_tokens=6)
    assert capsys.readouterr().out.strip() == turn.text.strip()


def test_stream_yields_the_text_then_holds_the_turn(session, photo):
    stream = session.stream("find it", image=photo, logits_processor=routing_then_words(session.model, 3))
    assert stream.turn is None and session.turns == []  # nothing runs before the loop
    pieces = list(stream)
    assert pieces and "".join(pieces).strip() == stream.turn.text.strip() and stream.turn is session.turns[-1]
    assert stream.turn.routes == [T.DET] and stream.turn.boxes is not None
    with pytest.raises(InvalidInputError, match="streamed once"):
        list(stream)


def test_leaving_the_loop_early_still_finishes_the_turn(session, photo):
    stream = iter(session.stream("find it", image=photo, logits_processor=routing_then_words(session.model, 4)))
    next(stream)
    stream.close()  # what a `break` does: the turn is finished before close returns
    assert len(session.turns) == 1 and session.turns[0].routes == [T.DET]


def test_a_failing_stream_raises_its_typed_error_and_leaves_the_session_as_it_was(session, photo):
    session.detect(["person"], image=photo)
    before = (len(session.turns), len(session.exchanges), sorted(session.images))
    with pytest.raises(InvalidPromptError, match="non-empty question"):
        list(session.stream("", image=photo))
    with pytest.raises(InvalidInputError, match="unknown"):
        list(session.stream("hi", temprature=2))
    with pytest.raises(InvalidInputError, match="its own streamer"):
        session.stream("hi", streamer=Recorder())
    with pytest.raises(InvalidInputError, match="transformers streamer"):
        session.ask("hi", streamer=print)
    assert (len(session.turns), len(session.exchanges), sorted(session.images)) == before


def test_streaming_follows_one_sequence(session, photo):
    with pytest.raises(InvalidInputError, match="stream one with Session.stream"):
        BatchPredictor(session.model).ask("hi", images=[photo, photo], streamer=Recorder())
    processor = session.processor
    chat = processor.build([processor_message("hi")], [], add_generation_prompt=True)
    with pytest.raises(InvalidInputError, match="one sequence, got a batch of 2"):
        session.model.generate(collate([chat, chat], processor.tokenizer.pad_id, "left"), streamer=Recorder())


def processor_message(text: str):
    from visionllm2.model.processor import Message

    return Message("user", [text])


def test_the_tokenizer_decodes_one_id_as_transformers_tokenizers_do(session):
    tokenizer = session.model.tokenizer
    assert tokenizer.decode(7) == tokenizer.decode([7])
