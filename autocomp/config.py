"""``SearchConfig``: everything a run needs, from flags or one YAML file (flags override it)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from autocomp.data import AUGMENTS, DataSpec
from autocomp.errors import AutocompError
from autocomp.plan import BASELINES
from autocomp.runtimes import DEFAULT as DEFAULT_RUNTIME
from autocomp.runtimes import PRECISIONS, runtime_names

SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class SearchConfig:
    model: str = "digits_cnn"
    # Keyword arguments for the model's builder (torchvision's or the user's), e.g. image_size=32;
    # from the command line as "KEY=VALUE,..." (values read as YAML: 32, 0.1, true, [224,224]).
    model_kwargs: dict[str, Any] | None = None
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
    weights: str | None = None  # torchvision weights enum name (DEFAULT, IMAGENET1K_V1), from the local cache
    resize: int | None = None  # shorter side before the center crop to image_size
    mean: tuple[float, ...] | None = None  # normalization; else the weights' own, else a training sample's
    std: tuple[float, ...] | None = None
    augment: str | None = None  # none | light | standard; default standard for photo datasets, else none
    workers: int | None = None  # DataLoader worker processes (default: cores - 1, at most 8)

    def __post_init__(self) -> None:
        def need(cond: bool, key: str, problem: str) -> None:
            if not cond:
                raise AutocompError(f"{key}: {problem}")

        object.__setattr__(self, "model_kwargs", check_model_kwargs(self.model_kwargs) or None)

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
        need(self.resize is None or 4 <= self.resize <= 8192, "resize", "must be 4 to 8192")
        need(self.image_size is None or self.resize is None or self.resize >= self.image_size, "resize",
             f"must be >= image_size ({self.image_size}), got {self.resize}")
        need(self.augment is None or self.augment in AUGMENTS, "augment",
             f"must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        need(self.workers is None or 0 <= self.workers <= 256, "workers", f"must be 0 to 256, got {self.workers}")
        need((self.mean is None) == (self.std is None), "mean", "--mean and --std go together")
        if self.mean is not None and self.std is not None:
            need(len(self.mean) == len(self.std) and len(self.mean) in (1, 3), "mean",
                 "--mean and --std need one value per channel (1 or 3 each)")
            need(all(v > 0 for v in self.std), "std", "every value must be > 0")
        need(self.weights is None or re.fullmatch(r"[A-Za-z0-9_.]{1,100}", self.weights) is not None, "weights",
             f"must be a weights name like DEFAULT or IMAGENET1K_V1, got {self.weights!r}")
        need(self.weights is None or not self.checkpoint, "weights", "pass either weights or a checkpoint, not both")
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
        """``--study-name``, or MODEL-DATASET: ``resnet18-mnist``, ``tiny_vit.build-mnist`` for
        ``path/tiny_vit.py:build`` (the file's stem keeps two model files apart)."""
        if self.study_name:
            return self.study_name
        model = self.model
        if model.startswith("torchvision:"):
            model = model.split(":", 1)[1]
        elif ":" in model:
            target, _, attr = model.rpartition(":")
            stem = Path(target).stem if target.endswith(".py") else target.rsplit(".", 1)[-1]
            model = f"{stem}.{attr}"
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
                        self.train_samples, self.val_samples, self.download, self.resize, self.mean, self.std,
                        self.augment, self.workers)

    def identity(self) -> dict[str, Any]:
        """What defines the study: resuming with a different identity is refused."""
        keys = ("model", "checkpoint", "dataset", "image_size", "channels", "train_samples", "val_samples",
                "teacher_epochs", "seed", "batch", "threads", "model_kwargs", "weights", "resize", "mean", "std",
                "augment")
        # model_kwargs is None when not given, which is what a study made before it existed reads.
        out = {k: getattr(self, k) for k in keys}
        # Latencies of two runtimes or precisions never mix in one study. None for the default,
        # which is what a study made before runtimes were selectable reads (it ran ONNX Runtime, fp32).
        out["runtime"] = None if self.runtime == DEFAULT_RUNTIME else self.runtime
        out["precision"] = None if self.precision == "fp32" else self.precision
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["baselines"] = list(self.baselines)
        for key in ("mean", "std"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> SearchConfig:
        """Back from ``to_dict`` (a study's stored config): lists become tuples again."""
        return cls(**{k: tuple(v) if k in ("baselines", "mean", "std") and v is not None else v
                      for k, v in stored.items()})


def parse_numbers(flag: str, text: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> floats, or a one-line error naming the flag."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise AutocompError(f"{flag}: must be comma-separated numbers (one per channel), got {text!r}")
    return values


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """``"image_size=32,input_size=[224,224]"`` -> ``{"image_size": 32, "input_size": [224, 224]}``.

    Values are read as YAML scalars or flow lists; commas inside brackets do not split.
    """
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            if text[start:i].strip():
                items.append(text[start:i].strip())
            start = i + 1
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise AutocompError(f"model_kwargs: {item!r} is not KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw.strip()
        out[key.strip()] = value
    return out


def check_model_kwargs(value: Any) -> dict[str, Any]:
    """A mapping of identifier keys to plain values (numbers, strings, booleans, null, lists)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = parse_model_kwargs(value)
    if not isinstance(value, dict):
        raise AutocompError(f"model_kwargs: must be a mapping or KEY=VALUE,..., got {type(value).__name__}")

    def plain(v: Any) -> bool:
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str))

    for key, v in value.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise AutocompError(f"model_kwargs: {key!r} is not a keyword argument name")
        if not plain(v):
            raise AutocompError(f"model_kwargs: {key}: values are numbers, strings, booleans, null or lists")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}


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
    if expected.startswith("dict"):  # model_kwargs: a mapping, or KEY=VALUE,... as on the command line
        try:
            return check_model_kwargs(value)
        except AutocompError as exc:
            raise AutocompError(f"{path}: {exc}") from None
    if expected.startswith("tuple[float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        try:
            numbers = tuple(float(v) for v in value if not isinstance(v, bool))
        except (TypeError, ValueError):
            numbers = ()
        if not numbers or len(numbers) != len(value):
            raise AutocompError(f"{path}: {key}: must be a list of numbers")
        return numbers
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
