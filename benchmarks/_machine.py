"""What the benchmarks record about the machine they ran on."""

from __future__ import annotations

import torch

from geomxai.study._study import cpu_name


def hardware_name(device: torch.device | None = None) -> str:
    """The GPU's name for a CUDA device, else the CPU's model name."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()
