"""Where training runs: mixed precision, memory format and batch transfer for CPU or CUDA."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def amp_dtype(device: str) -> torch.dtype | None:
    """Autocast dtype for training on ``device``: None (fp32) on CPU, bf16 or fp16 on CUDA."""
    if not device.startswith("cuda"):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: str) -> contextlib.AbstractContextManager:
    dtype = amp_dtype(device)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def to_device(model: nn.Module, device: str) -> nn.Module:
    """Move a model for training: channels-last on a GPU (faster convs under autocast)."""
    if device.startswith("cuda"):
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def back_to_cpu(model: nn.Module, device: str) -> nn.Module:
    """After training on ``device``: on the CPU, in eval mode, in the default memory format."""
    model.cpu().eval()
    if device.startswith("cuda"):
        model.to(memory_format=torch.contiguous_format)
    return model


def batch_to(x: torch.Tensor, device: str) -> torch.Tensor:
    if device.startswith("cuda"):
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    return x
