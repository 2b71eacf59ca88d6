"""All settings of a run: one dataclass with defaults, overridden from the command line.

The whole config is stored in every checkpoint, so a checkpoint alone can rebuild its
model (`Config.from_dict(ckpt["config"])`) and a resumed run knows every setting.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, NoReturn

from fatigue import files
from fatigue.errors import OptionError, says_errors

BACKBONES = ("small", "resnet18", "mobilenet_v3_small")
TEMPORAL = ("lstm", "mean")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("auto", "off", "bf16", "fp16")
AUTO_YES_NO = ("auto", "yes", "no")
PRETRAINED = ("none", "imagenet")
TORCHVISION_BACKBONES = BACKBONES[1:]
# The smallest --image-size each backbone can look at: model.small_cnn halves the frame
# three times (the torchvision backbones pool adaptively).
MIN_IMAGE_SIZE = {"small": 8}
MAX_IMAGE_SIZE = 512  # px: every frame is resized to it; larger ones are a typo
MAX_SEED = 2**63 - 1  # what torch's and numpy's generators take
MAX_LEARNING_RATE = 10.0  # AdamW moves each weight by about this much a step: beyond, a typo


def _opt(default: Any, help: str, group: str, flag: str | None = None, choices: tuple | None = None,
         alone: Any = None, parse: Callable[[str], Any] | None = None):
    """A config field's default and its command-line option; `alone` is the value of the
    option given without one (`--pretrained` means `--pretrained imagenet`); `parse`, its
    argparse type when the field's own type is not enough."""
    return field(default=default, metadata={"help": help, "group": group, "flag": flag,
                                            "choices": choices, "alone": alone, "parse": parse})


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class Parser(argparse.ArgumentParser):
    """argparse that says a mistake on the command line in one line, with where to read
    more, instead of the whole usage block above it. `help_command`: that place, where it
    is not PROG --help (prepare's options reached through dataset.py)."""

    def __init__(self, *args, help_command: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.help_command = help_command
        # argparse reads "-1e-3" as an option (its own pattern knows only "-1" and "-0.5"), so
        # "--lr -1e-3" said "expected one argument" instead of what is wrong with the value.
        # Added to argparse's own pattern, which newer Pythons widen (1_000, complex numbers).
        self._negative_number_matcher = re.compile(
            f"{self._negative_number_matcher.pattern}|{NEGATIVE_NUMBER.pattern}")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see "
                     f"{self.help_command or self.prog + ' --help'})\n" if says_errors() else None)


