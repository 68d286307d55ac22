"""The opt-in run timeline: spans only while recording, from every thread, one recording at a time."""
import threading

import pytest

from curator import tracing


def _span_in_thread(kind):
    with tracing.span(kind):
        pass


def test_spans_are_kept_only_while_recording_and_from_every_thread():
    with tracing.span("encode"):
        pass  # nothing records: a no-op
    with tracing.recording() as spans, tracing.span("video_job"):
        with tracing.span("clip_job"):
            pass
        thread = threading.Thread(target=_span_in_thread, args=("decode_call",))
        thread.start()
        thread.join()
    with tracing.span("encode"):
        pass  # recording over: not kept
    assert sorted(kind for kind, _, _ in spans) == ["clip_job", "decode_call", "video_job"]
    assert all(end >= start for _, start, end in spans)


def test_a_span_is_kept_when_its_block_raises():
    with tracing.recording() as spans, pytest.raises(ValueError), tracing.span("encode"):
        raise ValueError("bad clip")
    assert [kind for kind, _, _ in spans] == ["encode"]


def test_one_recording_at_a_time():
    with tracing.recording(), pytest.raises(RuntimeError, match="already"), tracing.recording():
        pass
