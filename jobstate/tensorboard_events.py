"""TensorBoard event files written with tensorboard's own event writer: no torch and no
TensorFlow, so :mod:`jobstate` stays light (scalars as plain summaries, text for the
text plugin)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.text.metadata import create_summary_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util.tensor_util import make_tensor_proto


class TensorBoardEvents:
    """One event file in ``folder``; every call is on disk when it returns."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(folder))
        self._text_metadata = create_summary_metadata(display_name="", description="")

    def scalars(self, values: Mapping[str, float], step: int, wall_time: float | None = None) -> None:
        if values:
            self._add(Summary(value=[Summary.Value(tag=tag, simple_value=v) for tag, v in values.items()]), step,
                      wall_time)

    def text(self, tag: str, text: str, step: int, wall_time: float | None = None) -> None:
        value = Summary.Value(tag=tag, metadata=self._text_metadata, tensor=make_tensor_proto([text]))
        self._add(Summary(value=[value]), step, wall_time)

    def _add(self, summary: Summary, step: int, wall_time: float | None) -> None:
        self._writer.add_event(Event(wall_time=wall_time or time.time(), step=step, summary=summary))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