@dataclass
class Config:
    # --- data ---------------------------------------------------------------------------
    data_dir: str = _opt("data", "folder of the prepared clip data set (made automatically "
                         "with synthetic data when the default folder is empty)", "data",
                         parse=files.folder_name)
    sequence_length: int = _opt(30, "frames per clip seen by the model; when not given, a new "
                                "run takes its data set's clip length", "data")
    image_size: int = _opt(32, "side of the square face crop, in pixels", "data")
    num_workers: int = _opt(0, "DataLoader worker processes; with 0, batches are cut from the "
                            "training split held in memory when it fits in a quarter of the "
                            "free memory (fastest), else loaded in the main process. On a GPU "
                            "the training split goes to GPU memory whenever it fits in a "
                            "quarter of the free GPU memory; workers then serve validation "
                            "only", "data")
    augment: bool = _opt(True, "flip, shift and brightness jitter applied identically to all "
                         "frames of a training clip", "data")
    augment_camera: str = _opt("auto", "with --augment: each training clip also seen through "
                               "its own camera (shrunk and enlarged, blurred, noisy), so that "
                               "the model learns the eyes rather than one camera's look; auto: "
                               "on for data prepared from video, off for the drawn faces",
                               "data", choices=AUTO_YES_NO)
    # --- model (these options define the architecture; a resume must keep them) ----------
    backbone: str = _opt("small", "per-frame CNN", "model", choices=BACKBONES)
    channels: int = _opt(1, "image channels: 1 grayscale, 3 colour; when not given, a new run "
                         "takes its data set's", "model")
    cnn_width: int = _opt(16, "channels of the first conv block of the small CNN "
                          "(doubled in each of its three blocks)", "model")
    feature_dim: int = _opt(64, "size of the per-frame feature vector fed to the LSTM", "model")
    lstm_hidden: int = _opt(64, "LSTM hidden size", "model")
    lstm_layers: int = _opt(1, "stacked LSTM layers", "model")
    dropout: float = _opt(0.3, "dropout before the classifier", "model")
    temporal: str = _opt("lstm", "how frames are combined: 'lstm' (the detector) or 'mean' "
                         "(order-blind mean pooling, a baseline)", "model", choices=TEMPORAL)
    pretrained: str = _opt("none", "start the torchvision backbone from its ImageNet weights "
                           "(torchvision's own file, downloaded once into $TORCH_HOME/hub/"
                           "checkpoints/; offline, docs/pretrained.md says how to bring it); "
                           "--pretrained alone means imagenet", "model", choices=PRETRAINED,
                           alone="imagenet")
    num_classes: int = _opt(2, "output classes (taken from the data set when training starts)",
                            "model", flag="")
    # --- optimisation -------------------------------------------------------------------
    num_epochs: int = _opt(100, "total epochs of the run (on resume: the new total)", "train",
                           flag="--epochs")
    batch_size: int = _opt(32, "clips per optimizer step", "train")
    learning_rate: float = _opt(0.001, "peak learning rate (AdamW), decayed by a cosine "
                                "schedule epoch by epoch toward 1%% of it, reached as the "
                                "last epoch ends", "train", flag="--lr")
    weight_decay: float = _opt(0.0001, "AdamW weight decay", "train")
    grad_clip: float = _opt(1.0, "clip the gradient norm to this (0 disables)", "train")
    freeze_backbone_epochs: int = _opt(0, "train only the new projection, the LSTM and the "
                                       "head for the first N epochs, the backbone's weights "
                                       "and BatchNorm statistics frozen (the usual warm-up "
                                       "with --pretrained)", "train")
    seed: int = _opt(42, "seed of every random choice: same seed, same run", "train")
    # --- run ------------------------------------------------------------------------------
    model_dir: str = _opt("models", "folder of the checkpoints, the log and the curves", "run",
                          parse=files.output_folder)
    save_every: int = _opt(10, "also keep checkpoint_epoch_N.pth every N epochs (0: never)",
                           "run")
    save_every_steps: int = _opt(0, "also refresh latest_model.pth every N optimizer steps "
                                 "inside an epoch (0: only at epoch ends)", "run")
    log_every_steps: int = _opt(10, "TensorBoard's training-loss curve gets a point every N "
                                "optimizer steps (when the tensorboard package is installed)",
                                "run")
    keep_last: int = _opt(0, "keep only the newest N checkpoint_epoch_*.pth backups "
                          "(0: keep all)", "run")
    device: str = _opt("auto", "where to train: auto picks CUDA when present", "run",
                       choices=DEVICES)
    amp: str = _opt("auto", "mixed precision: auto is bf16 on CUDA GPUs that support it "
                    "(else fp16 with a gradient scaler), off on the CPU", "run",
                    choices=AMP_MODES)
    accum_steps: int = _opt(1, "split each batch into this many micro-batches, adding up their "
                            "gradients: the same update with less memory", "run")
    auto_batch: bool = _opt(False, "on CUDA out-of-memory, halve the micro-batch (doubling "
                            "--accum-steps) and retry, keeping the effective batch size", "run")
    compile: bool = _opt(False, "speed the model up with torch.compile (first steps are slow "
                         "while it compiles)", "run")
    channels_last: str = _opt("auto", "lay convolution inputs out as NHWC, which GPU tensor "
                              "cores and the CPU's convolution and pooling kernels want: auto is "
                              "on on the CPU (1.1 to 4.7 times the speed there) and for the "
                              "torchvision backbones with mixed precision on CUDA, off for the "
                              "small CNN on CUDA", "run", choices=AUTO_YES_NO)
    deterministic: str = _opt("auto", "bit-exact runs: the same seed gives the same weights, and "
                              "a stopped run, resumed, ends where an uninterrupted one would. "
                              "Free on the CPU (auto: on); on a GPU it means deterministic "
                              "kernels and no cuDNN autotuning, which costs speed (auto: off; "
                              "docs/performance.md has the cost)", "run", choices=AUTO_YES_NO)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Rebuild from a checkpoint's stored dict; unknown keys (newer versions) are ignored."""
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in values.items() if k in known})
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        positive = ["sequence_length", "image_size", "feature_dim", "lstm_hidden", "lstm_layers",
                    "num_epochs", "batch_size", "cnn_width", "num_classes", "accum_steps",
                    "log_every_steps"]
        for name in positive:
            if getattr(self, name) < 1:
                raise OptionError(f"{flag_of(name)} must be at least 1, "
                                f"got {getattr(self, name)}")
        smallest = MIN_IMAGE_SIZE.get(self.backbone, 1)
        if self.image_size < smallest:
            raise OptionError(f"--image-size {self.image_size} is too small for the {self.backbone} "
                            f"CNN: give at least {smallest}")
        non_negative = ["num_workers", "save_every", "save_every_steps", "keep_last",
                        "weight_decay", "grad_clip", "freeze_backbone_epochs"]
        for name in non_negative:
            if getattr(self, name) < 0:
                raise OptionError(f"{flag_of(name)} cannot be negative")
        if self.image_size > MAX_IMAGE_SIZE:
            raise OptionError(f"--image-size {self.image_size}: give at most {MAX_IMAGE_SIZE} "
                              f"(each frame is resized to it)")
        if not 0 <= self.seed <= MAX_SEED:
            raise OptionError(f"--seed {self.seed}: give a whole number from 0 to {MAX_SEED}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise OptionError(f"{flag_of(f.name)} must be a number, got {value}")
        if not 0 < self.learning_rate <= MAX_LEARNING_RATE:
            raise OptionError(f"--lr must be more than 0 and at most {MAX_LEARNING_RATE:g} "
                              f"(AdamW's useful rates lie near the default, "
                              f"{Config.learning_rate:g}), got {self.learning_rate:g}")
        if not 0 <= self.dropout < 1:
            raise OptionError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.channels not in (1, 3):
            raise OptionError(f"--channels must be 1 (grayscale) or 3 (colour), got {self.channels}")
        if self.pretrained != "none" and self.backbone not in TORCHVISION_BACKBONES:
            raise OptionError(f"--pretrained needs a torchvision backbone (--backbone "
                            f"{' or '.join(TORCHVISION_BACKBONES)}); the {self.backbone} CNN "
                            f"has no published weights")
        if self.accum_steps > self.batch_size:
            raise OptionError(f"--accum-steps {self.accum_steps} is more than the "
                            f"--batch-size {self.batch_size} clips it splits")

    def doubtful_choices(self) -> list[str]:
        """Allowed combinations that are probably a mistake: a warning each, not an error."""
        doubts = []
        if self.freeze_backbone_epochs and self.pretrained == "none":
            doubts.append(f"--freeze-backbone-epochs {self.freeze_backbone_epochs} holds a "
                          f"randomly initialised backbone fixed: it is meant for --pretrained "
                          f"imagenet")
        if self.freeze_backbone_epochs >= self.num_epochs:
            doubts.append(f"--freeze-backbone-epochs {self.freeze_backbone_epochs} is not "
                          f"less than --epochs {self.num_epochs}: the backbone never trains")
        defaults = Config()
        for name in sorted(unused_model_fields(self)):
            if getattr(self, name) != getattr(defaults, name):
                doubts.append(f"{flag_of(name)} {getattr(self, name)} does nothing with "
                              + ("--temporal mean" if name.startswith("lstm") else
                                 f"--backbone {self.backbone} (it sizes the small CNN)"))
        return doubts


MODEL_FIELDS = tuple(f.name for f in fields(Config) if f.metadata["group"] == "model")


def camera_jitter(augment_camera: str, from_video: bool) -> bool:
    """Whether --augment-camera (with --augment) puts each training clip through a camera of
    its own: yes, or auto on data cut from video (the drawn faces have no camera)."""
    return augment_camera == "yes" or (augment_camera == "auto" and from_video)


def unused_model_fields(cfg: Config) -> set[str]:
    """Model options the model of `cfg` does not use: the LSTM's sizes without an LSTM, the
    small CNN's width with another backbone."""
    unused = set()
    if cfg.temporal != "lstm":
        unused |= {"lstm_hidden", "lstm_layers"}
    if cfg.backbone != "small":
        unused.add("cnn_width")
    return unused


def flag_of(name: str) -> str:
    flag = next(f.metadata["flag"] for f in fields(Config) if f.name == name)
    return flag if flag else "--" + name.replace("_", "-")


def shown(value: Any) -> str:
    """An option's value as a user types it: yes/no, auto for None."""
    if value is None:
        return "auto"
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def yes_no(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def add_config_args(parser: argparse.ArgumentParser, helps: dict[str, str] | None = None,
                    unchecked: tuple[str, ...] = ()) -> None:
    """One option per config field. Defaults are None so that the options a user
    actually typed can be told apart (they override a resumed checkpoint's values).
    `helps`: a field's help where a command uses it otherwise (cross-validation's folder);
    `unchecked`: fields taken as typed, their own check left to the command (a folder
    that tools only read need not be writable)."""
    titles = {"data": "data", "model": "model (fixed for the life of a run)",
              "train": "optimisation", "run": "run"}
    groups = {key: parser.add_argument_group(title) for key, title in titles.items()}
    for f in fields(Config):
        if f.metadata["flag"] == "":
            continue
        kind = (f.name not in unchecked and f.metadata["parse"]) or {
            "bool": yes_no, "int": int, "float": float, "str": str}[f.type]
        if f.name in unchecked and f.name.endswith("_dir"):
            kind = files.folder_name  # read only, but '' would read the current folder
        alone = {} if f.metadata["alone"] is None else {"nargs": "?", "const": f.metadata["alone"]}
        yes_or_no = kind is yes_no  # shown as the yes/no it takes, not Python's True/False
        metavar = ("{yes,no}" if yes_or_no else
                   None if f.metadata["choices"] else f.name.upper())
        default = shown(f.default)
        groups[f.metadata["group"]].add_argument(
            flag_of(f.name), dest=f.name, type=kind, default=None,
            choices=f.metadata["choices"], metavar=metavar,
            help=f"{(helps or {}).get(f.name, f.metadata['help'])} (default: {default})",
            **alone)


def fill_defaults(args: argparse.Namespace, **defaults) -> None:
    """Give each option named in `defaults` that was not given (None) its default: for
    options whose parser default is None so that a check can tell whether they were given
    (an option another mode or format would ignore is refused, not dropped)."""
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def given_options(args: argparse.Namespace) -> dict:
    """The config values a user gave on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(Config)
            if getattr(args, f.name, None) is not None}


def build_config(overrides: dict, base: Config | None = None) -> Config:
    values = (base or Config()).to_dict()
    values.update(overrides)
    cfg = Config(**values)
    cfg.validate()
    return cfg


def architecture_diff(a: Config, b: Config) -> list[str]:
    """Model options that differ, as 'flag: a -> b' lines (options neither model uses, such
    as --lstm-layers with --temporal mean, are no difference)."""
    unused = unused_model_fields(a) & unused_model_fields(b)
    return [f"{flag_of(n)}: {getattr(a, n)!r} in the checkpoint, {getattr(b, n)!r} now"
            for n in MODEL_FIELDS if n not in unused and getattr(a, n) != getattr(b, n)]
