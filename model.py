"""FatigueCNNLSTM: a CNN per frame, an LSTM over the frames, a linear head.

Fatigue is temporal (long eye closures, slow blinks, yawns, nods): one frame cannot tell a
blink from a doze, so the per-frame features go through an LSTM whose last state decides.
Every hyperparameter comes from the Config, which each checkpoint stores, so
`build_model(Config.from_dict(ckpt["config"]))` rebuilds any trained model.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from config import Config
from fatigue.errors import NodeError, UserError
from fatigue.resnet import ResNet18


class SpatialMean(nn.Module):
    """Global average pooling as a plain mean over height and width: the same values as
    AdaptiveAvgPool2d(1), whose CUDA backward PyTorch's deterministic mode refuses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((-2, -1), keepdim=True)


def replace_global_pools(net: nn.Module) -> nn.Module:
    """Every AdaptiveAvgPool2d to 1x1 inside `net` (torchvision's heads and
    squeeze-excitation blocks) becomes a SpatialMean; no weights change."""
    for name, child in net.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
            setattr(net, name, SpatialMean())
        else:
            replace_global_pools(child)
    return net


def small_cnn(channels: int, width: int, feature_dim: int) -> nn.Module:
    """Three conv blocks (width, 2*width, 4*width), global average pool, projection.
    Small enough to train on a laptop CPU in minutes."""
    layers, c_in = [], channels
    for c_out in (width, 2 * width, 4 * width):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in = c_out
    layers += [SpatialMean(), nn.Flatten(), nn.Linear(c_in, feature_dim),
               nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def torchvision_cnn(name: str, channels: int, feature_dim: int) -> nn.Module:
    """A torchvision backbone with random weights (nothing is downloaded), its first
    convolution adapted to the channel count and its classifier replaced by a projection.
    resnet18 is fatigue.resnet's copy of torchvision's: importing torchvision loads
    PyTorch's compiler (seconds of every start)."""
    if name == "resnet18":
        net = ResNet18()
        if channels != 3:
            net.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
        net.fc = nn.Sequential(nn.Linear(net.fc.in_features, feature_dim), nn.ReLU(inplace=True))
        return replace_global_pools(net)
    if name == "mobilenet_v3_small":
        import torchvision  # imported here: it costs seconds at start-up, and is rarely used
        net = torchvision.models.mobilenet_v3_small(weights=None)
        if channels != 3:
            first = net.features[0][0]
            net.features[0][0] = nn.Conv2d(channels, first.out_channels, 3, stride=2, padding=1,
                                           bias=False)
        net.classifier = nn.Sequential(nn.Linear(576, feature_dim), nn.ReLU(inplace=True))
        return replace_global_pools(net)
    raise ValueError(f"unknown backbone {name!r}")


# The torchvision backbones' layers that replace ImageNet's classifier: new, so never frozen.
NEW_LAYERS = ("fc.", "classifier.")
# The input statistics torchvision's ImageNet weights were trained with (RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_statistics(cfg: Config) -> tuple[list[float], list[float]] | None:
    """Per-channel (mean, std) that pretrained weights expect of their input, or None: then
    pixels are only centred. Grayscale takes the mean of the RGB values, as the first
    convolution's filters are summed over RGB (adapt_pretrained)."""
    if cfg.pretrained == "none":
        return None
    if cfg.channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3]


def adapt_pretrained(weights: dict, net: nn.Module, channels: int) -> dict:
    """torchvision's ImageNet state dict made to fit `net` (a torchvision_cnn): the first
    convolution's RGB filters summed into one for grayscale (a gray pixel then gives what the
    RGB network gave for that gray), the ImageNet classifier left out (replaced)."""
    own = net.state_dict()
    adapted = {}
    for key, value in weights.items():
        if key not in own or key.startswith(NEW_LAYERS):
            continue
        if value.dim() == 4 and value.shape[1] == 3 and own[key].shape[1] == channels == 1:
            value = value.sum(dim=1, keepdim=True)
        adapted[key] = value
    return adapted


