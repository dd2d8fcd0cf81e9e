"""Latency timed on a measuring device over SSH (``--measure-on ssh://[user@]host[:port]``).

A study's sessions stay local for accuracy (the same artifact bytes, measured here) and carry the
device as their ``host``: ``autocomp.runtimes.beside`` sends every timed loop there, so the
trial's ratio to the teacher, the teacher's reference and the per-layer profile are all timed on
the device, with the protocol's own loop (``device_timing``, the one file copied there).

- **SSH**: the system OpenSSH client, so ``~/.ssh/config``, keys, the agent and ProxyJump apply;
  ``BatchMode=yes``, so it never prompts: an unknown host key or a refused login is one line.
  ``AUTOCOMP_SSH_CONFIG=FILE`` passes ``-F FILE`` (a config of its own, e.g. for tests).
- **On the device**: ``python3`` (``AUTOCOMP_DEVICE_PYTHON=PATH`` names another, e.g. a venv's);
  a private folder from ``mktemp -d`` (mode 700) holds ``device_timing.py``
  and the ONNX graphs sent to it (named by their sha256); it is removed when the process ends.
- **Recorded**: the URL as given (a password in it is refused) and what the device says of itself
  (``device_timing.identify``: uname, CPU and ISA flags, cores, Python, runtime and version).

Example::

    device = open_device("ssh://pi@raspberrypi", "onnxruntime", RuntimeOptions(threads=1))
    session = RemoteSession(local_session, onnx_bytes, device)   # what open_session(measure_on=...) gives
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autocomp.errors import AutocompError, DeviceLost
from autocomp.runtimes import device_timing
from autocomp.runtimes.base import RuntimeOptions, get_runtime

HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")  # a name or alias: never an option (-o...)
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
CONNECT_SECONDS = 10
TRIES = 4  # a dropped connection is retried after 1, 2 and 4 s before the measurement fails
GONE_SECONDS = 120.0  # unreachable for this long (AUTOCOMP_DEVICE_GONE_SECONDS): the run stops
SCRIPT = "device_timing.py"


@dataclass(frozen=True)
class DeviceURL:
    """``ssh://[user@]host[:port]``: what a study records of its device (no credential)."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return f"ssh://{self.user + '@' if self.user else ''}{self.host}{f':{self.port}' if self.port else ''}"


def parse_device(url: str) -> DeviceURL:
    """The device a URL names, or a one-line ``AutocompError``.

    Example::

        parse_device("ssh://pi@raspberrypi:2222")   # DeviceURL(host='raspberrypi', user='pi', port=2222)
        parse_device("ssh://pi:secret@host")        # AutocompError: a password ... is refused
    """
    m = re.fullmatch(r"ssh://(?:(?P<userinfo>[^@/]*)@)?(?P<host>[^:/@]*)(?::(?P<port>[^/]*))?/?", url or "")
    if m is None:
        raise AutocompError(f"device URL {url!r}: expected ssh://[user@]host[:port]")
    userinfo, host, port = m["userinfo"], m["host"], m["port"]
    if userinfo is not None and ":" in userinfo:
        raise AutocompError("device URL: a password in it is refused (it would be stored with the study); "
                            "use a key or your ssh agent")
    if not HOST.fullmatch(host):
        raise AutocompError(f"device URL {url!r}: {host!r} is not a host name or ~/.ssh/config alias")
    if userinfo is not None and not USER.fullmatch(userinfo):
        raise AutocompError(f"device URL {url!r}: {userinfo!r} is not a user name")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise AutocompError(f"device URL {url!r}: the port must be 1-65535, got {port!r}")
    return DeviceURL(host, userinfo, int(port) if port else None)


