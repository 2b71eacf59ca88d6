"""Watch a driver: a video file or a camera, a drowsiness probability a few times a
second, and an alarm.

    python main.py --mode detect --model models/best_model.pth --source drive.mp4 --output annotated.mp4
    python main.py --mode detect --model models/best_model.pth --source 0 --show     # webcam 0

This script is the command line; the detection itself (face crops at the model's frame
rate, a ring buffer of the last `sequence_length` crops scored every few frames, the
smoothed alarm with hysteresis, the CSV, the annotated video and the summary) lives in
fatigue/inference/detection.py, and the alarm's sound in fatigue/inference/sound.py.
Output: a CSV row per scored window, an optional annotated video, a sound while the alarm
is on (from a camera; --sound), and a summary with the alarms and the speed of each step.
"""
from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from config import DEVICES, Config, Parser
from fatigue.data.clip_store import MAX_FPS
from fatigue.data.video import CROP_DEFAULTS, ROTATIONS
from fatigue import files
from fatigue.errors import UserError, run_cli
from fatigue.inference.alarm import AlarmSettings
from fatigue.inference.detection import (is_camera, run, summary, stops_end_the_run,
                                        torch_threads)
from fatigue.inference.outputs import video_output_error
from fatigue.inference.sound import open_sound, sound_wanted, wav_seconds


def build_parser() -> argparse.ArgumentParser:
    """detect.py's options (main.py --mode detect passes its arguments on unchanged)."""
    p = Parser(
        description="Watch a driver on a video file or a camera and raise an alarm when the "
                    "model finds them drowsy. Writes one CSV row per scored window, and with "
                    "--output an annotated video; prints the alarms and the speed.",
        epilog="Examples: python main.py --mode detect --model models/best_model.pth --source "
               "drive.mp4 --output annotated.mp4;  python main.py --mode detect --model "
               "models/best_model.pth --source 0 --show  (webcam 0; q or Ctrl+C stops)")
    add = p.add_argument
    add("--model", required=True, metavar="PATH", type=files.file_name,
        help="trained checkpoint (e.g. models/best_model.pth)")
    add("--source", required=True, metavar="VIDEO_OR_CAMERA",
        help="a video file, a folder of frame images, or a camera index (0 is the first webcam)")
    add("--frames-fps", type=float, metavar="F",
        help="with a folder of frame images: the rate they were taken at (default: the "
             "model's frame rate, one image a frame, as prepare takes them)")
    add("--rotate", type=int, choices=sorted(ROTATIONS), default=0, metavar="DEGREES",
        help="turn each frame clockwise by 90, 180 or 270 degrees: for a camera mounted "
             "sideways or upside down, or a phone video whose rotation tag was lost (the face "
             "must be upright for the face detector; default: 0)")
    add("--output", metavar="PATH", type=files.output_file,
        help="write an annotated video (.mp4, .avi, .mov, .mkv, .m4v) at the model's frame "
             "rate: face box, probability bar, state, speed")
    add("--csv", default="detections.csv", metavar="PATH", type=files.output_file,
        help="per-window CSV: time, probability, state, face found (default: detections.csv)")
    add("--show", action="store_true", help="also show the annotated frames in a window, where "
                                            "a display exists (q quits)")
    add("--fps", type=float, metavar="F", help="frames per second fed to the model (default: the "
                                               "rate its training data was prepared at, else "
                                               f"{CROP_DEFAULTS['fps']:g})")
    add("--every", type=int, default=5, metavar="N",
        help="score the last sequence_length frames every N frames (default: 5, i.e. twice a "
             "second at 10 fps)")
    add("--on-threshold", type=float, metavar="P",
        help="smoothed P(drowsy) that starts an alarm (default: the one chosen on validation "
             f"data when the model was trained, else {AlarmSettings.on})")
    add("--off-threshold", type=float, metavar="P",
        help="smoothed P(drowsy) below which it ends (default: the one chosen on validation "
             "data; with --on-threshold given, or a model without one, 11/14 of the "
             "on-threshold)")
    add("--min-on", type=float, metavar="S",
        help=f"seconds above --on-threshold before the alarm starts (default: {AlarmSettings.min_on})")
    add("--cooldown", type=float, metavar="S",
        help=f"seconds after an alarm before the next may start (default: {AlarmSettings.cooldown})")
    add("--smoothing", type=float, metavar="W",
        help=f"weight of the newest window in the moving average, 1 = no smoothing "
             f"(default: {AlarmSettings.smoothing})")
    add("--duration", type=float, metavar="S", help="stop after S seconds (default: the whole "
                                                    "video; a camera runs until q or Ctrl+C)")
    add("--device", default=Config.device, choices=DEVICES,
        help=f"where the model runs (default: {Config.device})")
    add("--threads", type=int, default=1, metavar="N",
        help="CPU threads for the model (default: 1: nearly as fast as more for one clip at "
             "a time, and steady when other programs load the CPU)")
    add("--sound", choices=("auto", "yes", "no"), default="auto",
        help="sound while the alarm is on: a beep, repeated until it ends (default: auto: "
             "on for a camera, off for a video file)")
    add("--sound-file", metavar="PATH", help="a WAV file to play instead of the beep")
    add("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Check the options, run the detection and print its summary; 0 when done."""
    args = build_parser().parse_args(argv)
    files.not_an_input({"--output": args.output, "--csv": args.csv},
                       {"--source": args.source, "--model": args.model})
    files.distinct_outputs({"--output": args.output, "--csv": args.csv})
    given = {"on": args.on_threshold, "off": args.off_threshold, "min_on": args.min_on,
             "cooldown": args.cooldown, "smoothing": args.smoothing}
    overrides = {k: v for k, v in given.items() if v is not None}
    if args.every < 1 or args.threads < 1:
        raise UserError("--every and --threads must be at least 1")
    for name in ("fps", "frames_fps"):
        if getattr(args, name) is not None and not 0 < getattr(args, name) <= MAX_FPS:
            raise UserError(f"--{name.replace('_', '-')} must be more than 0 and at most "
                            f"{MAX_FPS:g}")
    if args.duration is not None and not args.duration > 0:
        raise UserError("--duration must be positive")
    not_a_video = args.output and video_output_error(args.output)
    if not_a_video:
        raise UserError(f"--output {args.output}: {not_a_video} (the annotated video)")
    sound_file = Path(args.sound_file) if args.sound_file else None
    if sound_file is not None:
        wav_seconds(sound_file)  # a bad file fails now, before the model and the camera
    output = Path(args.output) if args.output else None
    wanted = sound_wanted(args.sound, is_camera(args.source))
    if sound_file is not None and not wanted and args.sound == "auto":
        print("note: --sound-file is not played: --sound auto is silent for a video file "
              "(it sounds for a camera); add --sound yes to hear it")
    sound = open_sound(sound_file) if wanted else None
    with sound or nullcontext(), torch_threads(args.threads), stops_end_the_run():
        result, info = run(args.model, args.source, Path(args.csv), output, args.fps,
                           args.every, overrides, args.device, args.show, args.duration,
                           progress=not args.quiet, sound=sound, frames_fps=args.frames_fps,
                           rotate=args.rotate)
    print(summary(result, args.source, info, Path(args.csv), output))
    return 1 if result.video_problem or result.csv_problem or result.camera_lost else 0


if __name__ == "__main__":
    run_cli(main)