class FatigueCNNLSTM(nn.Module):
    """Input: clips [B, T, C, H, W] in [0, 1]. Output: class logits [B, num_classes]."""

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.backbone == "small":
            self.cnn = small_cnn(cfg.channels, cfg.cnn_width, cfg.feature_dim)
        else:
            self.cnn = torchvision_cnn(cfg.backbone, cfg.channels, cfg.feature_dim)
        self.temporal = cfg.temporal
        if self.temporal == "lstm":
            self.lstm = nn.LSTM(cfg.feature_dim, cfg.lstm_hidden, num_layers=cfg.lstm_layers,
                                batch_first=True)
            head_in = cfg.lstm_hidden
        else:
            head_in = cfg.feature_dim
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(head_in, cfg.num_classes)
        self.channels_last = False  # see place()
        stats = input_statistics(cfg)
        # Constants of the config, not weights: kept out of the state dict.
        self.register_buffer("input_mean", None if stats is None else
                             torch.tensor(stats[0]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", None if stats is None else
                             torch.tensor(stats[1]).view(1, -1, 1, 1), persistent=False)

    def load_pretrained(self, weights: dict, channels: int) -> None:
        """Start the backbone from torchvision's weights (see adapt_pretrained); every
        backbone weight must be found there."""
        adapted = adapt_pretrained(weights, self.cnn, channels)
        missing = [k for k in self.cnn.state_dict()
                   if k not in adapted and not k.startswith(NEW_LAYERS)]
        if missing:
            raise ValueError(f"the pretrained weights lack {', '.join(missing[:3])}")
        self.cnn.load_state_dict(adapted, strict=False)

    def train_mode(self, freeze_backbone: bool = False) -> "FatigueCNNLSTM":
        """Training mode; with `freeze_backbone`, the CNN's weights (but for the projection
        that replaced ImageNet's classifier) get no gradients and its BatchNorm statistics
        stay as they are (its layers run as in evaluation)."""
        self.train()
        for name, param in self.cnn.named_parameters():
            param.requires_grad_(not freeze_backbone or name.startswith(NEW_LAYERS))
        if freeze_backbone:
            self.cnn.eval()
        return self

    def place(self, device: torch.device, cfg: Config) -> "FatigueCNNLSTM":
        """Move to `device` for training, NHWC where --channels-last says so. The weights'
        values are the same either way, and checkpoints are saved in the plain layout."""
        self.to(device)
        self.channels_last = uses_channels_last(cfg, device)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        return self

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        return self.classify(self.frame_features(clips.flatten(0, 1)).view(b, t, -1))

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [N, C, H, W] in [0, 1] -> features [N, F], each frame on its own (a live
        detector computes each frame's once, not once per window that holds it)."""
        # The data stays in [0, 1] (uint8 / 255) up to here: centred, or normalised as the
        # pretrained weights expect.
        if self.input_mean is None:
            frames = frames - 0.5
        else:
            frames = (frames - self.input_mean) / self.input_std
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        return self.cnn(frames)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Frame features in order [B, T, F] -> class logits [B, num_classes]."""
        if self.temporal == "lstm":
            outputs, _ = self.lstm(feats)  # (B, T, H)
            # The strongest evidence anywhere in the clip: a long closure early in the clip
            # counts as much as one at its end (the last state alone learns much slower).
            summary = outputs.max(dim=1).values
        else:
            summary = feats.mean(dim=1)  # order-blind baseline
        return self.head(self.dropout(summary))


def build_model(cfg: Config) -> FatigueCNNLSTM:
    return FatigueCNNLSTM(cfg)


def uses_channels_last(cfg: Config, device: torch.device) -> bool:
    if cfg.channels_last != "auto":
        return cfg.channels_last == "yes"
    # The CPU's convolution and pooling kernels (oneDNN) run NHWC far faster: on 2 cores,
    # 1.6 times the small CNN's training speed, 1.09 times resnet18's and 4.7 times
    # mobilenet_v3_small's (docs/performance.md). Tensor cores read NHWC; the small CNN's
    # first layer has one channel and its GPU steps are launch-bound, so there the extra
    # layout copy would cost more than it saves.
    if device.type == "cpu":
        return True
    return (device.type == "cuda" and cfg.backbone != "small"
            and autocast_dtype(cfg.amp, device) is not None)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NodeError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; "
                        "use --device cpu (or auto)")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype, or None for full precision.

    'auto' means bf16 on CUDA GPUs that support it (fp16 on older ones) and full precision
    on the CPU, where mixed precision rarely pays; 'bf16' and 'fp16' are honoured anywhere."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