def ssh_argv(url: DeviceURL, command: str) -> list[str]:
    """The ``ssh`` call that runs ``command`` on the device, never prompting."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_SECONDS}", "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3"]
    config = os.environ.get("AUTOCOMP_SSH_CONFIG")
    if config:
        argv += ["-F", config]
    if url.port:
        argv += ["-p", str(url.port)]
    if url.user:
        argv += ["-l", url.user]
    return argv + ["--", url.host, command]


def ssh_problem(url: DeviceURL, stderr: str) -> str:
    """One line for an ssh failure (exit 255), from what ssh printed."""
    text = stderr.strip()
    for needle, what in (("Host key verification failed", "its host key is unknown or changed (connect once with "
                          f"`ssh {url.host}` to check and accept it)"),
                         ("REMOTE HOST IDENTIFICATION HAS CHANGED", "its host key changed"),
                         ("Permission denied", "the login was refused (BatchMode: a key or agent is needed)"),
                         ("Connection refused", "the connection was refused (is sshd running?)"),
                         ("timed out", "the connection timed out"),
                         ("Could not resolve", "the host name does not resolve"),
                         ("No route to host", "there is no route to the host")):
        if needle in text:
            return f"device {url}: {what}"
    last = text.splitlines()[-1] if text else "ssh failed"
    return f"device {url}: {last[:200]}"


class DeviceError(AutocompError):
    """The device cannot be reached or cannot measure: one line."""


class RemoteDevice:
    """One measuring device: its private folder, what it said of itself, the graphs already sent."""

    def __init__(self, url: DeviceURL, runtime: str, options: RuntimeOptions) -> None:
        self.url, self.runtime, self.options = url, runtime, options
        self.folder: str | None = None
        self.identity: dict[str, Any] = {}
        self.sent: set[str] = set()
        self.down_since: float | None = None  # monotonic time of the first failure in a row

    def ssh(self, command: str, stdin: bytes = b"", timeout: float = 600) -> str:
        """``command``'s stdout on the device. A dropped connection is retried (``TRIES``), then
        this measurement fails (``DeviceError``: the trial fails, the study goes on); a device
        still unreachable ``GONE_SECONDS`` after its first failure ends the run (``DeviceLost``)."""
        failed_at = None
        for attempt in range(TRIES):
            try:
                done = subprocess.run(ssh_argv(self.url, command), input=stdin, capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                problem = f"device {self.url}: no answer in {timeout:.0f} s"
                failed_at = failed_at or time.monotonic() - timeout
            else:
                if done.returncode != 255:
                    self.down_since = None
                    return self._answer(done)
                problem = ssh_problem(self.url, done.stderr.decode(errors="replace"))
                failed_at = failed_at or time.monotonic()
                if "host key" in problem or "login was refused" in problem:
                    break  # retrying cannot help
            if attempt < TRIES - 1:
                time.sleep(2 ** attempt)
        now, gone = time.monotonic(), float(os.environ.get("AUTOCOMP_DEVICE_GONE_SECONDS", GONE_SECONDS))
        self.down_since = self.down_since or failed_at
        if self.folder is not None and now - self.down_since >= gone:
            raise DeviceLost(f"{problem}, for {now - self.down_since:.0f} s: the run stops; its finished trials are "
                             "kept (run the same command again when the device is back)")
        raise DeviceError(problem)

    def _answer(self, done: subprocess.CompletedProcess) -> str:
        out = done.stdout.decode(errors="replace")
        if done.returncode == 0:
            return out
        try:
            reason = json.loads(out.strip().splitlines()[-1])["error"]
        except (ValueError, IndexError, KeyError, TypeError):
            err = done.stderr.decode(errors="replace").strip().splitlines()
            reason = err[-1][:200] if err else f"exit code {done.returncode}"
        raise DeviceError(f"device {self.url}: {reason}")

    def script(self, *args: str) -> str:
        """The command that runs the timing script on the device with ``args``."""
        python = shlex.quote(os.environ.get("AUTOCOMP_DEVICE_PYTHON", "python3"))
        return " ".join([python, f"{self.folder}/{SCRIPT}", *map(shlex.quote, args)])

    def open(self) -> RemoteDevice:
        """Make the private folder, copy the timing script, ask the device what it is."""
        script = Path(device_timing.__file__).read_bytes()
        folder = self.ssh(f'umask 077 && d=$(mktemp -d) && cat > "$d/{SCRIPT}" && printf %s "$d"', script).strip()
        if not folder.startswith("/"):
            raise DeviceError(f"device {self.url}: mktemp -d gave {folder[:100]!r}")
        self.folder = folder
        try:
            self.identity = json.loads(self.ssh(self.script("identify", self.runtime)))
        except DeviceError as exc:
            self.close()
            reason = str(exc).removeprefix(f"device {self.url}: ")
            missing = "not found" in reason or "No such file" in reason
            raise DeviceError(f"device {self.url}: no Python there ({reason})" if missing else str(exc)) from None
        return self

    def close(self) -> None:
        """Remove the private folder (what was sent with it); a device already gone is left be."""
        folder, self.folder = self.folder, None
        if folder:
            try:
                subprocess.run(ssh_argv(self.url, f"rm -rf {shlex.quote(folder)}"), capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def describe(self) -> dict[str, Any]:
        """The session record a study and a card keep: the runtime as the device runs it."""
        i = self.identity
        return {"runtime": self.runtime, "label": get_runtime(self.runtime).label, "version": i.get("version"),
                "device": f"CPU of {self.url}", "measured_on": str(self.url), "cpu": i.get("cpu"),
                "arch": i.get("arch"), "isa": i.get("isa", []), "precision": self.options.precision,
                "threads": self.options.threads, "device_record": i}

    def call(self, fn: Any, sessions: list[RemoteSession], x: np.ndarray, **kw: Any) -> Any:
        """``beside``'s entry: the timed loop of ``autocomp.measure.latency`` (nothing else runs
        there), on the device, on the same input: its raw lists, as it gives them locally."""
        if getattr(fn, "__name__", "") != "_timed":
            raise AssertionError(f"a device runs the timed loop only, not {fn!r}")
        out = self.request("time", sessions, x, kw=kw)
        return out["samples"], out["per_round"]

    def infer(self, session: RemoteSession, x: np.ndarray) -> np.ndarray:
        """``session``'s first output on ``x``, computed on the device (``--device-accuracy``)."""
        out = self.request("run", [session], x)
        return np.frombuffer(base64.b64decode(out["base64"]), dtype=np.float32).reshape(out["shape"])

    def request(self, command: str, sessions: list[RemoteSession], x: np.ndarray, _again: bool = True,
                **extra: Any) -> dict[str, Any]:
        """One call of the device script; each graph is sent once (by its sha256)."""
        if self.folder is None:
            self.open()
        files = {s.name: base64.b64encode(s.model).decode() for s in sessions if s.name not in self.sent}
        x = np.ascontiguousarray(x, dtype=np.float32)
        request = {"runtime": self.runtime, "threads": self.options.threads, "precision": self.options.precision,
                   "models": [s.name for s in sessions], "files": files, **extra,
                   "input": {"shape": list(x.shape), "base64": base64.b64encode(x.tobytes()).decode()}}
        try:
            out = json.loads(self.ssh(self.script(command), json.dumps(request).encode()))
        except DeviceError as exc:
            if _again and ("is not on the device" in str(exc) or "can't open file" in str(exc)):
                self.folder, self.sent = None, set()  # rebooted, /tmp emptied: a new folder, everything sent again
                return self.request(command, sessions, x, _again=False, **extra)
            raise
        self.sent |= set(files)
        return out


