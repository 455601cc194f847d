"""Device resolution: 'cpu', 'cuda' or 'auto' (CUDA when present)."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{name}' was asked for but no CUDA device is available")
    return torch.device(name)
