"""One trial as data flowing through: Plan -> student -> fine-tune -> artifact -> metrics.

``Workbench`` holds what every trial of a study shares, built once per process: the teacher,
the data as tensors, the teacher's logits on the training split, calibration batches and the
teacher's own artifact (timed beside every student). ``rebuild`` is the same path ``export``
takes, so a stored Plan and seed give back the trial's model.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from autocomp.artifact import ArtifactInfo, export, open_session
from autocomp.compress import apply
from autocomp.data import DataBundle, calibration_batches
from autocomp.errors import TrialFailed
from autocomp.finetune import finetune, teacher_logits
from autocomp.layers import compute_layers, output_layers
from autocomp.measure import MeasureConfig, Metrics, eager_latency, measure_artifact, session_accuracy
from autocomp.plan import Plan


@dataclass
class TrialResult:
    plan: Plan
    metrics: Metrics
    artifact: ArtifactInfo
    eager_latency_ms: float  # reference only: the baked student in eager PyTorch
    losses: list[float]
    seconds: dict[str, float] = field(default_factory=dict)


class Workbench:
    def __init__(self, teacher: nn.Module, data: DataBundle, measure: MeasureConfig = MeasureConfig(),
                 device: str = "cpu", workdir: str | Path | None = None) -> None:
        self.teacher = teacher.cpu().eval()
        self.data = data
        self.measure = measure
        self.device = device
        self._tmp = tempfile.TemporaryDirectory(prefix="autocomp-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)
        self.example = data.train_x[:1]
        self.outputs = output_layers(self.teacher, self.example)
        self.layers = list(compute_layers(self.teacher))
        self.soft_targets = teacher_logits(self.teacher, data.train_x, device)
        self.calibration = calibration_batches(data)
        self.val_x, self.val_y = data.val_x.numpy(), data.val_y.numpy()
        teacher_path = Path(self._tmp.name) / "teacher.acz"
        export(apply(self.teacher, Plan(), self.example), self.example, self.calibration, teacher_path)
        self.teacher_session = open_session(teacher_path, measure.threads, measure.device, runtime=measure.runtime,
                                            precision=measure.precision, batch=measure.batch)  # as every trial
        self.teacher_path = teacher_path
        # Drops are measured artifact to artifact, like every other accuracy.
        self.teacher_accuracy = session_accuracy(self.teacher_session, self.val_x, self.val_y)

    def baseline_plan(self, name: str, template: Plan) -> Plan:
        """Teacher (no compression, no fine-tune) or a uniform setting on every layer."""
        return Plan.baseline(name, self.layers, template, self.outputs)

    def rebuild(self, plan: Plan, steps: int | None = None, deadline: float | None = None,
                on_step: Callable[[int, nn.Module], None] | None = None) -> tuple[nn.Module, list[float]]:
        """Teacher + Plan + seed -> fine-tuned student (deterministic on CPU)."""
        torch.manual_seed(plan.seed)
        student = apply(self.teacher, plan, self.example)
        losses = finetune(student, self.data.train_x, self.data.train_y, self.soft_targets, plan.distill,
                          seed=plan.seed, device=self.device, deadline=deadline, steps=steps, on_step=on_step)
        return student, losses

    def run(self, plan: Plan, path: str | Path, deadline: float | None = None,
            on_step: Callable[[int, nn.Module], None] | None = None) -> TrialResult:
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        student, losses = self.rebuild(plan, deadline=deadline, on_step=on_step)
        seconds["finetune"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            info = export(student, self.example, self.calibration, path, plan.quant_mode)
        except TrialFailed:
            raise
        except Exception as exc:  # any exporter/quantizer fault becomes the trial's recorded reason
            raise TrialFailed(f"export failed: {type(exc).__name__}: {exc}".splitlines()[0][:300]) from exc
        seconds["export"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        metrics = measure_artifact(path, self.val_x, self.val_y, self.measure, self.teacher_session)
        seconds["measure"] = time.perf_counter() - t2
        # A reference number, never an objective: the baked student (export folded masks and
        # fake quantization into plain float weights) run in eager PyTorch.
        t3 = time.perf_counter()
        eager = eager_latency(student, self.data.input_shape, self.measure.batch, self.measure.threads,
                              min_runs=20, min_seconds=0.05)
        seconds["reference"] = time.perf_counter() - t3
        return TrialResult(plan, metrics, info, eager.median_ms, losses, seconds)