class RemoteSession:
    """A local session over the artifact's bytes whose timed loops run on ``device`` (its
    ``host``, which ``autocomp.runtimes.beside`` asks). ``run`` (what accuracy calls) runs here,
    or on the device with ``on_device`` (``--device-accuracy``: its first output only)."""

    def __init__(self, local: Any, model: bytes, device: RemoteDevice, on_device: bool = False) -> None:
        self._local, self.model, self.host, self.on_device = local, model, device, on_device
        self.name = hashlib.sha256(model).hexdigest()[:32] + ".onnx"

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.on_device:
            return [self.host.infer(self, feeds["input"])]
        return self._local.run(output_names, feeds)

    def describe(self) -> dict[str, Any]:
        return {**self.host.describe(), "accuracy_on": str(self.host.url) if self.on_device else "here"}


_DEVICES: dict[tuple, RemoteDevice] = {}


def open_device(url: str, runtime: str, options: RuntimeOptions) -> RemoteDevice:
    """The device ``url`` names, opened once per process (and closed when it exits), checked to
    run ``runtime``: a one-line ``DeviceError`` when it cannot."""
    parsed = parse_device(url)
    key = (str(parsed), runtime, options.threads, options.precision)
    if key not in _DEVICES:
        device = RemoteDevice(parsed, runtime, options).open()
        _DEVICES[key] = device
        atexit.register(device.close)
    return _DEVICES[key]


def close_devices() -> None:
    """Remove every device's private folder now (a run's end; ``atexit`` does it otherwise)."""
    for device in _DEVICES.values():
        device.close()
    _DEVICES.clear()
