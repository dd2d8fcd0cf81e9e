"""Runtimes a study measures on: ``onnxruntime`` (default), ``openvino`` (CPU), ``tensorrt`` (GPU).

Each is a registered ``Runtime`` (``autocomp.runtimes.base``) in its own module; its library is
imported only when a session is opened, so listing them costs nothing. Adding one means a
module with a ``@register``-ed subclass, imported here.

Example::

    from autocomp.runtimes import RuntimeOptions, require
    session = require("openvino").open(to_bytes("trial.acz"), RuntimeOptions(threads=1))
    session.run(None, {"input": x})[0], session.describe()
"""

from autocomp.runtimes import _onnxruntime, _openvino, _tensorrt  # noqa: F401 - they register themselves
from autocomp.runtimes.base import (
    DEFAULT,
    PRECISIONS,
    Runtime,
    RuntimeOptions,
    Session,
    beside,
    format_runtime,
    get_runtime,
    host_cpu,
    register,
    require,
    runtime_names,
    summary,
)

__all__ = ["DEFAULT", "PRECISIONS", "Runtime", "RuntimeOptions", "Session", "beside", "format_runtime", "get_runtime",
           "host_cpu", "register", "require", "runtime_names", "summary"]
