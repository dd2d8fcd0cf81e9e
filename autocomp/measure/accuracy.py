"""Top-1 accuracy of an artifact in its deploy runtime (or of a module, for reference)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def session_accuracy(session, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:  # noqa: ANN001
    """Top-1 accuracy in percent of an ONNX Runtime session over ``(x, y)``."""
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = session.run(None, {"input": x[start : start + batch_size]})[0]
        correct += int((logits.argmax(axis=1) == y[start : start + batch_size]).sum())
    return 100.0 * correct / max(1, len(x))


@torch.no_grad()
def module_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent of an eager PyTorch module (used for early stopping only)."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == y[start : start + batch_size]).sum())
    return 100.0 * correct / max(1, len(x))
