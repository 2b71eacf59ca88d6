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
from fatigue.errors import UserError


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
    convolution adapted to the channel count and its classifier replaced by a projection."""
    import torchvision  # imported here: it costs a second at start-up, and is rarely used
    if name == "resnet18":
        net = torchvision.models.resnet18(weights=None)
        if channels != 3:
            net.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
        net.fc = nn.Sequential(nn.Linear(net.fc.in_features, feature_dim), nn.ReLU(inplace=True))
        return replace_global_pools(net)
    if name == "mobilenet_v3_small":
        net = torchvision.models.mobilenet_v3_small(weights=None)
        if channels != 3:
            first = net.features[0][0]
            net.features[0][0] = nn.Conv2d(channels, first.out_channels, 3, stride=2, padding=1,
                                           bias=False)
        net.classifier = nn.Sequential(nn.Linear(576, feature_dim), nn.ReLU(inplace=True))
        return replace_global_pools(net)
    raise ValueError(f"unknown backbone {name!r}")


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
        # Centre pixel values: the data stays in [0, 1] (uint8 / 255) up to here.
        frames = clips.flatten(0, 1) - 0.5
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        feats = self.cnn(frames).view(b, t, -1)  # (B, T, F)
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
    # Tensor cores read NHWC; the small CNN's first layer has one channel and its steps
    # are launch-bound, so the extra layout copy would cost more than it saves.
    return (device.type == "cuda" and cfg.backbone != "small"
            and autocast_dtype(cfg.amp, device) is not None)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; "
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
