"""Top-1 accuracy of an artifact in its deploy runtime (or of a module, for reference).

Both stream: they take arrays/tensors ``(x, y)``, or ``x`` an iterable of ``(x, y)`` batches
(``autocomp.data.EvalSet``, a loader) with ``y=None``, so a validation split of any size is
never held at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn


def _batches(x, y, batch_size: int) -> Iterable[tuple]:  # noqa: ANN001
    if y is None:
        return x
    return ((x[s : s + batch_size], y[s : s + batch_size]) for s in range(0, len(x), batch_size))


def session_accuracy(session, x, y=None, batch_size: int = 256, progress: Callable | None = None,  # noqa: ANN001
                     what: str = "accuracy") -> float:
    """Top-1 accuracy in percent of an ONNX Runtime session over ``(x, y)`` or batches ``x``.

    Example::

        acc = session_accuracy(open_session("m.acz"), data.eval_set())
    """
    task = progress(what, len(x)) if progress and hasattr(x, "__len__") else None
    correct = total = 0
    for xb, yb in _batches(x, y, batch_size):
        logits = session.run(None, {"input": np.ascontiguousarray(xb, dtype=np.float32)})[0]
        correct += int((logits.argmax(axis=1) == np.asarray(yb)).sum())
        total += len(yb)
        if task:
            task.update(len(yb))
    if task:
        task.close()
    return 100.0 * correct / max(1, total)


@torch.no_grad()
def module_accuracy(model: nn.Module, x, y: torch.Tensor | None = None, batch_size: int = 256) -> float:  # noqa: ANN001
    """Top-1 accuracy in percent of an eager PyTorch module (used for early stopping only)."""
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for xb, yb in _batches(x, y, batch_size):
        logits = model(xb.to(device))
        correct += int((logits.argmax(1).cpu() == yb).sum())
        total += len(yb)
    return 100.0 * correct / max(1, total)
