"""What a trial needs before it runs: threads, the runtime's check, the data and the teacher."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

from autocomp._user_code import source_digest
from autocomp.config import SearchConfig
from autocomp.data import Data, load_data
from autocomp.measure import MeasureConfig
from autocomp.models.zoo import weights_preprocess
from autocomp.pipeline.teacher import prepare_teacher


def use_threads(config: SearchConfig) -> None:
    if config.train_threads:
        torch.set_num_threads(config.train_threads)


def require_runtime(measure: MeasureConfig) -> None:
    """One line and exit 2 when the measurement runtime cannot run here (not installed, no GPU,
    a precision it does not offer)."""
    from autocomp.runtimes import require

    require(measure.runtime, measure.options)


def prepare(config: SearchConfig, log: Callable[[str], None] = print, progress: Callable | None = None
            ) -> tuple[nn.Module, Data]:
    """Data and teacher for a config (teacher trained and cached on first use).

    ``progress(what, total)`` returns a task with ``update(n)`` and ``close()`` (``task_bar``).
    """
    use_threads(config)
    torch.manual_seed(config.seed)
    defaults = weights_preprocess(config.model, config.weights)
    data = load_data(config.data_spec, seed=config.seed, defaults=defaults, progress=progress, log=log)
    # Neither the worker count nor the validation subset changes what the teacher trains on.
    spec = {k: v for k, v in config.data_spec.__dict__.items() if k not in ("workers", "val_samples")}
    key = {"model": config.model, "source": source_digest(config.model), **spec, "n_train": data.n_train,
           "augment": data.augment}
    if config.model_kwargs:  # only when given, so the cache keys of earlier teachers still hold
        key["model_kwargs"] = config.model_kwargs
    teacher = prepare_teacher(config.model, data, config.checkpoint, config.teacher_epochs, config.seed,
                              key, config.device, log, model_kwargs=config.model_kwargs, weights=config.weights,
                              progress=progress)
    return teacher, data


def task_bar(what: str, total: int | None) -> object:
    """A progress task on stderr for ``prepare`` / ``Workbench``: ``update(n)``, ``close()``."""
    from tqdm import tqdm

    unit = "step" if "train" in what else "artifact" if ("profile" in what or "candidates" in what) else "img"
    return tqdm(total=total, desc=what, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False, mininterval=0.5)
