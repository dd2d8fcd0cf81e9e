"""Models: builtin ones, torchvision classifiers by name, or a user's builder; plus the teacher.

Specs: ``digits_cnn`` (default), ``lenet5``, ``lenet300``; ``torchvision:resnet18`` (random
init, ``num_classes`` set from the data: pass ``--checkpoint`` for trained weights);
``pkg.module:build`` or ``path/to/file.py:build`` (called with ``num_classes=`` when it takes it).

Without a checkpoint, the teacher is trained on the training split and cached under
``$AUTOCOMP_CACHE`` (default ``~/.cache/autocomp``), keyed by model, data and settings.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autocomp.data import DataBundle
from autocomp.errors import AutocompError
from autocomp.loading import load_callable


def digits_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Small CNN for 8x8 digits: 2 conv blocks and 2 linear layers (about 38 k parameters)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


class LeNet5(nn.Module):
    """LeNet-5 as in Deep Compression (Han et al. 2016): 2 conv + 3 fc, 431 k parameters at 28x28."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def lenet300(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """LeNet-300-100: 3 fully connected layers (267 k parameters at 28x28)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, num_classes),
    )


BUILTIN: dict[str, Callable[..., nn.Module]] = {"digits_cnn": digits_cnn, "lenet5": LeNet5, "lenet300": lenet300}


def build_model(spec: str, num_classes: int, input_shape: tuple[int, ...],
                model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build the model a spec names, its attention made explicit (``methods.attention``).

    ``model_kwargs`` go to the builder (torchvision's, a builtin's or the user's), e.g.
    ``{"image_size": 32}`` for ``torchvision:vit_b_16`` on 32-pixel inputs.

    Example::

        model = build_model("torchvision:vit_b_16", 10, (3, 32, 32), {"image_size": 32})
    """
    from autocomp.methods.attention import explicit_attention

    model = _build(spec, num_classes, input_shape, dict(model_kwargs or {}))
    explicit_attention(model)
    return model


def _build(spec: str, num_classes: int, input_shape: tuple[int, ...], extra: dict[str, Any]) -> nn.Module:
    channels = input_shape[0]
    for key in ("num_classes", "weights"):
        if key in extra:
            why = "is set from the data" if key == "num_classes" else "is always None (pass --checkpoint)"
            raise AutocompError(f"model_kwargs: {key} {why}")
    if spec in BUILTIN:
        kwargs = {"num_classes": num_classes, "in_channels": channels}
        if spec == "lenet300":
            kwargs["image_size"] = input_shape[-1]
        return _call(BUILTIN[spec], spec, {**kwargs, **extra})
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise AutocompError(f"unknown torchvision classifier {name!r} (see torchvision.models.list_models())")
        kwargs = {"weights": None, "num_classes": num_classes}
        if name.startswith("inception") or name.startswith("googlenet"):
            kwargs["aux_logits"] = False
            kwargs["init_weights"] = True
        return _call(lambda **kw: torchvision.models.get_model(name, **kw), spec, {**kwargs, **extra})
    if ":" in spec:
        build = load_callable(spec, what="model")
        try:
            takes = "num_classes" in inspect.signature(build).parameters
        except (TypeError, ValueError):  # builtins and C callables may have no signature
            takes = False
        model = _call(build, spec, {"num_classes": num_classes, **extra} if takes else extra)
        if not isinstance(model, nn.Module):
            raise AutocompError(f"model builder {spec!r} returned {type(model).__name__}, not an nn.Module")
        return model
    raise AutocompError(
        f"unknown model {spec!r}: use {', '.join(BUILTIN)}, torchvision:NAME, module:callable or file.py:callable"
    )


def _call(build: Callable[..., Any], spec: str, kwargs: dict[str, Any]) -> Any:
    try:
        return build(**kwargs)
    except AutocompError:
        raise
    except Exception as exc:  # the builder can raise anything, often for a model kwarg it does not take
        raise AutocompError(f"model builder {spec!r} failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def load_checkpoint(model: nn.Module, path: str) -> None:
    if not Path(path).is_file():
        raise AutocompError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files and pickled objects fail differently
        raise AutocompError(f"cannot load checkpoint {path} (weights_only=True): {str(exc).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise AutocompError(f"checkpoint {path} is not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise AutocompError(f"checkpoint {path} does not fit the model: {detail}") from None


def check_fits(model: nn.Module, data: DataBundle) -> None:
    """Fail early, with one line, when the model cannot take the data or gives the wrong logits."""
    if next(model.parameters(), None) is None:  # only pooling/reshapes: no optimizer, nothing to compress
        kinds = sorted({type(m).__name__ for m in model.modules() if next(m.children(), None) is None})
        raise AutocompError(f"model has no parameters (only {', '.join(kinds[:8])}): nothing to train, compress or "
                            "fine-tune")
    try:
        with torch.no_grad():
            out = model.eval()(data.val_x[:2])
    except Exception as exc:  # shape mismatches surface as many error types
        raise AutocompError(
            f"model does not accept inputs of shape {tuple(data.val_x.shape[1:])}: {str(exc).splitlines()[0]}"
            f"{size_hint(model, tuple(data.val_x.shape[1:]))}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < data.num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AutocompError(f"model output {shape} is not (batch, >= {data.num_classes}) logits")


def size_hint(model: nn.Module, shape: tuple[int, ...]) -> str:
    """What to pass when a model is built for another input size (torchvision's ViT and MaxViT)."""
    try:
        params = inspect.signature(type(model).__init__).parameters
    except (TypeError, ValueError):
        return ""
    h, w = shape[-2:] if len(shape) >= 2 else (None, None)
    if "image_size" in params and h is not None:
        return f" (it is built for another image size: pass --model-kwargs image_size={h})"
    if "input_size" in params and h is not None:
        return f" (it is built for another input size: pass --model-kwargs input_size=[{h},{w}])"
    return ""


def cache_dir() -> Path:
    return Path(os.environ.get("AUTOCOMP_CACHE", Path.home() / ".cache" / "autocomp"))


def state_digest(model: nn.Module) -> str:
    """A short hash of the weights, stored on the study so export can tell the teacher changed."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_teacher(model: nn.Module, data: DataBundle, epochs: int, seed: int, device: str = "cpu",
                  lr: float = 1e-3, batch_size: int = 64) -> None:
    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(data.train_x), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(data.train_x[idx].to(device)), data.train_y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.cpu().eval()


def prepare_teacher(spec: str, data: DataBundle, checkpoint: str | None, epochs: int, seed: int,
                    cache_key: dict, device: str = "cpu", log: Callable[[str], None] = print,
                    model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build the teacher; load its checkpoint, or train it once and cache it."""
    model = build_model(spec, data.num_classes, data.input_shape, model_kwargs)
    check_fits(model, data)
    if checkpoint:
        load_checkpoint(model, checkpoint)
        return model.eval()
    identity = json.dumps({**cache_key, "epochs": epochs, "seed": seed}, sort_keys=True)
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    path = cache_dir() / "teachers" / f"{spec.replace(':', '_').replace('/', '_')}-{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    log(f"training the teacher ({spec}, {epochs} epochs); cached at {path}")
    train_teacher(model, data, epochs, seed, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model.eval()
