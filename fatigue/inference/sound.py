"""The alarm you can hear. A drowsy driver is not looking at a screen, so detect also sounds
while its alarm is on (Euro NCAP's driver-monitoring protocol asks for an audible warning
beside the visual one).

The sound is a short two-tone beep the suite writes itself (no sound file is shipped), or
the user's own WAV, played again and again while the alarm is on by whatever the platform
has: winsound on Windows, afplay on macOS, paplay or aplay elsewhere, else the terminal
bell. Nothing here blocks the caller: a player only starts a sound (a child process, or
winsound's asynchronous mode), a background thread repeats it, and stopping kills it.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from fatigue.errors import UserError
from fatigue import files

SAMPLE_RATE = 22050   # samples a second of the generated beep (16-bit mono)
BEEP_SECONDS = 0.4    # its length: two tones of 0.2 s each
TONES = (880, 660)    # Hz: high then low, a warning rather than a ring tone
GAP = 0.4             # seconds of silence between two plays while the alarm is on
CHECK_AFTER = 0.25    # seconds after a play starts: a player without a device has failed
# Seconds a play may run past its sound's length before the player is taken as hung (aplay
# blocked on a busy device, paplay on a stuck server): silent, it would skip every play.
# Checked at each play and when an alarm ends, so an alarm this much longer than the sound
# finds it (a slow start of paplay takes a few tenths of a second).
HUNG_AFTER = 1.0
# Seconds past its sound's end a play may still run when an alarm ends: two alarms in a row
# ending with one further past are taken as a hung player (alarms too short for HUNG_AFTER).
OUTLIVED_AFTER = 0.5
# Command-line players, in the order they are tried. paplay goes through the sound server
# (PulseAudio or PipeWire) that a desktop's own sounds use; aplay talks to ALSA directly.
COMMANDS = {"darwin": ("afplay",), "other": ("paplay", "aplay")}
OPTIONS = {"aplay": ["-q"]}  # each player's options before the file


def sound_wanted(mode: str, camera: bool) -> bool:
    """Whether to sound for --sound `mode` ("auto", "yes" or "no"): auto sounds for a camera,
    where someone is driving now, and not for a video file, which is replayed."""
    return mode == "yes" or (mode == "auto" and camera)


def write_beep(path: Path, seconds: float = BEEP_SECONDS, rate: int = SAMPLE_RATE) -> Path:
    """Write the alarm's beep to `path` (see beep_into)."""
    # The file opened here: wave.open(name) that cannot open it leaves a half-made writer
    # whose __del__ prints a traceback.
    with open(path, "wb") as fh:
        beep_into(fh, seconds, rate)
    return path


