"""ImageNet weights for the torchvision backbones, through torchvision's own weights API.

torchvision keeps each file under $TORCH_HOME/hub/checkpoints/ (by default
~/.cache/torch/hub/checkpoints/) and downloads it once. Offline, or when the download fails,
the run stops before it writes anything, with one line naming the exact file and the folder
to put it in. The weights are only needed to start a run: the checkpoint holds the trained
weights, so resume, evaluate, detect and export never read the file again.
"""
from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import torch

from config import Config
from fatigue.errors import UserError

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
    downloaded by torchvision when missing. Offline: a UserError saying what to do."""
    url, path = weights_url(cfg.backbone), weights_file(cfg.backbone)
    try:
        weights = torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu",
                                                     weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        reason = str(getattr(err, "reason", err)).splitlines()[0][:100]
        raise UserError(
            f"--pretrained needs torchvision's file {path.name} in {path.parent}/ and could not "
            f"download it ({reason}). On a machine with internet access run: python -c \"import "
            f"torchvision; torchvision.models.{cfg.backbone}(weights='{WEIGHTS_ENTRY}')\", then "
            f"copy {path.name} from its ~/.cache/torch/hub/checkpoints/ into {path.parent}/ here "
            f"(or point TORCH_HOME at a folder holding hub/checkpoints/{path.name})") from None
    except pickle.UnpicklingError:
        raise UserError(f"{path} is damaged or not torchvision's weights file: delete it and "
                        f"run again to download it (or bring it over again)") from None
    return weights, path.name
