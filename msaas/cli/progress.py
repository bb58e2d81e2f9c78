"""A song's way through the queue and separation, on stderr: on a terminal one bar redrawn in place;
otherwise (a log, CI) one plain line per change of state and per 10 percent, so nothing is overwritten."""

from __future__ import annotations

from typing import TextIO

BAR_WIDTH = 30
PLAIN_STEP = 10  # percent between plain lines


def describe(status: dict) -> str:
    """The status route's answer in a few words: `queued, position 2`, `processing 45%`, `failed: <reason>`."""
    state = status.get("state", "unknown")
    if state == "queued":
        position = status.get("position")
        text = f"queued, position {position}" if position else "queued, being handed to a worker"
        return text + (f" ({status['reason']})" if status.get("reason") else "")
    if state == "processing":
        return f"processing {status.get('progress', 0):.0f}%"
    if state in ("failed", "cancelled"):
        return f"{state}: {status.get('reason', 'no reason given')}"
    return state


class Progress:
    def __init__(self, stream: TextIO, label: str, quiet: bool = False) -> None:
        self.stream = stream
        self.label = label
        self.quiet = quiet
        self.redraw = stream.isatty()
        self.last_plain: tuple = ()  # (state, 10 % band or description) of the last plain line
        self.bar_shown = False  # a redrawn bar is on the current line

    def update(self, status: dict) -> None:
        if self.quiet:
            return
        percent = _percent(status)
        if self.redraw:
            filled = round(BAR_WIDTH * percent / 100)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stream.write(f"\r\033[K{self.label} [{bar}] {percent:3.0f}% {describe(status)}")
            self.stream.flush()
            self.bar_shown = True
            return
        state = status.get("state")
        band = int(percent // PLAIN_STEP) if state == "processing" else describe(status)
        if (state, band) != self.last_plain:
            print(f"{self.label}: {describe(status)}", file=self.stream, flush=True)
            self.last_plain = (state, band)

    def note(self, text: str) -> None:
        """A message that stays: ends a redrawn bar's line first."""
        if self.quiet:
            return
        if self.bar_shown:
            self.stream.write("\n")
            self.bar_shown = False
        print(f"{self.label}: {text}", file=self.stream, flush=True)


def _percent(status: dict) -> float:
    state = status.get("state")
    if state == "processing":
        return float(status.get("progress") or 0)
    return 100.0 if state == "done" else 0.0
