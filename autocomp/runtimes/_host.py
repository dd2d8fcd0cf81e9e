"""A runtime's own process: the library lives there, this process only sends it requests.

Why: once OpenVINO's CPU plugin has run in a process, forking that process (a DataLoader worker,
``multiprocessing`` with fork) crashed it with SIGSEGV (an in-process ``--runtime openvino``
search, then a DataLoader with two workers: the parent died, exit 139). A runtime whose library
must not run here is hosted: a long-lived child started by ``subprocess`` (fork + exec, so it is a
fresh interpreter that never inherits the plugin's threads, and it does not re-import the user's
``__main__`` the way multiprocessing's spawn and forkserver do) owns every object of that library.
The caller holds proxies (handles); forks of the caller are then as safe as if the runtime were
never used.

Protocol: one socket, pickled ``(dropped handles, op, args)`` requests answered ``(ok, value)``.
A proxy pickles as ``resolve(handle)``, so inside the host it arrives as the real object:
``Host.call(fn, sessions, ...)`` runs ``fn`` (importable by name) there on the real sessions,
which is how a timed loop runs where the sessions are, without a round trip per timed call.

Example::

    host = Host("autocomp.runtimes._ov_worker", "OpenVINO")
    handle = host.request("open", onnx_bytes, options)
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from autocomp.errors import AutocompError

_LOCAL: dict[int, Any] = {}  # inside a host: handle -> the library's object
_NEXT = [0]


def keep(obj: Any) -> int:
    """Inside a host: hold ``obj`` and return the handle a proxy names it by."""
    _NEXT[0] += 1
    _LOCAL[_NEXT[0]] = obj
    return _NEXT[0]


def resolve(handle: int) -> Any:
    """Inside a host: the object behind ``handle`` (what a pickled proxy turns into there)."""
    try:
        return _LOCAL[handle]
    except KeyError:
        raise AutocompError(f"no object {handle} in this runtime process (it was dropped or the process restarted)"
                            ) from None


class Host:
    """The client side: starts the host on first use (again after a fork, or after it died)."""

    def __init__(self, module: str, label: str) -> None:
        self.module, self.label = module, label
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._pid = -1  # the process that started it; a forked child starts its own
        self._lock = threading.Lock()
        self._dropped: list[int] = []
        self.generation = 0  # handles are valid only in the host that made them
        atexit.register(self.close)

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        # The child sees this process's import path (an editable checkout, a test folder).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "autocomp.runtimes._host", self.module, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=sys.__stderr__, env=env)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._pid, self._dropped = os.getpid(), []
        self.generation += 1

    def _alive(self) -> bool:
        return self._pid == os.getpid() and self._proc is not None and self._proc.poll() is None

    def request(self, op: str, *args: Any) -> Any:
        """``op(*args)`` in the host; its exception is raised here."""
        with self._lock:
            if not self._alive():
                self._start()
            dropped, self._dropped = self._dropped, []
            try:
                self._conn.send_bytes(pickle.dumps((dropped, op, args), protocol=pickle.HIGHEST_PROTOCOL))
                ok, value = pickle.loads(self._conn.recv_bytes())
            except EOFError:
                code = self._proc.wait()
                raise AutocompError(f"the {self.label} process died (exit code {code}) during {op}") from None
            except BaseException:
                self._kill()  # interrupted between send and receive: the next request starts afresh
                raise
        if not ok:
            raise value
        return value

    def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """``fn(*args, **kw)`` inside the host; proxies among the arguments arrive as the real objects."""
        return self.request("call", fn, args, kw)

    def drop(self, handle: int, generation: int) -> None:
        """Forget a handle; sent with the next request (safe from ``__del__``: no I/O here)."""
        if generation == self.generation and self._pid == os.getpid():
            self._dropped.append(handle)

    def close(self) -> None:
        """Stop the host: it exits when its socket closes."""
        if self._pid != os.getpid() or self._proc is None:
            return
        self._conn.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
        self._proc = None

    def _kill(self) -> None:
        if self._proc is not None and self._pid == os.getpid():
            self._proc.kill()
            self._proc.wait()
            self._conn.close()
        self._proc = None


def _portable(error: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any pickling failure: send its text instead
        return RuntimeError(f"{type(error).__name__}: {error}")


def serve(conn: Connection, handlers: dict[str, Callable[..., Any]]) -> None:
    """The host's loop: answer requests until the client closes the socket."""
    handlers = {**handlers, "call": lambda fn, args, kw: fn(*args, **kw)}
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            return
        try:
            dropped, op, args = pickle.loads(message)
            for handle in dropped:
                _LOCAL.pop(handle, None)
            answer = (True, handlers[op](*args))
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the caller
            answer = (False, _portable(error))
        try:
            conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as error:  # noqa: BLE001 - an answer that does not pickle
            conn.send_bytes(pickle.dumps((False, _portable(error))))


if __name__ == "__main__":
    from autocomp.runtimes._host import serve as _serve  # the importable module, where keep/resolve live

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle; EOF stops us
    _serve(Connection(int(sys.argv[2])), importlib.import_module(sys.argv[1]).HANDLERS)
