"""One trial as data flowing through: Plan -> student -> fine-tune -> artifact -> metrics.

``Workbench`` holds what every trial of a study shares, built once per process: the teacher
(and its copy on the training device), the data, the teacher's cached logits when the data are
small and unaugmented, calibration batches, the validation set every accuracy is measured on,
and the teacher's own artifact (timed beside every student). ``timing`` records how latency is
measured (``autocomp.measure.timing_protocol``), ``data.preprocessing`` how inputs are made.
``rebuild`` is the same path ``export`` takes, so a stored Plan and seed give back the trial's model.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from autocomp._device import to_device
from autocomp.artifact import ArtifactInfo, export
from autocomp.data import Data
from autocomp.errors import TrialFailed, storage_fault
from autocomp.measure import (
    MeasureConfig,
    Metrics,
    TeacherPace,
    eager_latency,
    measure_artifact,
    module_accuracy,
    session_accuracy,
    session_for,
    timing_protocol,
)
from autocomp.models.layers import compute_layers, output_layers
from autocomp.pipeline.compress import apply
from autocomp.pipeline.finetune import ProgressFn, distill_batches, finetune_stream, teacher_logits
from autocomp.pipeline.sanity import chance_accuracy
from autocomp.plan import Plan


@dataclass
class TrialResult:
    plan: Plan
    metrics: Metrics
    artifact: ArtifactInfo
    eager_latency_ms: float  # reference only: the baked student in eager PyTorch
    losses: list[float]
    seconds: dict[str, float] = field(default_factory=dict)
    sha256: str = ""  # of the artifact file the metrics were measured on
    decomposed: dict[str, dict] = field(default_factory=dict)  # per layer: a decomposition's outcome


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Workbench:
    """Example::

        bench = Workbench(teacher, data)
        result = bench.run(plan, "trial.acz")
    """

    def __init__(self, teacher: nn.Module, data: Data, measure: MeasureConfig = MeasureConfig(),
                 device: str = "cpu", workdir: str | Path | None = None, progress: Callable | None = None) -> None:
        self.teacher = teacher.cpu().eval()
        self.data = data
        self.measure = measure
        self.device = device
        self.progress = progress
        self.on_progress: ProgressFn | None = None  # the runner's progress line, fed every fine-tune step
        self._tmp = tempfile.TemporaryDirectory(prefix="autocomp-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)
        self.example = data.example(1)
        self.outputs = output_layers(self.teacher, self.example)
        self.layers = list(compute_layers(self.teacher))
        self._soft_targets: torch.Tensor | None = None
        self._train_teacher: nn.Module | None = None
        self.calibration = data.calibration()
        self.val = data.eval_set()  # measure takes it where it takes a validation array
        labels = data.val.labels()  # chance: always answering the commonest class (balanced if unknown)
        self.chance_accuracy = chance_accuracy(labels[: len(self.val)]) if labels is not None else \
            100.0 / data.num_classes
        teacher_path = Path(self._tmp.name) / "teacher.acz"
        export(apply(self.teacher, Plan(), self.example), self.example, self.calibration, teacher_path)
        self.teacher_session = session_for(teacher_path, measure)  # opened as every trial's artifact is
        self.teacher_path = teacher_path
        # The teacher's fastest median beside a candidate so far: a pair timed while the host ran
        # slower is timed again (``autocomp.measure.latency.TeacherPace``).
        self.pace = TeacherPace()
        # What every latency of this bench is timed on (input, warm-up, rounds): a record to store.
        self.timing: dict = timing_protocol(measure, data.input_shape)
        # Drops are measured artifact to artifact, like every other accuracy.
        self.teacher_accuracy = session_accuracy(self.teacher_session, self.val, progress=progress,
                                                 what="teacher accuracy")

    def baseline_plan(self, name: str, template: Plan) -> Plan:
        """Teacher (no compression, no fine-tune) or a uniform setting on every layer."""
        return Plan.baseline(name, self.layers, template, self.outputs)

    def distill_source(self) -> tuple[nn.Module | None, torch.Tensor | None]:
        """``(teacher on the training device, None)``, or ``(None, cached logits)`` for in-memory,
        unaugmented data (computed on first use: logits once per study)."""
        if self.data.caches_teacher_logits:
            if self._soft_targets is None:
                self._soft_targets = teacher_logits(self.teacher, self.data.train.x, self.device,
                                                    progress=self.progress)
            return None, self._soft_targets
        if self._train_teacher is None:  # a copy on a GPU, so `apply` keeps copying a CPU teacher
            self._train_teacher = self.teacher if self.device == "cpu" else \
                to_device(copy.deepcopy(self.teacher), self.device).eval()
        return self._train_teacher, None

    def finetune(self, student: nn.Module, plan: Plan, steps: int | None = None, seed: int | None = None,
                 deadline: float | None = None, on_step: Callable[[int, nn.Module], None] | None = None
                 ) -> list[float]:
        """KD fine-tune of ``student`` with the Plan's settings (``steps`` overrides its count)."""
        teacher, logits = self.distill_source()
        batches = distill_batches(self.data, plan.distill.batch_size, plan.seed if seed is None else seed,
                                  self.device, teacher, logits)
        try:
            return finetune_stream(student, batches, plan.distill, device=self.device, deadline=deadline, steps=steps,
                                   on_step=on_step, on_progress=self.on_progress)
        finally:
            batches.close()  # stops the DataLoader workers now, not at garbage collection

    def rebuild(self, plan: Plan, steps: int | None = None, deadline: float | None = None,
                on_step: Callable[[int, nn.Module], None] | None = None, notes: dict[str, dict] | None = None,
                ) -> tuple[nn.Module, list[float]]:
        """Teacher + Plan + seed -> fine-tuned student (deterministic on CPU); ``notes`` as ``apply``'s."""
        torch.manual_seed(plan.seed)
        student = apply(self.teacher, plan, self.example, notes)
        losses = self.finetune(student, plan, steps=steps, deadline=deadline, on_step=on_step)
        return student, losses

    def eager_accuracy(self, student: nn.Module, limit: int | None = None) -> float:
        """Top-1 of the training-time module on the first ``limit`` validation samples (early stop only)."""
        return module_accuracy(student, self.data.eval_batches(self.val.batch_size, limit))

    def run(self, plan: Plan, path: str | Path, deadline: float | None = None,
            on_step: Callable[[int, nn.Module], None] | None = None) -> TrialResult:
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        notes: dict[str, dict] = {}
        student, losses = self.rebuild(plan, deadline=deadline, on_step=on_step, notes=notes)
        if notes:  # decompositions are timed apart from the fine-tune (a cached one cost nothing this time)
            seconds["decompose"] = sum(n["seconds"] for n in notes.values() if not n["cached"])
        seconds["finetune"] = time.perf_counter() - t0 - seconds.get("decompose", 0.0)
        t1 = time.perf_counter()
        try:
            info = export(student, self.example, self.calibration, path, plan.quant_mode)
        except TrialFailed:
            raise
        except Exception as exc:  # any exporter/quantizer fault becomes the trial's recorded reason
            # ... except a full or read-only disk: every later trial would fail the same way, so
            # the run ends in one line (StorageFault passes through the trial boundary).
            fault = storage_fault(exc)
            if fault is not None:
                raise fault from exc
            raise TrialFailed(f"export failed: {type(exc).__name__}: {exc}".splitlines()[0][:300]) from exc
        seconds["export"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        metrics = measure_artifact(path, self.val, self.measure, self.teacher_session, self.pace)
        seconds["measure"] = time.perf_counter() - t2
        # A reference number, never an objective: the baked student (export folded masks and
        # fake quantization into plain float weights) run in eager PyTorch.
        t3 = time.perf_counter()
        eager = eager_latency(student, self.data.input_shape, self.measure.batch, self.measure.threads,
                              min_runs=20, min_seconds=0.05)
        seconds["reference"] = time.perf_counter() - t3
        return TrialResult(plan, metrics, info, eager.median_ms, losses, seconds, file_sha256(path), notes)
