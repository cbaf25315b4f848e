"""The paper's networks (section 5, "Network architectures"), shared by every method.

Encoder: L conv layers (4x4 kernels, stride 2, padding 1, ReLU), then two fully connected layers:
flatten -> h (ReLU) -> out. Decoder: two fully connected layers z -> h (ReLU) -> C*s*s (ReLU),
then L transposed conv layers (4x4, stride 2) back to the image; its output is unconstrained
(a Gaussian mean or Bernoulli logits). A sigmoid on the Gaussian mean is deliberately absent:
with sigma_x = 0.1 it left the decoder stuck at the mean image.

Channel widths are the one place they are chosen: conv layer i has CHANNELS[i] channels
(32, 64, 128 for L=3; 32, 64, 128, 256 for L=4 / CelebA). The paper does not state them.

`NetConfig.network = "fc"` swaps in fully connected networks (the "FC" rows of the paper's
Table 4): encoder flatten -> h -> h (ReLU each) -> out, decoder z -> h -> h (ReLU each) -> C*H*W.
This is the MLP of VLAE's reference code (yookoon/VLAE network.py: BaseEncoder / BaseDecoder,
h = 500), whose FC binary MNIST numbers the paper's Table 4 lists. As for the conv networks, the
trunk (everything but the last layer) has h outputs. Plugins build their networks only through
`make_trunk`, `Encoder`, `GaussianEncoder` and `make_decoder`, so every plugin runs on either kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .metadata import NETWORKS

CHANNELS = (32, 64, 128, 256)
KERNEL = 4


@dataclass(frozen=True)
class NetConfig:
    """Everything that sizes the networks: image shape (C, H, W), conv depth L, hidden size h and
    the kind of network ("cnn": the paper's conv networks; "fc": MLPs, num_conv unused)."""

    image_shape: tuple[int, int, int]
    num_conv: int = 3
    hidden: int = 256
    network: str = "cnn"

    def __post_init__(self):
        if self.network not in NETWORKS:
            raise ValueError(f"unknown network {self.network!r}; choose one of {', '.join(NETWORKS)}")

    @property
    def pixels(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    @property
    def channels(self) -> tuple[int, ...]:
        return CHANNELS[: self.num_conv]

    def spatial_sizes(self) -> list[int]:
        """Feature map side after each conv layer, input first: 28 -> [28, 14, 7, 3]."""
        sizes = [self.image_shape[1]]
        for _ in range(self.num_conv):
            sizes.append((sizes[-1] + 2 - KERNEL) // 2 + 1)
        return sizes

    @property
    def flat_features(self) -> int:
        return self.channels[-1] * self.spatial_sizes()[-1] ** 2


class ConvTrunk(nn.Module):
    """L conv layers and the first fully connected layer: x -> R^h (the paper's psi networks)."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = cfg.image_shape[0]
        for ch in cfg.channels:
            layers += [nn.Conv2d(in_ch, ch, KERNEL, stride=2, padding=1), nn.ReLU()]
            in_ch = ch
        layers += [nn.Flatten(), nn.Linear(cfg.flat_features, cfg.hidden), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_features = cfg.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPTrunk(nn.Module):
    """The FC encoder minus its last layer: flatten -> h (ReLU) -> h (ReLU)."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cfg.pixels, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
        )
        self.out_features = cfg.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_trunk(cfg: NetConfig) -> nn.Module:
    """The encoder minus its last layer, x -> R^h, of the configured kind."""
    return MLPTrunk(cfg) if cfg.network == "fc" else ConvTrunk(cfg)


class Encoder(nn.Module):
    """The trunk followed by the last fully connected layer h -> out_features."""

    def __init__(self, cfg: NetConfig, out_features: int):
        super().__init__()
        self.trunk = make_trunk(cfg)
        self.head = nn.Linear(cfg.hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class ConvDecoder(nn.Module):
    """z -> image-shaped output (Gaussian mean or Bernoulli logits), mirroring the conv encoder."""

    def __init__(self, cfg: NetConfig, latent_dim: int):
        super().__init__()
        sizes = cfg.spatial_sizes()
        chans = cfg.channels
        self._start = (chans[-1], sizes[-1], sizes[-1])
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.flat_features),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        out_chans = list(chans[:-1][::-1]) + [cfg.image_shape[0]]
        in_ch = chans[-1]
        for i, out_ch in enumerate(out_chans):
            s_in, s_out = sizes[-1 - i], sizes[-2 - i]
            # stride-2 transposed conv doubles the side; output_padding restores odd sides (3 -> 7)
            layers.append(
                nn.ConvTranspose2d(
                    in_ch, out_ch, KERNEL, stride=2, padding=1, output_padding=s_out - 2 * s_in
                )
            )
            if i < len(out_chans) - 1:
                layers.append(nn.ReLU())
            in_ch = out_ch
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, *self._start)
        out = self.deconv(h)
        return out.reshape(*lead, *out.shape[1:])


class MLPDecoder(nn.Module):
    """z -> h (ReLU) -> h (ReLU) -> C*H*W, reshaped to the image (mean or logits, unconstrained)."""

    def __init__(self, cfg: NetConfig, latent_dim: int):
        super().__init__()
        self._shape = tuple(cfg.image_shape)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.pixels),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(*z.shape[:-1], *self._shape)


def make_decoder(cfg: NetConfig, latent_dim: int) -> nn.Module:
    """The decoder p(x|z)'s network of the configured kind."""
    return MLPDecoder(cfg, latent_dim) if cfg.network == "fc" else ConvDecoder(cfg, latent_dim)


MIN_STD = 1e-5


class GaussianEncoder(nn.Module):
    """x -> (mean, std) of a diagonal Gaussian q(z|x): the VAE encoder, b(x) and c(x) in the paper.

    std = softplus(raw) + MIN_STD keeps it positive without exp's overflow. `features` is the
    trunk's h-dimensional output, which HF and IAF use as their context.
    """

    def __init__(self, cfg: NetConfig, latent_dim: int):
        super().__init__()
        self.trunk = make_trunk(cfg)
        self.head = nn.Linear(cfg.hidden, 2 * latent_dim)

    def forward_with_features(self, x: torch.Tensor):
        h = self.trunk(x)
        mean, raw = self.head(h).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw) + MIN_STD, h

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std, _ = self.forward_with_features(x)
        return mean, std
