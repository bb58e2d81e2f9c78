"""A song's way through the queue and separation, on stderr: on a terminal one bar redrawn in place;
otherwise (a log, CI) one plain line per change of state and per 10 percent, so nothing is overwritten."""

from __future__ import annotations

from typing import TextIO

BAR_WIDTH = 30
PLAIN_STEP = 10  # percent between plain lines


def describe(status: dict) -> str:
    """The status route's answer in a few words: `queued, position 2, about 1 min 30 s left`, `processing 45%,
    about 40 s left, 13.7 s ready`, `failed: <reason>`."""
    state = status.get("state", "unknown")
    if state == "queued":
        position = status.get("position")
        text = f"queued, position {position}" if position else "queued, being handed to a worker"
        return text + _left(status) + (f" ({status['reason']})" if status.get("reason") else "")
    if state == "processing":
        ready = status.get("ready_seconds") or 0
        return f"processing {status.get('progress', 0):.0f}%" + _left(status) + (
            f", {ready:.1f} s ready" if ready else "")
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
        # A new line per 10 percent, or place in the queue: not for each new estimate.
        band = int(percent // PLAIN_STEP) if state == "processing" else (status.get("position"), status.get("reason"))
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


def _left(status: dict) -> str:
    """`, about 1 min 30 s left` from the status' estimate; nothing without one."""
    eta = status.get("eta_seconds")
    if not isinstance(eta, int | float):
        return ""
    eta = round(eta)
    if eta < 60:
        return f", about {eta} s left"
    if eta < 3600:
        return f", about {eta // 60} min {eta % 60} s left"
    return f", about {eta // 3600} h {eta % 3600 // 60} min left"


def _percent(status: dict) -> float:
    state = status.get("state")
    if state == "processing":
        return float(status.get("progress") or 0)
    return 100.0 if state == "done" else 0.0
