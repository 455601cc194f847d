"""Streaming training with delayed feedback: replay a click log window by window through the one
engine (`protocol.py`), with delayed-feedback methods as samplers plus losses (`methods.py`), the
observed-label view and the window grid (`labels.py`), and the input contract (`data.py`)."""

from agenticrs.train.streaming.data import ClickLog, StreamInput, load_clicks
from agenticrs.train.streaming.labels import ObservedView, WindowGrid, observed_view, stream_steps
from agenticrs.train.streaming.methods import METHODS, Samples, StreamMethod, importance_weights
from agenticrs.train.streaming.protocol import StreamConfig, run_stream

__all__ = [
    "METHODS", "ClickLog", "ObservedView", "Samples", "StreamConfig", "StreamInput", "StreamMethod", "WindowGrid",
    "importance_weights", "load_clicks", "observed_view", "run_stream", "stream_steps",
]  # fmt: skip
