"""Device resolution: 'cpu', 'cuda' (or 'cuda:N') or 'auto' (CUDA when present).

An unusable device is a configuration error (`ValueError`, one line naming the device and what
is available), raised before anything is built or written.
"""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device '{name}' is not a device name (expected cpu, cuda, cuda:N or auto)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device '{name}' was asked for but no CUDA device is available on this machine; "
                "use device=cpu, or device=auto to take a GPU only when there is one"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device '{name}' does not exist: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device
