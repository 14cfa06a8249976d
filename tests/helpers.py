"""Shared test helpers: randomised weights, small architectures, commands a test interrupts."""

import signal

import torch

from stdd_fast.config import ArchConfig


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (LayerNorm gains near 1, nonzero biases).

    open_clip's init leaves biases at 0 and LayerNorm at identity, which would hide bugs that drop
    a bias or a gain.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("logit_scale"):
                p.copy_(torch.tensor(4.6) + 0.1 * noise)
            elif "ln_" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif p.ndim <= 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)
    return model


def small_arch(grid: int, width: int = 64, layers: int = 2, heads: int = 4, name: str = "") -> ArchConfig:
    """A small CLIP ViT with a grid x grid patch grid (patch 4)."""
    return ArchConfig(
        name=name or f"test-grid{grid}",
        embed_dim=32,
        image_size=4 * grid,
        patch_size=4,
        vision_width=width,
        vision_layers=layers,
        vision_heads=heads,
        text_width=32,
        text_heads=2,
        text_layers=1,
    )


def report(name: str, value: float) -> float:
    """Print a measured error (every comparison shows its figure) and return it."""
    print(f"[measured] {name}: {value:.3e}")
    return value


def interruptible() -> None:
    """``preexec_fn`` of a command a test interrupts with SIGINT, as Ctrl-C in a terminal would: the default
    disposition. A shell without job control starts background jobs with SIGINT ignored, children inherit that,
    and Python then installs no KeyboardInterrupt handler (rightly: an ignored SIGINT stays ignored), so
    the test would measure how pytest was launched instead of the command."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
