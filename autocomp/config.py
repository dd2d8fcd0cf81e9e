"""``SearchConfig``: everything a run needs, from flags or one YAML file (flags override it).

This dataclass is the one list of settings. Each field carries its group (``GROUPS``: model,
data, measurement, study) and its help text in ``field(metadata=...)``; the ``autocomp search``
flags are generated from the fields (``autocomp.cli.search``), grouped the same way in
``--help``, so a setting cannot exist in one place and be missing in another.

Grouping is by metadata, not by nesting (``config.data.dataset``), because the fields stay
flat everywhere they are read: dozens of call sites use ``config.seed``, a study stores its
config as one flat mapping (``to_dict``, read back by ``from_dict``, also for older studies),
and run files (``experiments/*.yaml``) and flags name settings flatly. The measurement
settings are also handed on whole, as ``SearchConfig.measure`` (a ``MeasureConfig``).

Only light modules are imported at the top: the command line builds its flags from this
module, and ``autocomp --help`` must not wait for torch (``autocomp.data``, ``autocomp.plan``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from autocomp.errors import AutocompError
from autocomp.model_kwargs import check_model_kwargs, parse_model_kwargs  # noqa: F401 - config.NAME too

if TYPE_CHECKING:
    from autocomp.data import DataSpec
    from autocomp.measure.protocol import MeasureConfig

SAMPLERS = ("tpe", "nsga2", "random")

# Group -> what its settings decide; the order of ``autocomp search --help``.
GROUPS = {
    "model": "the network to compress, and how its teacher and fine-tunes train",
    "data": "the dataset, its split and preprocessing",
    "measurement": "where and how each artifact's accuracy and latency are measured",
    "study": "the search: space, trials, sampler, storage, what is kept",
}


def setting(group: str, default: Any, text: str, flag: str | None = None) -> Any:
    """A ``SearchConfig`` field: its default, group and help (the help of its command-line flag).

    ``flag`` names the flag when it is not ``--NAME``: a switch whose default is True is
    turned off by ``--no-NAME``, and its help says what that flag does.
    """
    meta = {"group": group, "help": text, **({"flag": flag} if flag else {})}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SearchConfig:
    # --- model: the network, and how its teacher and fine-tunes train
    model: str = setting(
        "model", "digits_cnn",
        "digits_cnn (default) | lenet5 | lenet300 | torchvision:NAME | module:callable | file.py:callable")
    # Values read as YAML (32, 0.1, true, [224,224]); from the command line as "KEY=VALUE,...".
    model_kwargs: dict[str, Any] | None = setting(
        "model", None, "KEY=VALUE,... passed to the model's builder, values read as YAML "
        "(e.g. image_size=32 for torchvision:vit_b_16 on 32-px inputs)")
    checkpoint: str | None = setting(
        "model", None,
        "state dict for the model (loaded with weights_only=True); without it the teacher is trained and cached")
    weights: str | None = setting(
        "model", None, "torchvision weights of a torchvision:NAME model (DEFAULT, IMAGENET1K_V1 ...), read from "
        "the local torch hub cache ($TORCH_HOME/hub/checkpoints), never downloaded; sets the preprocessing too")
    teacher_epochs: int = setting(
        "model", 30, "epochs to train the teacher when no checkpoint is given (default 30)")
    device: str = setting(
        "model", "cpu", "cpu (default) or cuda[:N] for fine-tuning; accuracy and latency are measured on --runtime")
    train_threads: int | None = setting(
        "model", None, "torch threads for teacher training and fine-tunes (default: torch's choice); "
        "1 is fastest on a busy machine")
    # --- data: the dataset, its split and preprocessing
    dataset: str = setting(
        "data", "digits",
        "digits (default; builtin, offline) | mnist | cifar10 | torchvision:NAME | ImageFolder dir | module:callable")
    data_dir: str | None = setting("data", None, "root directory of a torchvision dataset")
    download: bool = setting("data", False, "allow torchvision to download the dataset")
    image_size: int | None = setting(
        "data", None, "model input SIZE x SIZE: resize (shorter side) + center crop to SIZE; required for image "
        "folders of mixed sizes (default with --weights: the weights' own, e.g. 224)")
    resize: int | None = setting(
        "data", None,
        "resize the shorter side to this before the center crop (default: SIZE, or SIZE*256/224 with --weights)")
    mean: tuple[float, ...] | None = setting(
        "data", None, "normalization mean per channel, e.g. 0.485,0.456,0.406 (default: the weights' own with "
        "--weights, else computed from a sample of training images)")
    std: tuple[float, ...] | None = setting(
        "data", None, "normalization std per channel, e.g. 0.229,0.224,0.225 (with --mean)")
    augment: str | None = setting(
        "data", None, "fine-tune augmentation: none | light (random-resized crop 35-100% + flip) | standard "
        "(8-100% + flip); default standard for photo datasets (image folders, CIFAR), none otherwise")
    workers: int | None = setting(
        "data", None, "DataLoader worker processes that read and preprocess streamed images (default: cores - 1, "
        "at most 8; 0 = in the main process)")
    channels: int | None = setting("data", None, "convert images to 1 or 3 channels")
    train_samples: int | None = setting("data", None, "use at most N training samples (a seeded subset)")
    val_samples: int | None = setting(
        "data", None, "rank trials on a fixed seeded subset of N validation samples; `autocomp export` "
        "re-measures on the whole validation split")
    # --- measurement: where and how accuracy and latency are measured (``measure`` hands them on)
    runtime: str = setting(
        "measurement", "onnxruntime", "where each trial's accuracy and latency are measured: onnxruntime "
        "(default, CPU), openvino (CPU; pip install -e \".[openvino]\"), tensorrt (NVIDIA GPU; "
        "pip install -e \".[tensorrt]\")")
    precision: str = setting(
        "measurement", "fp32", "float parts on the runtime: fp32 (default, also where the runtime would pick "
        "less), or the runtime's reduced bf16 | fp16; int8 layers run int8 either way")
    batch: int = setting("measurement", 1, "batch size of the latency measurement (default 1)")
    threads: int = setting("measurement", 1, "the runtime's intra-op threads for latency (default 1)")
    measure_on: str | None = setting("measurement", None, "time latency on this device: ssh://[user@]host[:port] "
                                     "(docs/devices.md; accuracy stays measured here, on the same bytes)")
    device_accuracy: bool = setting("measurement", False, "run the validation pass on the --measure-on device "
                                    "too, for runtimes whose numerics differ there (one SSH call per 256 "
                                    "images)", flag="--device-accuracy")
    # --- study: the search itself
    space: str = setting(
        "study", "default",
        "search space: a shipped name (see `autocomp spaces list`) or a YAML file (default: default)")
    n_trials: int = setting(
        "study", 50, "trials to add in this run (default 50); running again adds more to the same study")
    timeout: float | None = setting(
        "study", None, "the profile, the seeded plans, the search and the promotions end within this many "
        "seconds (a trial starts only when it is expected to finish before)")
    trial_timeout: float | None = setting("study", None, "fail a trial that runs longer than this many seconds")
    sampler: str = setting("study", "tpe", "tpe (default) | nsga2 | random")
    profile: bool = setting(
        "study", True, "no per-layer profile: no seeded plans and no space shaping, the sampler starts from "
        "random samples (a new study only)", flag="--no-profile")
    seeds: int = setting(
        "study", 8, "plans the profile's integer program seeds the study with, half under byte budgets and half "
        "under latency budgets, run after the baselines, and one more for each hand-picked baseline a checked plan "
        "beats on bytes and time (default 8; 0 = none)")
    promote: float = setting(
        "study", 0.2, "share of the trials that re-run the Pareto front's points with a longer fine-tune on the "
        "same Plan, so the front holds the accuracies export gives; with --timeout, the share of the trials' time "
        "kept for them, at least one (default 0.2; 0 = none)")
    promote_factor: int = setting(
        "study", 4, "a promoted re-run fine-tunes this many times the Plan's steps; from 2,400 steps on, its "
        "sparsity ramped and the searched KD settings temperature 2, alpha 0.9 (default 4)")
    seed: int = setting("study", 0, "seed for the teacher, fine-tunes and sampler (default 0)")
    baselines: tuple[str, ...] = setting(
        "study", ("teacher", "int8", "prune50", "channels50"), "comma list of fixed trials enqueued in a new "
        "study: teacher,int8,int4,prune50,prune90,svd50,channels50 (default teacher,int8,prune50,channels50)")
    storage: str | None = setting(
        "study", None, "Optuna storage URL (default sqlite:///RUN_DIR/study.db); postgresql://... or journal:FILE")
    study_name: str | None = setting(
        "study", None, "study name (default MODEL-DATASET, e.g. resnet18-mnist or my_vit.build-mnist for "
        "my_vit.py:build); the same name resumes the same study")
    run_dir: str | None = setting(
        "study", None, "where the report, trials table and artifacts go (default runs/STUDY_NAME)")
    keep_artifacts: bool = setting(
        "study", True, "do not keep each trial's artifact in RUN_DIR/artifacts", flag="--no-keep-artifacts")
    heartbeat: int = setting(
        "study", 10, "seconds between a running trial's heartbeats; a trial silent for 3x this is failed "
        "and retried by the next run (default 10)")
    overwrite: bool = setting(
        "study", False, "write into a --run-dir holding a report.html, trials.csv, trials.parquet, autocomp.log or "
        "artifacts/ that autocomp did not write (they are replaced); refused otherwise")
    allow_empty_space: bool = setting(
        "study", False, "run even when the space searches no dimension of the model (refused otherwise, warned)")

    def __post_init__(self) -> None:
        # Here, not at the top: these pull in torch, and the command line reads this module for --help.
        from autocomp.data import AUGMENTS
        from autocomp.plan import BASELINES
        from autocomp.runtimes import PRECISIONS, runtime_names

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
        if self.measure_on is not None:  # refused in one line: not ssh://, a password, an option as host
            from autocomp.runtimes.remote import parse_device

            parse_device(self.measure_on)
            need(self.runtime in ("onnxruntime", "openvino"), "measure_on", f"a device cannot time {self.runtime}")
        need(not self.device_accuracy or self.measure_on is not None, "device_accuracy",
             "needs --measure-on ssh://... (the device to run the validation pass on)")
        for b in self.baselines:
            need(b in BASELINES, "baselines", f"unknown baseline {b!r} (expected {', '.join(BASELINES)})")
        if self.study_name is not None:
            # The default run directory is runs/STUDY_NAME: one plain folder name, never a path out of runs/.
            need(re.fullmatch(r"[A-Za-z0-9._-]{1,100}", self.study_name) is not None, "study_name",
                 f"use letters, digits, '.', '_' and '-' (at most 100), got {self.study_name!r}")
            need(self.study_name not in (".", ".."), "study_name",
                 f"{self.study_name!r} is not a folder name of its own (runs/STUDY_NAME would be outside runs/)")

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
        from autocomp.data import DataSpec

        return DataSpec(self.dataset, self.data_dir, self.image_size, self.channels,
                        self.train_samples, self.val_samples, self.download, self.resize, self.mean, self.std,
                        self.augment, self.workers)

    @property
    def measure(self) -> MeasureConfig:
        """The measurement settings whole, as ``autocomp.measure`` takes them (its constants as they are)."""
        from autocomp.measure.protocol import MeasureConfig

        return MeasureConfig(batch=self.batch, threads=self.threads, device=self.device, runtime=self.runtime,
                             precision=self.precision, measure_on=self.measure_on,
                             device_accuracy=self.device_accuracy)

    def identity(self) -> dict[str, Any]:
        """What defines the study: resuming with a different identity is refused."""
        from autocomp.runtimes import DEFAULT as DEFAULT_RUNTIME

        keys = ("model", "checkpoint", "dataset", "image_size", "channels", "train_samples", "val_samples",
                "teacher_epochs", "seed", "batch", "threads", "model_kwargs", "weights", "resize", "mean", "std",
                "augment")
        # model_kwargs is None when not given, which is what a study made before it existed reads.
        out = {k: getattr(self, k) for k in keys}
        # Latencies of two runtimes or precisions never mix in one study. None for the default,
        # which is what a study made before runtimes were selectable reads (it ran ONNX Runtime, fp32).
        out["runtime"] = None if self.runtime == DEFAULT_RUNTIME else self.runtime
        out["precision"] = None if self.precision == "fp32" else self.precision
        out["measure_on"] = self.measure_on  # a device's latencies never mix with another's
        out["device_accuracy"] = self.device_accuracy or None  # None: what a study made before the flag reads
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
