"""One notebook executed headless, as the main job runs it: a watched kernel, failures in one plain line.

:func:`execute_notebook` runs a notebook with nbclient in a fresh kernel and writes the executed
copy and its HTML, also when a cell fails or the kernel dies (the partly executed copy is what a
user debugs from). A failure raises :class:`NotebookFailed` with one line naming the notebook and
the cell that was running, free of the terminal escape codes IPython colours tracebacks with.

A kernel that dies (nbclient's ``DeadKernelError``, which says only "Kernel died") is explained
from what :class:`KernelWatch` saw: the cell running, how the process ended (its return code from
jupyter_client's ``LocalProvisioner`` ``Popen``: ``-9`` is SIGKILL, what Linux's out-of-memory
killer sends), the memory available when the kernel started (``psutil``, capped by a cgroup limit),
the kernel's peak resident memory (``VmHWM`` of ``/proc/<pid>/status``, polled) and whether the
system's out-of-memory kill count (``oom_kill`` in ``/proc/vmstat``) rose meanwhile. The cause is
inferred, so the message says "likely".
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from pathlib import Path

from lepton_nb.reports import plain_text

__all__ = ["KernelDeath", "KernelWatch", "NotebookFailed", "execute_notebook"]

#: Peak kernel memory, as a share of the memory available at its start, above which a SIGKILL is
#: attributed to the out-of-memory killer even when the system's kill count cannot be read or
#: did not rise (e.g. a container's limit enforced outside this kernel's view).
OOM_SHARE = 0.8
MEMORY_FIX = ("lower the batch size (TrainConfig.batch_size) and, for DP-SGD, the number of microbatches "
              "(DPSGDConfig.num_microbatches) in the notebook's parameters cell, or run a lighter mode "
              "(make run without FULL=1), or stop what else uses memory on the machine")


class NotebookFailed(RuntimeError):
    """A notebook failed; ``str()`` is one plain line naming the notebook, the cell and the cause."""


def _bytes(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _read_int(path: str, key: str | None = None) -> int | None:
    """An integer file (``key=None``) or the value after ``key`` in a ``key value`` file; ``None`` if unreadable."""
    try:
        text = Path(path).read_text()
        if key is None:
            return int(text.split()[0])
        for line in text.splitlines():
            parts = line.replace(":", " ").split()
            if parts and parts[0] == key:
                return int(parts[1]) * (1024 if parts[-1] == "kB" else 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    """Bytes a new process may still use: ``psutil``'s available memory, capped by the cgroup limit
    (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) minus its usage when one is set."""
    try:
        import psutil

        available = psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 - psutil missing or unsupported: the cgroup or nothing
        available = None
    for limit, usage in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        cap, used = _read_int(f"/sys/fs/cgroup/{limit}"), _read_int(f"/sys/fs/cgroup/{usage}")
        if cap is not None and used is not None and cap < 2**60:
            available = min(available, cap - used) if available is not None else cap - used
    return available


def oom_kill_count() -> int | None:
    """The system's count of processes killed by the out-of-memory killer (Linux >= 4.13), or ``None``."""
    return _read_int("/proc/vmstat", "oom_kill")


@dataclasses.dataclass
class KernelDeath:
    """What is known about a kernel that died.

    Attributes:
        notebook: file name of the notebook.
        cell: 1-based number of the code cell that was running (0: none had started).
        first_line: that cell's first source line.
        returncode: the kernel process' return code (negative: the signal that ended it), or ``None``.
        available_at_start: bytes available when the kernel started (:func:`available_memory`).
        peak: the kernel process' peak resident memory in bytes, as last polled.
        oom_kills: how many out-of-memory kills the system counted while the kernel ran (``None``: unknown).
    """

    notebook: str
    cell: int
    first_line: str
    returncode: int | None
    available_at_start: int | None
    peak: int | None
    oom_kills: int | None

    def likely_memory(self) -> bool:
        """SIGKILL with an out-of-memory kill counted, or with a peak near the memory available at start."""
        if self.returncode != -signal.SIGKILL:
            return False
        near = bool(self.peak and self.available_at_start and self.peak >= OOM_SHARE * self.available_at_start)
        return bool(self.oom_kills) or near

    def message(self) -> str:
        """One line: the notebook, the cell, the signal or exit status, the memory and the likely cause with its fix."""
        where = (f"while running code cell {self.cell} ({self.first_line!r})" if self.cell > 0
                 else "before its first cell")
        rc = self.returncode
        if rc is not None and rc < 0:
            try:
                how = f"ended by signal {signal.Signals(-rc).name}"
            except ValueError:
                how = f"ended by signal {-rc}"
        elif rc is not None:
            how = f"exited with status {rc}"
        else:
            how = "ended for a reason not known (no return code)"
        peak = f"peaked at {_bytes(self.peak)} or more" if self.peak else "peak not measured"
        memory = f"kernel memory {peak}, {_bytes(self.available_at_start)} available when it started"
        counted = {None: "the system's out-of-memory kill count could not be read",
                   0: "the system counted no out-of-memory kill meanwhile"}.get(
            self.oom_kills, f"the system counted {self.oom_kills} out-of-memory kill(s) meanwhile")
        line = f"{self.notebook}: the kernel died {where}, {how}"
        if self.likely_memory():
            return f"{line}; likely killed for lack of memory ({memory}; {counted}). Fix: {MEMORY_FIX}"
        if rc == -signal.SIGKILL:
            return (f"{line}; not likely for lack of memory ({memory}; {counted}): another process or a person "
                    "sent SIGKILL")
        if rc in (-signal.SIGSEGV, -signal.SIGBUS, -signal.SIGABRT, -signal.SIGILL):
            return f"{line}; likely a crash in native code (a compiled library such as TensorFlow) ({memory})"
        return f"{line} ({memory})"


