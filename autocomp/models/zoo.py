"""Models: builtin ones, torchvision classifiers by name, or a user's builder; plus the teacher.

Specs: ``digits_cnn`` (default), ``lenet5``, ``lenet300``; ``torchvision:resnet18`` (random
init, ``num_classes`` set from the data: pass ``--checkpoint`` for trained weights, or
``--weights NAME`` for torchvision's own, read from the local torch hub cache only);
``pkg.module:build`` or ``path/to/file.py:build`` (called with ``num_classes=`` when it takes it).

Without a checkpoint or weights, the teacher is trained on the training split and cached under
``$AUTOCOMP_CACHE`` (default ``~/.cache/autocomp``), keyed by model, data and settings.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autocomp._user_code import load_callable
from autocomp.data import Data, Preprocess
from autocomp.errors import AutocompError


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
                model_kwargs: dict[str, Any] | None = None, weights: str | None = None) -> nn.Module:
    """Build the model a spec names, its attention made explicit (``methods.attention``).

    ``model_kwargs`` go to the builder (torchvision's, a builtin's or the user's), e.g.
    ``{"image_size": 32}`` for ``torchvision:vit_b_16`` on 32-pixel inputs; ``weights`` names a
    torchvision weights enum member loaded from the local cache (``DEFAULT``, ``IMAGENET1K_V1``).

    Example::

        model = build_model("torchvision:vit_b_16", 10, (3, 32, 32), {"image_size": 32})
    """
    from autocomp.models.adapters.attention import explicit_attention

    if weights is not None:
        model = _with_weights(spec, weights, dict(model_kwargs or {}))
    else:
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


def torchvision_weights(spec: str, name: str):  # noqa: ANN201
    """The torchvision weights enum member ``name`` (``DEFAULT``, ``IMAGENET1K_V1`` ...) of ``torchvision:MODEL``."""
    if not spec.startswith("torchvision:"):
        raise AutocompError(f"--weights {name} needs a torchvision:NAME model, not {spec!r}")
    import torchvision

    model = spec.split(":", 1)[1]
    if model not in torchvision.models.list_models(module=torchvision.models):
        raise AutocompError(f"unknown torchvision classifier {model!r} (see torchvision.models.list_models())")
    enum = torchvision.models.get_model_weights(model)
    try:
        return enum[name.split(".")[-1]]
    except KeyError:
        known = ", ".join(dict.fromkeys(["DEFAULT", *enum.__members__]))
        raise AutocompError(f"unknown weights {name!r} for {model} (available: {known})") from None


def weights_preprocess(spec: str, name: str | None) -> Preprocess | None:
    """The input transform torchvision's weights were trained with (resize, crop, mean, std), or None."""
    if name is None:
        return None
    weights = torchvision_weights(spec, name)
    t = weights.transforms()
    interpolation = getattr(t, "interpolation", None)
    return Preprocess(
        image_size=int(t.crop_size[0]), resize=int(t.resize_size[0]), mean=tuple(float(v) for v in t.mean),
        std=tuple(float(v) for v in t.std), interpolation=getattr(interpolation, "value", "bilinear"),
        normalization=f"torchvision weights {type(weights).__name__}.{weights.name} (their own transforms)",
    )


def weights_file(weights) -> Path:  # noqa: ANN001
    """Where torchvision's weights API looks for ``weights`` locally (``$TORCH_HOME/hub/checkpoints``)."""
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _with_weights(spec: str, name: str, extra: dict[str, Any]) -> nn.Module:
    import torchvision

    weights = torchvision_weights(spec, name)
    label = f"{type(weights).__name__}.{weights.name}"
    path = weights_file(weights)
    if not path.is_file():
        # Never downloaded at run time: the person with network fetches them once.
        raise AutocompError(f"weights {label} are not in the local torch hub cache ({path}); fetch them where there "
                            "is network (or copy the file there), or pass --checkpoint")
    try:  # torchvision would unpickle the file as it is; check it holds only tensors first
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files and pickled objects fail differently
        raise AutocompError(f"cannot load weights {label} from {path} (weights_only=True): "
                            f"{str(exc).splitlines()[0]}") from None
    try:
        return torchvision.models.get_model(spec.split(":", 1)[1], weights=weights, **extra)
    except Exception as exc:  # a state dict that does not fit the architecture
        raise AutocompError(f"weights {label} in {path} do not fit the model: "
                            f"{str(exc).strip().splitlines()[-1][:200]}") from None


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


def check_fits(model: nn.Module, data: Data) -> None:
    """Fail early, with one line, when the model cannot take the data or gives the wrong logits."""
    if next(model.parameters(), None) is None:  # only pooling/reshapes: no optimizer, nothing to compress
        kinds = sorted({type(m).__name__ for m in model.modules() if next(m.children(), None) is None})
        raise AutocompError(f"model has no parameters (only {', '.join(kinds[:8])}): nothing to train, compress or "
                            "fine-tune")
    x = data.example(2)
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:  # shape mismatches surface as many error types
        raise AutocompError(
            f"model does not accept inputs of shape {tuple(x.shape[1:])}: {str(exc).splitlines()[0]}"
            f"{size_hint(model, tuple(x.shape[1:]))}"
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


def state_digest(model: nn.Module) -> str:
    """A short hash of the weights, stored on the study so export can tell the teacher changed."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
