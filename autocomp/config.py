"""``SearchConfig``: everything a run needs, from flags or one YAML file (flags override it)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from autocomp.data import DataSpec
from autocomp.errors import AutocompError
from autocomp.plan import BASELINES
from autocomp.runtimes import DEFAULT as DEFAULT_RUNTIME
from autocomp.runtimes import PRECISIONS, runtime_names

SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class SearchConfig:
    model: str = "digits_cnn"
    checkpoint: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    channels: int | None = None
    train_samples: int | None = None
    val_samples: int | None = None
    teacher_epochs: int = 30
    space: str = "default"
    n_trials: int = 50
    timeout: float | None = None
    trial_timeout: float | None = None
    sampler: str = "tpe"
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None
    run_dir: str | None = None
    device: str = "cpu"
    batch: int = 1
    threads: int = 1
    runtime: str = "onnxruntime"  # where accuracy and latency are measured: onnxruntime | openvino | tensorrt
    precision: str = "fp32"  # float parts' precision on that runtime: fp32 | bf16 | fp16 (the runtime's reduced)
    baselines: tuple[str, ...] = ("teacher", "int8", "prune50", "channels50")
    keep_artifacts: bool = True
    heartbeat: int = 10
    train_threads: int | None = None  # torch intra-op threads for teacher training and fine-tunes
    allow_empty_space: bool = False  # run a space with no searched dimension on the model (warned)

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, problem: str) -> None:
            if not cond:
                raise AutocompError(f"{key}: {problem}")

        need(self.n_trials >= 0, "n_trials", f"must be >= 0, got {self.n_trials}")
        need(self.timeout is None or self.timeout > 0, "timeout", "must be > 0 seconds")
        need(self.trial_timeout is None or self.trial_timeout > 0, "trial_timeout", "must be > 0 seconds")
        need(self.sampler in SAMPLERS, "sampler", f"must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        need(1 <= self.heartbeat <= 3600, "heartbeat", f"must be 1 to 3600 seconds, got {self.heartbeat}")
        need(self.train_threads is None or 1 <= self.train_threads <= 1024, "train_threads",
             f"must be 1 or more, got {self.train_threads}")
        need(self.batch >= 1, "batch", f"must be >= 1, got {self.batch}")
        need(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        need(self.teacher_epochs >= 0, "teacher_epochs", f"must be >= 0, got {self.teacher_epochs}")
        need(self.image_size is None or 4 <= self.image_size <= 4096, "image_size", "must be 4 to 4096")
        need(self.channels in (None, 1, 3), "channels", f"must be 1 or 3, got {self.channels}")
        need(self.runtime in runtime_names(), "runtime",
             f"must be one of {', '.join(runtime_names())}, got {self.runtime!r}")
        need(self.precision in PRECISIONS, "precision",
             f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        need(self.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", self.device) is not None, "device",
             f"must be cpu or cuda[:N], got {self.device!r}")
        for b in self.baselines:
            need(b in BASELINES, "baselines", f"unknown baseline {b!r} (expected {', '.join(BASELINES)})")
        if self.study_name is not None:
            need(re.fullmatch(r"[A-Za-z0-9._-]{1,100}", self.study_name) is not None, "study_name",
                 "use letters, digits, '.', '_' and '-' (at most 100)")

    @property
    def name(self) -> str:
        if self.study_name:
            return self.study_name
        model = self.model.split(":")[-1] if ":" in self.model else self.model
        model = re.sub(r"[^A-Za-z0-9._-]", "_", Path(model).name)
        data = re.sub(r"[^A-Za-z0-9._-]", "_", Path(self.dataset).name or self.dataset)
        return f"{model}-{data}"

    @property
    def directory(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.directory / 'study.db'}"

    @property
    def data_spec(self) -> DataSpec:
        return DataSpec(self.dataset, self.data_dir, self.image_size, self.channels,
                        self.train_samples, self.val_samples, self.download)

    def identity(self) -> dict[str, Any]:
        """What defines the study: resuming with a different identity is refused."""
        keys = ("model", "checkpoint", "dataset", "image_size", "channels", "train_samples", "val_samples",
                "teacher_epochs", "seed", "batch", "threads")
        out = {k: getattr(self, k) for k in keys}
        # Latencies of two runtimes or precisions never mix in one study. None for the default,
        # which is what a study made before runtimes were selectable reads (it ran ONNX Runtime, fp32).
        out["runtime"] = None if self.runtime == DEFAULT_RUNTIME else self.runtime
        out["precision"] = None if self.precision == "fp32" else self.precision
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["baselines"] = list(self.baselines)
        return d


def read_config_file(path: str) -> dict[str, Any]:
    """Keys of a run file (``experiments/NAME.yaml``), checked against ``SearchConfig``."""
    p = Path(path)
    if not p.is_file():
        raise AutocompError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise AutocompError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise AutocompError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AutocompError(f"{path}: must be a mapping of settings, got {type(data).__name__}")
    known = {f.name: f for f in fields(SearchConfig)}
    out = {}
    for key, value in data.items():
        k = str(key).replace("-", "_")
        if k not in known:
            raise AutocompError(f"{path}: {key}: unknown key (expected one of {', '.join(known)})")
        out[k] = _coerce(path, key, value, known[k].type)
    if "space" in out and isinstance(out["space"], str) and not Path(out["space"]).is_absolute():
        candidate = p.parent / out["space"]
        if candidate.is_file():
            out["space"] = str(candidate)
    return out


def _coerce(path: str, key: str, value: Any, kind: str) -> Any:
    if value is None:
        return None
    expected = str(kind)
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
    }
    if expected.startswith("tuple"):
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AutocompError(f"{path}: {key}: must be a list of names")
        return tuple(value)
    base = expected.split(" |")[0]
    if base in ok and not ok[base](value):
        raise AutocompError(f"{path}: {key}: must be {base}, got {type(value).__name__}")
    return float(value) if base == "float" else value
