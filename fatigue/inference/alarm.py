"""The drowsiness alarm: a smoothed probability with hysteresis, a minimum on-time and a
cooldown. Pure logic (time is passed in), so it is tested without video or model."""
from __future__ import annotations

import math
from dataclasses import dataclass

from fatigue.errors import UserError

OK, WARNING, ALARM = "ok", "warning", "ALARM"
HIDDEN = "eyes hidden"  # a window's state when the eyes are not seen enough to judge


@dataclass
class Window:
    """One scored window: the model's view of the last sequence_length frames."""
    time: float            # seconds from the start, at the window's last frame
    frame: int             # source frame index of that frame
    probability: float     # P(drowsy) of this window
    smoothed: float
    state: str
    face_found: bool       # the latest face detection saw a face
    face_fraction: float   # share of the window's frames with a face found
    alarm: bool = False    # the alarm is on (also while the eyes are hidden: it keeps its state)


@dataclass(frozen=True)
class AlarmSettings:
    # Measured on the robustness suite's drives (docs/robustness.md): a model trained on clips
    # that turn drowsy after 1 s of a doze already requires the closure to last, so half a
    # second more is enough, and a light average with a close off-threshold lets the alarm
    # end within about 3 s of the eyes opening (a 3 s window still holds the closure).
    on: float = 0.7          # smoothed P(drowsy) at or above which an alarm may start
    off: float = 0.55        # an alarm ends when it falls below this (hysteresis)
    min_on: float = 0.5      # seconds it must stay at or above `on` before the alarm starts
    cooldown: float = 5.0    # seconds after an alarm ends before another may start
    smoothing: float = 0.7   # weight of the newest probability in the moving average

    def check(self) -> None:
        # Probabilities lie in [0, 1]: an alarm at 0 would start at once and never end, one
        # at 1 never start, and one whose off-threshold is 0 never end.
        if not 0 < self.on < 1:
            raise UserError(f"--on-threshold must be more than 0 and less than 1, got "
                            f"{self.on:g} (at 0 the alarm would never end, at 1 never start)")
        if self.off > self.on:
            raise UserError(f"--off-threshold ({self.off:g}) must be at most --on-threshold "
                            f"({self.on:g})")
        if not self.off > 0:
            raise UserError(f"--off-threshold must be more than 0, got {self.off:g} (at 0 an "
                            f"alarm would never end)")
        if not (0 <= self.min_on < math.inf and 0 <= self.cooldown < math.inf):
            raise UserError(f"--min-on ({self.min_on}) and --cooldown ({self.cooldown}) must "
                            f"be seconds, 0 or more")
        if not 0 < self.smoothing <= 1:
            raise UserError(f"--smoothing must be in (0, 1], got {self.smoothing}")

    def off_for(self, on: float) -> float:
        """The off-threshold that keeps these settings' ratio to the on-threshold `on`."""
        return round(on * self.off / self.on, 4)

    def halfway_seconds(self, window_seconds: float) -> float:
        """How long the moving average takes to move halfway to a new probability, with a
        window scored every `window_seconds`."""
        if self.smoothing >= 1:
            return 0.0
        return math.log(0.5) / math.log(1 - self.smoothing) * window_seconds


class Alarm:
    """Turns a stream of (time, P(drowsy)) into states and alarm events. No clock, no I/O.

    An exponential moving average smooths the probability (one bad window is not a doze).
    The alarm starts once the average has stayed at or above `on` for `min_on` seconds and
    no earlier alarm ended within `cooldown` seconds; it ends only when the average drops
    below `off`, so a value wavering around one threshold cannot make it flicker.
    States: "ok", "warning" (above `on`, not yet long enough or cooling down), "ALARM".
    """

    def __init__(self, settings: AlarmSettings = AlarmSettings()):
        self.settings = settings
        self.smoothed: float | None = None
        self.active = False
        self.events: list[list[float | None]] = []  # [start, end]; end None while on
        self._above_since: float | None = None
        self._quiet_until = -float("inf")

    def update(self, t: float, probability: float) -> str:
        s = self.settings
        self.smoothed = probability if self.smoothed is None else (
            s.smoothing * probability + (1 - s.smoothing) * self.smoothed)
        if self.active:
            if self.smoothed < s.off:
                self.active = False
                self.events[-1][1] = t
                self._quiet_until = t + s.cooldown
                self._above_since = None
            return ALARM if self.active else OK
        if self.smoothed < s.on:
            self._above_since = None
            return OK
        if self._above_since is None:
            self._above_since = t
        if t - self._above_since >= s.min_on and t >= self._quiet_until:
            self.active = True
            self.events.append([t, None])
            return ALARM
        return WARNING