class KernelWatch:
    """Follows one kernel through nbclient's hooks: its process, the cell running, its peak memory.

    ``NotebookClient(..., on_notebook_start=watch.kernel_started, on_cell_execute=watch.cell_started)``,
    then :meth:`stop` and :meth:`death`. Memory is polled every ``interval`` seconds in a thread.
    """

    def __init__(self, client, interval: float = 0.2):
        self.client, self.interval = client, interval
        self.process = None
        self.cell, self.first_line = 0, ""
        self.peak: int | None = None
        self.available_at_start: int | None = None
        self._oom_at_start: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def kernel_started(self, notebook=None, **_) -> None:
        """nbclient's ``on_notebook_start`` hook: find the kernel process and start polling its memory."""
        provisioner = getattr(self.client.km, "provisioner", None)
        self.process = getattr(provisioner, "process", None)  # a subprocess.Popen for local kernels
        self.available_at_start = available_memory()
        self._oom_at_start = oom_kill_count()
        if self.process is not None:
            self._thread = threading.Thread(target=self._poll, name="lepton_nb-kernel-watch", daemon=True)
            self._thread.start()

    def cell_started(self, cell=None, cell_index: int = 0, **_) -> None:
        """nbclient's ``on_cell_execute`` hook: remember the code cell about to run (1-based among code cells)."""
        cells = self.client.nb.cells[: cell_index + 1]
        self.cell = sum(c.cell_type == "code" for c in cells)
        self.first_line = (cell.source.splitlines() or [""])[0] if cell is not None else ""

    def _peak_now(self, pid: int) -> int | None:
        hwm = _read_int(f"/proc/{pid}/status", "VmHWM")  # the peak resident memory so far (Linux)
        if hwm is not None:
            return hwm
        try:
            import psutil

            return psutil.Process(pid).memory_info().rss
        except Exception:  # noqa: BLE001 - gone or psutil missing
            return None

    def _poll(self) -> None:
        pid = self.process.pid
        while not self._stop.is_set() and self.process.poll() is None:
            now = self._peak_now(pid)
            if now is not None:
                self.peak = max(self.peak or 0, now)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def death(self, notebook: str) -> KernelDeath:
        """The :class:`KernelDeath` of a kernel that died (call after :meth:`stop`)."""
        rc = None
        if self.process is not None:
            try:
                rc = self.process.wait(timeout=5)
            except Exception:  # noqa: BLE001 - still running (not dead after all) or not waitable
                rc = self.process.returncode
        oom_now = oom_kill_count()
        rise = oom_now - self._oom_at_start if oom_now is not None and self._oom_at_start is not None else None
        return KernelDeath(notebook, self.cell, self.first_line, rc, self.available_at_start, self.peak, rise)

    def kill_leftovers(self) -> None:
        """End what the dead kernel started and left behind (its process group), e.g. TFF's worker_binary."""
        if self.process is not None and hasattr(os, "killpg"):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # jupyter_client starts kernels in a new session
            except (ProcessLookupError, PermissionError):
                pass


def _one_line(text: str, limit: int = 1200) -> str:
    line = " ".join(part.strip() for part in plain_text(text).splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def execute_notebook(path: Path, out_dir: Path, *, timeout: int | None) -> float:
    """Execute ``path`` in a fresh kernel, write the executed copy and its HTML; returns seconds.

    Raises:
        NotebookFailed: naming the notebook and the cell that was running with the error, the
            timeout or how the kernel died; or the cells that show a figure only as text
            (:func:`lepton_nb.notebook_checks.figure_problems`). The executed copy is still written.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from nbconvert import HTMLExporter

    from lepton_nb.notebook_checks import figure_problems

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    watch = KernelWatch(client)
    client.on_notebook_start, client.on_cell_execute = watch.kernel_started, watch.cell_started
    t0 = time.perf_counter()

    def where() -> str:
        return f"code cell {watch.cell} ({watch.first_line!r})" if watch.cell > 0 else "a cell"

    failure = None
    try:
        client.execute()
    except CellExecutionError as err:
        failure = f"{path.name} failed in {where()}: {err.ename}: {err.evalue}"
    except CellTimeoutError as err:
        failure = f"{path.name} failed in {where()}: " + (str(err).strip().splitlines() or ["timed out"])[0]
    except DeadKernelError:
        watch.stop()
        failure = watch.death(path.name).message()
        watch.kill_leftovers()
        if watch.cell > 0:  # the partly executed copy shows where and why it stopped
            running = [c for c in nb.cells if c.cell_type == "code"][watch.cell - 1]
            running.outputs.append(nbformat.v4.new_output("stream", name="stderr", text=f"lepton_nb: {failure}\n"))
    finally:
        watch.stop()
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out_dir / path.name)
        try:
            html, _ = HTMLExporter().from_notebook_node(nb)
            (out_dir / path.with_suffix(".html").name).write_text(html)
        except Exception as err:  # noqa: BLE001 - a rendering problem must not hide the result
            print(f"   (HTML export of {path.name} failed: {_one_line(str(err))})", file=sys.stderr)
    if failure is not None:
        raise NotebookFailed(_one_line(failure))
    problems = figure_problems(nb)
    if problems:
        raise NotebookFailed(f"{path.name}: " + "; ".join(problems))
    return time.perf_counter() - t0
