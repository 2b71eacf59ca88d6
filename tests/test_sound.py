"""The alarm's sound (fatigue/inference/sound.py, detect --sound): the player each platform
gets, the generated beep, a stand-in player that records when it is asked to play and stop
(through a whole detect run and through AlarmSound itself), real child processes killed on
stop, the bell when nothing else works, and --sound / --sound-file on the command line.
No real audio is played."""
from __future__ import annotations

import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import pytest

import detect
from conftest import FPS, blinks, eyes_video, run_script
from fatigue.data import synthetic_videos as sv
from fatigue.errors import UserError
from fatigue.inference import detection
from fatigue.inference import sound as sound_module
from fatigue.inference.alarm import ALARM, OK
from fatigue.inference.sound import (BEEP_SECONDS, SAMPLE_RATE, TONES, AlarmSound, wav_seconds,
                                     BellPlayer, CommandPlayer, Player, choose_player,
                                     make_player, open_sound, sound_wanted, write_beep)


@pytest.fixture(autouse=True)
def own_temp_folder(tmp_path, monkeypatch):
    """The beep is written to the temporary folder: each test's own, not /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


class Recorder(Player):
    """A stand-in player: records what it is asked to play and when, in a shared log."""
    name = "recorder"

    def __init__(self, log: list | None = None):
        self.log = [] if log is None else log

    def play(self, path: Path) -> None:
        self.log.append(("play", Path(path), Path(path).is_file(), time.monotonic()))

    def stop(self) -> None:
        self.log.append(("stop", time.monotonic()))

    def plays(self) -> int:
        return sum(e[0] == "play" for e in self.log)


def wait_for(condition, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while not (met := condition()) and time.monotonic() < end:
        time.sleep(0.01)
    return met


def bells(capsys, seen: list[str]) -> int:
    """How many terminal bells stderr has rung so far (capsys hands out each output once)."""
    seen.append(capsys.readouterr().err)
    return "".join(seen).count("\a")


@pytest.mark.parametrize("platform, tools, expected", [
    ("win32", set(), "winsound"),                  # winsound comes with Python on Windows
    ("darwin", {"afplay", "aplay"}, "afplay"),
    ("darwin", set(), "bell"),
    ("linux", {"paplay", "aplay"}, "paplay"),      # the sound server first
    ("linux", {"aplay"}, "aplay"),
    ("linux", {"afplay"}, "bell"),
    ("freebsd14", {"paplay"}, "paplay"),
])
def test_the_player_is_the_one_the_platform_has(platform, tools, expected):
    assert choose_player(platform, tools.__contains__) == expected


def test_each_choice_makes_its_player():
    assert make_player("aplay").command == ["aplay", "-q"]
    assert make_player("paplay").command == ["paplay"]
    assert isinstance(make_player("bell"), BellPlayer)
    assert make_player("winsound").name == "winsound"


def test_the_beep_is_one_file_a_user_that_no_detection_leaves_behind(tmp_path):
    """Each detection wrote its own /tmp/alarm-*.wav and deleted it when closed: one killed
    with kill -9 left it behind, one more each time."""
    first, second = open_sound(player=Recorder()), open_sound(player=Recorder())
    assert first.path == second.path and first.path.parent == tmp_path
    assert wav_seconds(first.path) == pytest.approx(BEEP_SECONDS)
    first.close()
    assert second.path.is_file()  # still there for the other detection
    second.close()
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]


def test_a_beep_that_cannot_be_written_rings_the_bell_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no" / "such" / "folder"))
    notes: list[str] = []
    sound = open_sound(player=Recorder(), say=notes.append)
    assert isinstance(sound.player, BellPlayer)
    assert len(notes) == 1 and "the alarm's beep cannot be written in" in notes[0] and \
        "No such file or directory" in notes[0]
    sound.close()


def test_the_beep_is_a_valid_wav_of_the_stated_length(tmp_path):
    path = write_beep(tmp_path / "beep.wav")
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 22050)
        assert wav.getnframes() / wav.getframerate() == pytest.approx(BEEP_SECONDS)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(float)
    assert SAMPLE_RATE == 22050 and BEEP_SECONDS == 0.4
    assert abs(samples[0]) < 100 and abs(samples[-1]) < 100  # faded: no click
    assert 0.5 * 32767 < np.abs(samples).max() <= 0.6 * 32767 + 1
    # Two tones, high then low.
    for half, tone in zip(np.split(samples, 2), TONES):
        spectrum = np.abs(np.fft.rfft(half))
        assert np.fft.rfftfreq(len(half), 1 / SAMPLE_RATE)[spectrum.argmax()] == \
            pytest.approx(tone, abs=10)


def test_the_sound_follows_the_alarm_of_a_real_run(face_model, tmp_path, monkeypatch):
    """detect --sound yes on test_detect's drive (eyes shut from 6 s to 12 s): the stand-in
    player is asked to play right after the first ALARM window and to stop right after the
    window that ends the alarm, and never outside it."""
    rng = np.random.default_rng(11)
    eyes = np.concatenate([blinks(6, rng), np.ones(6 * FPS), blinks(6, rng)])
    source = tmp_path / "drive.mp4"
    eyes_video(source, sv.make_subject("driver", rng, FPS), eyes, 11)
    log: list = []
    made: list[AlarmSound] = []

    def open_with_recorder(sound_file=None):
        made.append(open_sound(sound_file, player=Recorder(log)))
        return made[-1]

    window = detection.Outputs.window
    monkeypatch.setattr(detection.Outputs, "window",
                        lambda self, w: (log.append(("window", w.state)), window(self, w)))
    monkeypatch.setattr(detect, "open_sound", open_with_recorder)
    assert detect.main(["--model", str(face_model), "--source", str(source), "--csv",
                        str(tmp_path / "w.csv"), "--every", "2", "--quiet",
                        "--sound", "yes"]) == 0
    kinds = [e[0] if e[0] != "window" else e[1] for e in log]
    on = kinds.index(ALARM)
    assert kinds[on + 1] == "play"
    off = kinds.index(OK, on)  # the window whose average fell below the off-threshold
    assert kinds[off + 1] == "stop" and "stop" not in kinds[:off]
    assert "play" not in kinds[:on] and "play" not in kinds[off + 1:]
    plays = [e for e in log if e[0] == "play"]
    assert all(e[1] == made[0].path and e[2] for e in plays)  # the beep, there when played


def test_the_sound_repeats_while_on_and_stops_at_once(tmp_path):
    player = Recorder()
    path = write_beep(tmp_path / "beep.wav")
    sound = AlarmSound(player, path, seconds=0.05, gap=0.05)
    sound.start()
    assert player.plays() == 1  # at once, not on the next repeat
    sound.start()               # called on every ALARM window: no second sound
    assert player.plays() == 1
    assert wait_for(lambda: player.plays() >= 3, 5)
    times = [e[3] for e in player.log]
    assert min(np.diff(times)) >= 0.09  # one play per period, not a burst
    sound.stop()
    stopped = player.plays()
    assert player.log[-1][0] == "stop"
    sound.stop()
    assert sum(e[0] == "stop" for e in player.log) == 1
    time.sleep(0.3)
    assert player.plays() == stopped  # silent once the alarm is off
    sound.start()
    assert player.plays() == stopped + 1
    sound.close()
    assert not sound._thread.is_alive() and player.log[-1][0] == "stop"
    assert path.exists()  # the caller's file is left alone


def test_stopping_kills_the_player_process(tmp_path):
    player = CommandPlayer([sys.executable, "-c", "import time; time.sleep(60)"])
    begun = time.monotonic()
    player.play(tmp_path / "beep.wav")
    assert time.monotonic() - begun < 5  # started, not waited for (the start takes ms)
    process = player._process
    assert process.poll() is None
    player.play(tmp_path / "beep.wav")
    assert player._process is process  # no second sound over one still playing
    player.stop()
    assert process.poll() is not None and player.failed() is None


@pytest.mark.parametrize("command, reason", [
    ([sys.executable, "-c", "raise SystemExit(3)"], "exited with code 3"),  # no device
    (["/nonexistent/player"], "player failed"),                            # cannot start
])
def test_a_failing_player_gives_way_to_the_bell_with_one_note(tmp_path, capsys, command,
                                                              reason):
    notes: list[str] = []
    sound = AlarmSound(CommandPlayer(command), write_beep(tmp_path / "b.wav"), seconds=0.05,
                       gap=0.05, say=notes.append)
    sound.start()
    assert wait_for(lambda: isinstance(sound.player, BellPlayer))
    rung: list[str] = []
    assert wait_for(lambda: bells(capsys, rung) >= 1)
    sound.close()
    assert len(notes) == 1 and reason in notes[0] and "terminal bell" in notes[0]


NO_DEVICE = [sys.executable, "-c", "raise SystemExit(1)"]  # as aplay without a sound card


def test_a_hung_player_is_found_when_a_short_alarm_ends(tmp_path):
    """Checked only at the next play, a hung player was killed by the end of each alarm
    shorter than its limit, and the next alarm started a new one: silent for good."""
    notes: list[str] = []
    sound = AlarmSound(CommandPlayer([sys.executable, "-c", "import time; time.sleep(60)"]),
                       write_beep(tmp_path / "b.wav"), seconds=0.1, gap=0.1, say=notes.append)
    sound.start()
    process = sound.player._process
    time.sleep(sound_module.HUNG_AFTER + 0.4)
    sound.stop()
    assert process.poll() is not None and isinstance(sound.player, BellPlayer)
    assert len(notes) == 1 and "did not finish a 0.1 s sound" in notes[0]
    sound.close()


def test_a_hung_player_is_found_after_two_alarms_too_short_to_find_it(tmp_path):
    """Alarms shorter than the sound plus HUNG_AFTER each killed the hung player at their
    end, and the next began a new one: silent for good, without a word."""
    notes: list[str] = []
    sound = AlarmSound(CommandPlayer([sys.executable, "-c", "import time; time.sleep(60)"]),
                       write_beep(tmp_path / "b.wav"), seconds=0.1, gap=0.1, say=notes.append)
    processes = []
    for _ in range(2):
        sound.start()
        processes.append(sound.player._process)
        time.sleep(0.8)  # past the sound's end by more than 0.5 s, short of HUNG_AFTER's 1.1 s
        sound.stop()
    assert isinstance(sound.player, BellPlayer) and all(p.poll() is not None for p in processes)
    assert len(notes) == 1 and notes[0].endswith(
        "did not finish a 0.1 s sound by the end of 2 alarms playing the alarm sound: the "
        "terminal bell rings instead")
    sound.close()


def test_a_hung_player_gives_way_to_the_bell_and_is_killed(tmp_path, capsys, monkeypatch):
    """aplay blocked on a busy device (paplay on a stuck server) never ends: every play was
    skipped while it ran, so the alarm stayed silent, without a word."""
    monkeypatch.setattr(sound_module, "HUNG_AFTER", 0.3)
    notes: list[str] = []
    sound = AlarmSound(CommandPlayer([sys.executable, "-c", "import time; time.sleep(60)"]),
                       write_beep(tmp_path / "b.wav"), seconds=0.1, gap=0.1, say=notes.append)
    sound.start()
    process = sound.player._process
    rung: list[str] = []
    assert wait_for(lambda: bells(capsys, rung) >= 1, 5)
    assert process.poll() is not None  # killed, not left running
    sound.close()
    assert len(notes) == 1 and "did not finish a 0.1 s sound in" in notes[0]


def test_a_player_without_a_device_gives_way_before_its_next_play(tmp_path, capsys):
    """The bell rings a fraction of a second after the player failed, not a period (here
    10 s) later, when the next play would find it."""
    notes: list[str] = []
    sound = AlarmSound(CommandPlayer(NO_DEVICE), write_beep(tmp_path / "b.wav"), seconds=5,
                       gap=5, say=notes.append)
    sound.start()
    rung: list[str] = []
    assert wait_for(lambda: bells(capsys, rung) >= 1, 5)
    sound.close()
    assert len(notes) == 1 and "exited with code 1" in notes[0]


def test_an_alarm_over_before_its_player_was_checked_still_says_it_failed(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(sound_module, "CHECK_AFTER", 60.0)  # only the stop can find it
    notes: list[str] = []
    sound = AlarmSound(CommandPlayer(NO_DEVICE), write_beep(tmp_path / "b.wav"), seconds=5,
                       gap=5, say=notes.append)
    sound.start()
    assert wait_for(lambda: sound.player._process.poll() is not None)
    sound.stop()
    assert len(notes) == 1 and "exited with code 1" in notes[0]
    assert isinstance(sound.player, BellPlayer)  # the next alarm rings the bell
    sound.close()
    assert len(notes) == 1


def test_without_a_player_the_bell_rings_with_one_note(capsys):
    notes: list[str] = []
    sound = open_sound(platform="linux", which=lambda name: None, say=notes.append)
    assert notes == ["note: no sound player found (looked for paplay or aplay): the alarm "
                     "rings the terminal bell instead"]
    assert isinstance(sound.player, BellPlayer)
    sound.period = 0.05  # repeated while on; tested quickly
    sound.start()
    rung: list[str] = []
    assert wait_for(lambda: bells(capsys, rung) >= 3, 5)
    sound.close()
    assert len(notes) == 1


@pytest.mark.parametrize("mode, camera, wanted", [
    ("auto", True, True), ("auto", False, False), ("yes", False, True), ("no", True, False)])
def test_sound_wanted(mode, camera, wanted):
    assert sound_wanted(mode, camera) is wanted


class Ran(Exception):
    """What the stand-in for detection.run raises: the sound it was given."""


def test_sound_auto_is_on_for_a_camera_index_and_off_for_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(detect, "open_sound", lambda sound_file=None: open_sound(
        sound_file, player=Recorder()))

    def fake_run(*args, sound=None, **kwargs):
        raise Ran(sound)

    monkeypatch.setattr(detect, "run", fake_run)
    (tmp_path / "drive.mp4").touch()

    def sound_for(source: str, *options: str) -> AlarmSound | None:
        with pytest.raises(Ran) as ran:
            detect.main(["--model", "m.pth", "--source", source, *options])
        return ran.value.args[0]

    camera = sound_for("0")
    assert isinstance(camera, AlarmSound)
    assert camera._closed  # closed when the run ends, even so
    assert sound_for("drive.mp4") is None
    assert sound_for("0", "--sound", "no") is None
    assert isinstance(sound_for("drive.mp4", "--sound", "yes"), AlarmSound)
    (tmp_path / "0").touch()  # a file named 0 is a file, not camera 0
    assert sound_for("0") is None
    # A sound file given for a video file, --sound left at auto: silent, but said.
    write_beep(tmp_path / "mine.wav")
    capsys.readouterr()
    assert sound_for("drive.mp4", "--sound-file", "mine.wav") is None
    assert "note: --sound-file is not played: --sound auto is silent for a video file" in \
        capsys.readouterr().out
    assert isinstance(sound_for("drive.mp4", "--sound-file", "mine.wav", "--sound", "yes"),
                      AlarmSound)
    assert "--sound-file is not played" not in capsys.readouterr().out


def test_an_unreadable_sound_file_is_refused_before_the_camera(tmp_path, monkeypatch):
    monkeypatch.setattr(detect, "run", lambda *a, **k: pytest.fail("the run started"))
    (tmp_path / "beep.wav").write_text("not a wav")
    with pytest.raises(UserError, match="cannot be read as a WAV file"):
        detect.main(["--model", "m.pth", "--source", "0", "--sound-file",
                     str(tmp_path / "beep.wav")])
    with pytest.raises(UserError, match="is not a file"):
        detect.main(["--model", "m.pth", "--source", "0", "--sound-file", str(tmp_path)])
    for content in (b"", b"abc"):  # too short to hold a header: the reason is still said
        (tmp_path / "short.wav").write_bytes(content)
        with pytest.raises(UserError, match=r"as a WAV file \(it ends too soon\)"):
            wav_seconds(tmp_path / "short.wav")


def test_a_missing_sound_file_is_one_line_and_exit_2(tmp_path):
    # Neither the model nor camera 0 exists: the sound file is checked first.
    result = run_script("detect.py", "--model", str(tmp_path / "none.pth"), "--source", "0",
                        "--sound-file", str(tmp_path / "siren.wav"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: --sound-file {tmp_path / 'siren.wav'} "
                                          f"does not exist"]
