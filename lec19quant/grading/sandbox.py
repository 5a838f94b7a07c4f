"""One student's process, started with limits and killed when it overruns them.

On Linux with unprivileged user namespaces (`unshare`), the process gets no network (an empty
network namespace), a file system that is read-only except for a private scratch directory (a
fresh tmpfs mounted over an empty directory, so that a checkout, virtual environment or model
cache that lives under /tmp stays visible), and a PID
namespace (its children die with it). Everywhere, it has a memory limit (RLIMIT_DATA: its heap and
anonymous mappings, where tensors and Python objects live), a network-blocking audit hook, one session whose processes are killed together, and wall-clock
limits on each request that the grader enforces from outside.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from .. import models
from . import wire

# In the new namespaces: every mount read-only, a fresh tmpfs on the scratch directory ($1), then
# the worker.
_READ_ONLY = ('scratch=$1; shift; for m in $(cut -d" " -f2 /proc/self/mounts); do '
              'mount -o remount,bind,ro "$m" 2>/dev/null; done; '
              'mount -t tmpfs -o size=512m tmpfs "$scratch" && cd "$scratch" && exec "$@"')


@dataclass(frozen=True)
class Limits:
    """What a student's process may use: seconds per notebook cell and per check, memory, threads."""

    cell_seconds: float = 300.0
    check_seconds: float = 60.0
    start_seconds: float = 300.0  # for the process to start and import torch and the package
    memory_mb: int = 6144
    threads: int = 1
    isolate: bool = True  # network and file-system namespaces where the system allows them

    def __post_init__(self):
        for name in ("cell_seconds", "check_seconds", "start_seconds", "memory_mb", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")


class Overrun(RuntimeError):
    """The student's process took too long or died; it has been killed."""


def namespaces_available() -> bool:
    """Whether `unshare` can give this user new user, network, mount and PID namespaces."""
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork",
                           "true"], capture_output=True).returncode == 0


class StudentProcess:
    """A worker process (lec19quant.grading.worker) that runs one submission's code."""

    def __init__(self, limits: Limits):
        self.limits = limits
        to_child, self._to_child = os.pipe()
        self._from_child, from_child = os.pipe()
        command = [sys.executable, "-I", "-m", "lec19quant.grading.worker", str(to_child), str(from_child),
                   str(limits.memory_mb * 2**20), str(limits.threads)]
        self._scratch = tempfile.mkdtemp(prefix="lec19quant-student-")
        if limits.isolate:
            command = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork",
                       "--kill-child", "sh", "-c", _READ_ONLY, "sh", self._scratch] + command
        threads = str(limits.threads)
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, MPLBACKEND="Agg",
                   TMPDIR=self._scratch, MPLCONFIGDIR=os.path.join(self._scratch, "matplotlib"),
                   TRITON_CACHE_DIR=os.path.join(self._scratch, "triton"), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", LEC19QUANT_CACHE=str(models.cache_dir()))
        self._process = subprocess.Popen(command, pass_fds=(to_child, from_child), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True, env=env, cwd=self._scratch)
        os.close(to_child)
        os.close(from_child)
        try:
            self._receive(limits.start_seconds)  # {"ready": True}: the limits of requests start now
        except Overrun:
            self.close()
            raise

    def request(self, message: dict, seconds: float) -> dict:
        """Send a request and wait at most `seconds` for the reply; Overrun (and the process
        killed) when it takes longer, dies, or answers with something unreadable."""
        try:
            wire.send(self._to_child, message)
        except OSError:
            self.kill()
            raise Overrun(f"the student's process had died ({self._exit()})") from None
        return self._receive(seconds)

    def _receive(self, seconds: float) -> dict:
        try:
            reply = wire.receive(self._from_child, seconds)
        except TimeoutError:
            self.kill()
            raise Overrun(f"the student's process took longer than {seconds:g} s") from None
        except wire.WireError as error:
            self.kill()
            raise Overrun(f"the student's process died or sent garbage ({error}; {self._exit()})") from None
        if not isinstance(reply, dict):
            self.kill()
            raise Overrun("the student's process sent garbage")
        return reply

    def _exit(self) -> str:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def kill(self) -> None:
        """Kill the process and everything it started."""
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while self._process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        """Kill the process, close the pipes and remove the scratch directory."""
        self.kill()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._scratch, ignore_errors=True)
