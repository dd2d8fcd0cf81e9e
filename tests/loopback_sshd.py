"""A loopback OpenSSH server for the device tests: its own host key, a client key made for the
test, and an ssh config naming it ``autocomp-test`` and ``autocomp-test-twin`` (the same server
under a second URL: a second device of the same model) (``AUTOCOMP_SSH_CONFIG``). ``.ci/run``
installs openssh-server; CI must have it, elsewhere the tests skip without it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ALIAS = "autocomp-test"


@dataclass
class Sshd:
    folder: Path
    port: int
    config: Path  # the client's ssh config (AUTOCOMP_SSH_CONFIG)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ssh://{ALIAS}"

    def start(self) -> None:
        self.proc = subprocess.Popen([_sshd(), "-D", "-e", "-f", str(self.folder / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("sshd did not start")

    def stop(self) -> None:
        """Kill the server and every connection it serves (its children), as a crash would."""
        if self.proc is not None:
            for child in _children(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def env(self, python: str = sys.executable) -> dict[str, str]:
        """The environment a client process needs: this config, and the device's Python (this one,
        which has numpy and onnxruntime)."""
        return dict(os.environ, AUTOCOMP_SSH_CONFIG=str(self.config), AUTOCOMP_DEVICE_PYTHON=python)


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid``, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _sshd() -> str:
    return shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()


def make_sshd(folder: Path) -> Sshd:
    if not Path(_sshd()).exists() or shutil.which("ssh-keygen") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide sshd (.ci/run installs openssh-server)")
        pytest.skip("no sshd here (apt-get install openssh-server)")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    port = free_port()
    host_pub = _keygen(folder / "host_key")
    (folder / "authorized_keys").write_text(_keygen(folder / "client_key"))
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\nStrictModes no\n"
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "LogLevel ERROR\n")
    (folder / "known_hosts").write_text(f"{ALIAS} {host_pub}")
    config = folder / "ssh_config"
    config.write_text(
        f"Host {ALIAS} {ALIAS}-twin\n  HostName 127.0.0.1\n  Port {port}\n  User {_user()}\n  HostKeyAlias {ALIAS}\n"
        f"  IdentityFile {folder / 'client_key'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {folder / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n")
    return Sshd(folder, port, config)


def _user() -> str:
    import getpass

    return getpass.getuser()


def start_for_this_process(folder: Path) -> Sshd:
    """A loopback device for a benchmark: the server started in ``folder`` and this process's
    environment pointed at it (``AUTOCOMP_SSH_CONFIG``, ``AUTOCOMP_DEVICE_PYTHON``). Stop it after."""
    folder.mkdir(parents=True, exist_ok=True)
    server = make_sshd(folder)
    server.start()
    os.environ.update(server.env())
    return server