def beep_into(fh: BinaryIO, seconds: float = BEEP_SECONDS, rate: int = SAMPLE_RATE) -> None:
    """The alarm's beep into an open binary file: 16-bit mono PCM WAV, TONES one after
    the other."""
    def tone(freq: float, n: int) -> np.ndarray:
        k = np.arange(n)
        fade = np.clip(np.minimum(k, k[::-1]) / (0.005 * rate), 0, 1)  # 5 ms in and out: no click
        return np.sin(2 * np.pi * freq * k / rate) * fade

    n = round(seconds * rate)
    samples = np.concatenate([tone(TONES[0], n // 2), tone(TONES[1], n - n // 2)])
    with wave.open(fh, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((0.6 * 32767 * samples).astype("<i2").tobytes())


def wav_seconds(path: Path) -> float:
    """The length of a WAV file the user gave (--sound-file); UserError when it is missing
    or not a WAV that Python's wave module reads (uncompressed PCM)."""
    if not path.is_file():
        raise UserError(f"--sound-file {path} does not exist" if not path.exists() else
                        f"--sound-file {path} is not a file")
    try:
        with wave.open(str(path), "rb") as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
    except (wave.Error, EOFError, OSError) as err:
        why = str(err) or ("it ends too soon" if isinstance(err, EOFError) else "unreadable")
        raise UserError(f"--sound-file {path} cannot be read as a WAV file ({why}); give an "
                        f"uncompressed (PCM) .wav") from None
    if frames == 0 or rate <= 0:
        raise UserError(f"--sound-file {path} holds no sound")
    return frames / rate


# ----------------------------------------------------------------------------- players
class Player:
    """How a sound is made here. `play` starts the WAV at `path` and returns at once, `stop`
    cuts it short, `failed` says why the last play could not be heard (None while fine)."""
    name = "player"

    def play(self, path: Path) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        pass

    def failed(self) -> str | None:
        return None

    def playing_since(self) -> float | None:
        """When (time.monotonic()) the play still sounding began; None when none is."""
        return None


class CommandPlayer(Player):
    """A command-line player (afplay, paplay, aplay) run as a child process per play."""

    def __init__(self, command: list[str]):
        self.command, self.name = command, Path(command[0]).name
        self._process: subprocess.Popen | None = None
        self._started = 0.0

    def play(self, path: Path) -> None:
        if self.playing_since() is not None:
            return  # the last play is still sounding (a slow start, a long --sound-file)
        self._process = subprocess.Popen([*self.command, str(path)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._started = time.monotonic()

    def playing_since(self) -> float | None:
        alive = self._process is not None and self._process.poll() is None
        return self._started if alive else None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def failed(self) -> str | None:
        # An exit code above 0 is the player's own failure (no sound server, no device); a
        # negative one is a signal (Ctrl+C in the terminal), not a reason to give up on it.
        code = self._process.poll() if self._process is not None else None
        return f"{self.name} exited with code {code}" if code is not None and code > 0 else None


class WinsoundPlayer(Player):
    """Windows' own player: winsound plays asynchronously and a None sound stops it."""
    name = "winsound"

    def play(self, path: Path) -> None:
        import winsound
        winsound.PlaySound(str(path), winsound.SND_FILENAME | winsound.SND_ASYNC
                           | winsound.SND_NODEFAULT)

    def stop(self) -> None:
        import winsound
        winsound.PlaySound(None, 0)


class BellPlayer(Player):
    """The terminal bell (BEL on stderr): where no player exists, still something to hear."""
    name = "bell"

    def play(self, path: Path) -> None:
        sys.stderr.write("\a")
        sys.stderr.flush()


def choose_player(platform: str, which: Callable[[str], object]) -> str:
    """How to play a WAV on `platform` (a sys.platform value), given `which` (shutil.which,
    or a stand-in in tests): "winsound", the first command-line player found, or "bell"."""
    if platform == "win32":
        return "winsound"
    for name in COMMANDS["darwin" if platform == "darwin" else "other"]:
        if which(name):
            return name
    return "bell"


def make_player(choice: str) -> Player:
    """The Player for a choose_player result."""
    if choice == "winsound":
        return WinsoundPlayer()
    if choice == "bell":
        return BellPlayer()
    return CommandPlayer([choice, *OPTIONS.get(choice, [])])


# ----------------------------------------------------------------------------- the sound
class AlarmSound:
    """Sounds while the alarm is on: `start` plays at once, a background thread plays again
    every `seconds + gap` until `stop`, which cuts the sound short. start and stop may be
    called on every window (they only act on a change) and return at once. `close` stops,
    ends the thread. A player that fails (it cannot start, its
    process exits with an error, or hangs) is replaced by the terminal bell, with a note."""

    def __init__(self, player: Player, path: Path, seconds: float, gap: float = GAP,
                 say: Callable[[str], None] = print):
        self.player, self.path, self.period = player, path, seconds + gap
        self.seconds = seconds
        self.say = say
        self.on = False
        self._closed = False
        self._played = 0.0
        self._checked = True  # whether the last play was checked CHECK_AFTER its start
        self._outlived = 0    # alarms in a row that ended with a play past its sound's end
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._wake:
            if self.on or self._closed:
                return
            self.on = True
            self._play()
            if self._thread is None:
                self._thread = threading.Thread(target=self._repeat, name="alarm sound",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            if not self.on:
                return
            self.on = False
            self._give_way_if_failed(ring=False)  # an alarm over before its check: still said
            # An alarm too short to find a hung player: one still playing well past its
            # sound's end, at the end of two alarms in a row, is taken as hung.
            outlived = self._past_sound_end() > OUTLIVED_AFTER
            self._outlived = self._outlived + 1 if outlived else 0
            if self._outlived >= 2:
                self.player.stop()  # the hung process goes
                self._to_bell(f"{self.player.name} did not finish a {self.seconds:.1f} s sound "
                              f"by the end of {self._outlived} alarms", ring=False)
            self.player.stop()
            self._wake.notify()

    def close(self) -> None:
        self.stop()
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> AlarmSound:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _play(self) -> None:
        """Play once (the lock held). A player that has failed gives way to the bell: the
        detection goes on, and the driver still hears something."""
        if self._give_way_if_failed(ring=True):
            self._played = time.monotonic()
            return
        try:
            self.player.play(self.path)
            self._checked = False
        except (OSError, RuntimeError) as err:  # no such program; winsound's own error
            self._to_bell(f"{self.player.name} failed ({err})", ring=True)
        self._played = time.monotonic()

    def _give_way_if_failed(self, ring: bool) -> bool:
        """(the lock held) Whether the player's last play failed; if so, the bell takes its
        place, with a note, and rings now when `ring` (the alarm is on)."""
        self._checked = True
        reason = self.player.failed()
        past = self._past_sound_end()
        if reason is None and past > HUNG_AFTER:
            reason = (f"{self.player.name} did not finish a {self.seconds:.1f} s sound in "
                      f"{self.seconds + past:.0f} s")
            self.player.stop()  # the hung process goes
        if reason is not None:
            self._to_bell(reason, ring)
        return reason is not None

    def _past_sound_end(self) -> float:
        """Seconds the play still sounding runs past its sound's end (-inf: none sounds)."""
        since = self.player.playing_since()
        return -math.inf if since is None else time.monotonic() - since - self.seconds

    def _to_bell(self, reason: str, ring: bool) -> None:
        self.say(f"note: {reason} playing the alarm sound: the terminal bell rings instead")
        self.player = BellPlayer()
        if ring:
            self.player.play(self.path)

    def _repeat(self) -> None:
        # While on: a check CHECK_AFTER each play starts (a player without a sound device
        # exits at once: the bell then rings within a fraction of a second, not a period
        # later), and a play every period.
        with self._wake:
            while not self._closed:
                due = self._played + (CHECK_AFTER if not self._checked else self.period)
                if not self.on:
                    self._wake.wait()
                elif time.monotonic() < due:
                    self._wake.wait(due - time.monotonic())
                elif not self._checked:
                    self._give_way_if_failed(ring=True)
                else:
                    self._play()


def open_sound(sound_file: Path | None = None, player: Player | None = None,
               platform: str = sys.platform, which: Callable[[str], str | None] = shutil.which,
               say: Callable[[str], None] = print) -> AlarmSound:
    """The alarm's sound: `sound_file` (a WAV) or the suite's beep, written once to a
    temporary file, through `player` (default: the one choose_player finds here). Without a
    player it rings the terminal bell and says so in one note."""
    if player is None:
        choice = choose_player(platform, which)
        if choice == "bell":
            tried = " or ".join(COMMANDS["darwin" if platform == "darwin" else "other"])
            say(f"note: no sound player found (looked for {tried}): the alarm rings the "
                f"terminal bell instead")
        player = make_player(choice)
    if sound_file is not None:
        return AlarmSound(player, sound_file, wav_seconds(sound_file), say=say)
    # One file a user, shared by every detection and kept: written anew (atomically) each
    # time, so a detection killed with kill -9 leaves nothing behind it.
    uid = os.getuid() if hasattr(os, "getuid") else 0
    beep = Path(tempfile.gettempdir()) / f"fatigue-alarm-beep-{uid}.wav"
    try:
        files.atomic_write(beep, beep_into)
    except OSError as err:  # a full or read-only temporary folder: still something to hear
        if not isinstance(player, BellPlayer):
            say(f"note: the alarm's beep cannot be written in {beep.parent}/ "
                f"({err.strerror or err}): the terminal bell rings instead")
            player = BellPlayer()
    return AlarmSound(player, beep, BEEP_SECONDS, say=say)
