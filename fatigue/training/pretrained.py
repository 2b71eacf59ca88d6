"""ImageNet weights for the torchvision backbones, through torchvision's own weights API.

torchvision keeps each file under $TORCH_HOME/hub/checkpoints/ (by default
~/.cache/torch/hub/checkpoints/) and downloads it once. Offline, or when the download fails,
the run stops before it writes anything, with one line naming the exact file and the folder
to put it in. The weights are only needed to start a run: the checkpoint holds the trained
weights, so resume, evaluate, detect and export never read the file again.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import textwrap
import urllib.error
import warnings
from pathlib import Path

import torch

from config import Config
from fatigue.errors import UserError
from model import NEW_LAYERS, torchvision_cnn

# torchvision's weights enum per backbone, and the entry used (its ImageNet-1k weights).
WEIGHTS_ENUMS = {"resnet18": "ResNet18_Weights", "mobilenet_v3_small": "MobileNet_V3_Small_Weights"}
WEIGHTS_ENTRY = "IMAGENET1K_V1"


def weights_url(backbone: str) -> str:
    """The URL torchvision downloads the backbone's ImageNet weights from."""
    import torchvision.models  # imported here: only a torchvision backbone needs it
    return getattr(getattr(torchvision.models, WEIGHTS_ENUMS[backbone]), WEIGHTS_ENTRY).url


def weights_file(backbone: str) -> Path:
    """Where torchvision keeps (or looks for) the file: $TORCH_HOME/hub/checkpoints/NAME."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_url(backbone)).name


def fetch(cfg: Config) -> tuple[dict, str]:
    """The backbone's ImageNet state dict (read safely: tensors only) and its file name;
    downloaded by torchvision when missing. Offline, or a file that is damaged or another
    model's: a UserError saying what to do."""
    url, path = weights_url(cfg.backbone), weights_file(cfg.backbone)
    damaged = (f"{path} is damaged or not torchvision's {cfg.backbone} weights file{{}}: delete "
               f"it and run again to download it (or bring the right file over again)")
    if not path.is_file():  # said here: torch's own line came before the error offline
        print(f"downloading torchvision's {cfg.backbone} ImageNet weights into {path.parent}/ "
              f"(once)", flush=True)
    try:
        # torch's 'Downloading: ...' line and its warning about an old pickle protocol are
        # not for our users: each outcome is said in one line here.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            weights = torch.hub.load_state_dict_from_url(url, progress=False,
                                                         map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError):  # EOFError: an empty file (a failed copy)
        raise UserError(damaged.format("")) from None
    except (IndexError, KeyError, ValueError, TypeError, AttributeError) as err:
        # The unpickler's own failures on bytes that are no pickle (random data, text).
        if not path.is_file():
            raise
        raise UserError(damaged.format(f" ({type(err).__name__})")) from None
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        reason = textwrap.shorten(str(getattr(err, "reason", err)).splitlines()[0], 100,
                                  placeholder=" ...")
        if path.is_file():  # there, but torch cannot read it (a truncated copy)
            raise UserError(damaged.format(f" ({reason})")) from None
        raise UserError(
            f"--pretrained needs torchvision's file {path.name} in {path.parent}/ and could not "
            f"download it ({reason}). On a machine with internet access run: python -c \"import "
            f"torchvision; torchvision.models.{cfg.backbone}(weights='{WEIGHTS_ENTRY}')\", then "
            f"copy {path.name} from its ~/.cache/torch/hub/checkpoints/ into {path.parent}/ here "
            f"(or point TORCH_HOME at a folder holding hub/checkpoints/{path.name})") from None
    mismatch = weights_mismatch(weights, cfg.backbone)
    if mismatch:
        raise UserError(damaged.format(f" ({mismatch})"))
    return weights, path.name


def weights_mismatch(weights: object, backbone: str) -> str | None:
    """How `weights` differ from the backbone's ImageNet state dict (None: they fit). The
    classifier, which the model replaces, and BatchNorm's step counters are not compared."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in weights.values()):
        return "it holds no state dict of tensors"

    def compared(state: dict) -> dict:
        return {k: tuple(v.shape) for k, v in state.items()
                if not k.startswith(NEW_LAYERS) and not k.endswith("num_batches_tracked")}
    expected, found = compared(torchvision_cnn(backbone, 3, 8).state_dict()), compared(weights)
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and found[k] != expected[k]]
    for what, keys in (("it lacks", missing), ("it holds layers the model has not:", extra),
                       ("shapes differ for", reshaped)):
        if keys:
            return f"{what} {', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''}"
    return None
