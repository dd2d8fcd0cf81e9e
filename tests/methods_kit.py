"""Helpers for the method tests (a helper module with a unique name, not a conftest).

Tiny models with known shapes, torchvision classifiers at 3x32x32 with real BatchNorm
statistics, and an export round trip that returns the numbers the artifact really holds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from tiny_models import TinyResidual, tiny_cnn, tiny_mlp
from torch import nn

from autocomp.artifact import ArtifactInfo, export, load_model, open_session
from autocomp.measure import graph_macs, graph_params

IMAGE = (3, 32, 32)


Residual = TinyResidual
cnn = tiny_cnn
mlp = tiny_mlp


def seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build().eval()
    for m in model.modules():  # non-trivial BatchNorm, so folding and coupling are exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model


_TV_CACHE: dict[str, nn.Module] = {}


def torchvision_model(name: str) -> nn.Module:
    """A random-init torchvision classifier (10 classes) whose BatchNorm statistics are set.

    Right after init the running statistics are 0/1 and deep nets give ~1e-20 logits; one pass
    in train mode over noise gives them real statistics, so outputs are O(1) and closeness
    checks mean something. Built once per process; callers get a deep copy.
    """
    if name not in _TV_CACHE:
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, num_classes=10)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # cumulative average over the calibration pass
        model.train()
        with torch.no_grad():
            model(torch.randn(8, *IMAGE, generator=torch.Generator().manual_seed(1)))
        _TV_CACHE[name] = model.eval()
    return copy.deepcopy(_TV_CACHE[name])


@dataclass
class Exported:
    info: ArtifactInfo
    proto: onnx.ModelProto
    params: int
    nonzero: int
    macs: int
    session: object

    @property
    def bytes(self) -> int:
        return self.info.bytes

    def run(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        a = x.numpy() if isinstance(x, torch.Tensor) else x
        return self.session.run(None, {"input": a.astype(np.float32)})[0]

    def weights(self) -> dict[str, np.ndarray]:
        return {i.name: onnx.numpy_helper.to_array(i) for i in self.proto.graph.initializer}


def export_student(student: nn.Module, x: torch.Tensor, path: Path, mode: str = "qat") -> Exported:
    """Export (bakes the student in place), load the artifact back, count what it holds."""
    info = export(student, x[:1], [x.numpy()], path, mode)
    proto = load_model(path)
    params, nonzero = graph_params(proto)
    return Exported(info, proto, params, nonzero, graph_macs(proto), open_session(path))
