"""Output formats of ``autocomp export``: which one ``--out`` asks for, and writing it atomically.

``.acz`` (the artifact), ``.onnx`` (expanded plain ONNX), ``.xml`` (OpenVINO IR, ``NAME.bin``
beside it), ``.pt`` (TorchScript; ``--format state_dict`` for a state dict).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from autocomp.artifact import to_bytes
from autocomp.artifact.container import atomic_write
from autocomp.errors import AutocompError
from autocomp.measure import session_accuracy
from autocomp.runtimes import Runtime, RuntimeOptions, summary

FORMATS = {"acz": (".acz",), "onnx": (".onnx",), "openvino": (".xml",), "torchscript": (".pt", ".pth"),
           "state_dict": (".pt", ".pth")}
BY_EXTENSION = {".acz": "acz", ".onnx": "onnx", ".xml": "openvino", ".pt": "torchscript", ".pth": "torchscript"}
REUSES_ARTIFACT = ("acz", "onnx", "openvino")  # formats made from the .acz's bytes alone (no PyTorch module)


def output_format(out: str, fmt: str | None = None) -> str:
    """The format ``--out``'s extension asks for, or a one-line refusal (unknown, or not ``fmt``'s)."""
    ext = Path(out).suffix.lower()
    if fmt is None:
        if ext not in BY_EXTENSION:
            raise AutocompError(f"--out {out}: cannot tell the format from {ext or 'a name without extension'}; "
                                "use .acz (artifact), .onnx (plain ONNX), .xml (OpenVINO IR) or .pt (TorchScript)")
        return BY_EXTENSION[ext]
    if fmt not in FORMATS:
        raise AutocompError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if ext not in FORMATS[fmt]:
        raise AutocompError(f"--format {fmt} writes {' or '.join(FORMATS[fmt])} files, but --out is {out}")
    return fmt


def write_format(out_path: Path, fmt: str, acz: Path, student: torch.nn.Module | None, example: torch.Tensor,
                 own: Runtime | None, options: RuntimeOptions) -> list[Path]:
    """Write ``fmt`` to ``out_path`` (atomically); return the files written (an IR is two)."""
    if own is not None:  # the runtime's own format, from the same graph (OpenVINO IR: NAME.xml + NAME.bin)
        return own.save(to_bytes(acz), out_path, fmt, options)
    # Each written whole or not at all: a failed write (a full disk) removes its .part.
    if fmt == "acz":
        if acz.resolve() != out_path.resolve():
            atomic_write(out_path, lambda p: shutil.copyfile(acz, p))
    elif fmt == "onnx":
        data = to_bytes(acz)
        atomic_write(out_path, lambda p: p.write_bytes(data))
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # TorchScript is marked deprecated; it is still what .pt users load
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(student.eval(), example)
        atomic_write(out_path, lambda p: traced.save(str(p)))
    elif fmt == "state_dict":
        atomic_write(out_path, lambda p: torch.save(student.state_dict(), p))
    return [out_path]


def written_file(own: Runtime, path: Path, options: RuntimeOptions, val: Any) -> tuple[dict[str, Any], Any]:
    """The written file loaded back by its runtime: its accuracy with the measured settings (the
    card's), the call that gives them, and its accuracy under the runtime's own defaults; and the
    session with the measured settings, whose ``describe()`` is the file's own compiled model."""
    session, plain = own.open_file(path, options), own.open_file(path, None)
    record = {"load": own.load_call(path, options), "accuracy": session_accuracy(session, val),
              "accuracy_runtime_defaults": session_accuracy(plain, val),
              "runtime_defaults": summary(plain.describe())}
    return record, session

