"""Distribution strategies from a laptop to TPU pods: choose one, say why, set the precision.

:func:`strategy` returns a real :class:`tf.distribute.Strategy` and attaches a
:class:`StrategyChoice` (``strategy.lepton_choice``, also :func:`choice_of`) saying what was
chosen and why. ``kind="auto"`` tries, in order:

1. **TPU** (``TPUStrategy`` via ``TPUClusterResolver``): an explicit ``tpu=`` name or address,
   ``COLAB_TPU_ADDR`` (the retired Colab TPU nodes, ``grpc://<addr>``), ``TPU_NAME`` (a named TPU
   seen from a cloud VM), or a TPU attached to this VM (``/dev/accel*``, ``/dev/vfio``,
   ``TPU_ACCELERATOR_TYPE``: ``tpu="local"``, as on a Cloud TPU VM with a TensorFlow 2.14 image;
   Colab's TPU runtimes no longer carry TensorFlow). The TPU system is
   initialised once per process. **Untested on a real TPU**: the tests drive this path through an
   injected :class:`TPUBackend`.
2. **several GPUs**: ``MirroredStrategy`` over all of them (NCCL all-reduce).
3. **several machines**: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names more than one
   task (ring all-reduce over gRPC; :func:`run_workers` starts such a cluster on 127.0.0.1).
4. ``cpu_replicas=N``: the CPU split into N logical devices and ``MirroredStrategy`` over them,
   so the real all-reduce code path runs on a laptop and in CI (the replicas share the same
   cores, so this shows correctness, not speed).
5. otherwise the default strategy (one device).

An explicit ``kind`` that is not available raises :class:`StrategyError`; there is no silent
fallback. Splitting the CPU is only possible before TensorFlow's runtime starts in the process
(its first op or device listing): call ``strategy(cpu_replicas=N)`` first, or restart the kernel.

The precision policy suited to the chosen devices is in :mod:`lepton_nb.distributed.precision`;
clusters of worker processes on one host in :mod:`lepton_nb.distributed.workers`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import tensorflow as tf

from lepton_nb.reports import Summary

__all__ = ["KINDS", "StrategyChoice", "StrategyError", "TPUBackend", "choice_of", "detect_hardware", "devices_of",
           "kind_of", "quiet_tf_logging", "split_cpu", "strategy"]

Kind = Literal["auto", "tpu", "gpu", "multi_worker", "cpu", "default"]
KINDS = ("auto", "tpu", "gpu", "multi_worker", "cpu", "default")


class StrategyError(RuntimeError):
    """The requested strategy cannot be built here; the message says why and what to do."""


@dataclass(frozen=True)
class StrategyChoice:
    """What :func:`strategy` chose, and why.

    Attributes:
        kind: "tpu", "gpu", "multi_worker", "cpu" or "default".
        reason: one sentence: what was found that led to this choice.
        num_replicas: ``strategy.num_replicas_in_sync``.
        devices: the devices the replicas run on (this worker's, for multi-worker).
        precision: the mixed-precision policy suited to the device (:func:`precision_policy`).
    """

    kind: str
    reason: str
    num_replicas: int
    devices: tuple[str, ...]
    precision: str

    @property
    def line(self) -> str:
        """The one-line description printed by :func:`strategy`."""
        return (f"strategy: {self.kind} ({self.num_replicas} replica{'s' if self.num_replicas != 1 else ''}"
                f", {self.precision}) because {self.reason}")

    def __str__(self) -> str:
        return self.line

    def as_dict(self) -> dict:
        return Summary({"kind": self.kind, "reason": self.reason, "num_replicas": self.num_replicas,
                        "devices": list(self.devices), "precision": self.precision})


def choice_of(strat: tf.distribute.Strategy) -> StrategyChoice:
    """The :class:`StrategyChoice` of ``strat`` (also for strategies not made by :func:`strategy`)."""
    from lepton_nb.distributed.precision import precision_policy

    found = getattr(strat, "lepton_choice", None)
    if found is not None:
        return found
    return StrategyChoice(kind_of(strat), "built outside lepton_nb.distributed.strategy()",
                          strat.num_replicas_in_sync, devices_of(strat), precision_policy(strat))


def devices_of(strat: tf.distribute.Strategy) -> tuple[str, ...]:
    """The devices the replicas of ``strat`` run on (this worker's, for multi-worker)."""
    try:
        return tuple(strat.extended.worker_devices)
    except RuntimeError:  # the default strategy: whatever device TensorFlow places ops on
        gpus = tf.config.list_physical_devices("GPU")
        return ("/device:GPU:0",) if gpus else ("/device:CPU:0",)


def kind_of(strat: tf.distribute.Strategy) -> str:
    """The kind of ``strat``: "tpu", "gpu", "multi_worker", "cpu" (logical CPUs) or "default"."""
    if isinstance(strat, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)):
        return "tpu"
    if isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    devices = [d.upper() for d in devices_of(strat)]
    if any(":TPU:" in d for d in devices):
        return "tpu"
    if any(":GPU:" in d for d in devices):
        return "gpu"
    if isinstance(strat, tf.distribute.MirroredStrategy):
        return "cpu"
    return "default"


@contextlib.contextmanager
def quiet_tf_logging(level: str = "WARNING") -> Iterator[None]:
    """Raise TensorFlow's Python log level inside (MirroredStrategy logs every reduction at INFO)."""
    logger = tf.get_logger()
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


# ------------------------------------------------------------------------------------ detection


def _tpu_hint(tpu: str | None) -> tuple[str | None, str]:
    """(the ``tpu`` argument for ``TPUClusterResolver``, where it came from), or (None, why not)."""
    if tpu:
        return tpu, f"tpu={tpu!r} was given"
    if os.environ.get("COLAB_TPU_ADDR"):
        return "grpc://" + os.environ["COLAB_TPU_ADDR"], "COLAB_TPU_ADDR is set (Colab TPU node)"
    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"], f"TPU_NAME={os.environ['TPU_NAME']!r} is set (named Cloud TPU)"
    if glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*") or os.environ.get("TPU_ACCELERATOR_TYPE"):
        return "local", "a TPU is attached to this VM (/dev/accel*, /dev/vfio or TPU_ACCELERATOR_TYPE)"
    return None, "no TPU: no tpu= argument, no COLAB_TPU_ADDR or TPU_NAME, no /dev/accel* device"


def _tf_config() -> dict | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError as err:
        raise StrategyError(f"TF_CONFIG is not valid JSON ({err}); see lepton_nb.distributed.tf_config()") from None
    if not isinstance(cfg, dict) or "cluster" not in cfg or "task" not in cfg:
        raise StrategyError("TF_CONFIG needs 'cluster' and 'task' entries, e.g. "
                            "lepton_nb.distributed.tf_config(['127.0.0.1:2222', '127.0.0.1:2223'], 0)")
    return cfg


def _num_tasks(cfg: dict) -> int:
    return sum(len(cfg["cluster"].get(job, [])) for job in ("chief", "worker"))


def detect_hardware() -> dict:
    """What this process can see, without starting TensorFlow's runtime.

    Returns:
        dict with ``cpu_cores``, ``gpus`` (physical GPU names), ``tpu`` (the resolver argument
        :func:`strategy` would use, or ``None``), ``tpu_reason``, ``tf_config_tasks`` (tasks named
        by ``TF_CONFIG``, 0 when unset) and ``cpu_split`` (logical CPUs configured, 0 if none).
    """
    tpu, why = _tpu_hint(None)
    cfg = _tf_config()
    cpus = tf.config.list_physical_devices("CPU")
    split = tf.config.get_logical_device_configuration(cpus[0]) if cpus else None
    return Summary({
        "cpu_cores": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tpu": tpu,
        "tpu_reason": why,
        "tf_config_tasks": _num_tasks(cfg) if cfg else 0,
        "cpu_split": len(split) if split else 0,
        "tensorflow": tf.__version__,
    })


# ------------------------------------------------------------------------------------ CPU split


def split_cpu(n: int) -> list[str]:
    """Split the first physical CPU into ``n`` logical devices (at most once per process).

    Returns:
        The names of the first ``n`` logical CPU devices, e.g. ``["/device:CPU:0", "/device:CPU:1"]``.

    Raises:
        StrategyError: when TensorFlow's runtime already started in this process without the
            split (call this first, or restart the kernel / process), or when an earlier split
            made fewer devices than ``n``.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise StrategyError(f"cpu_replicas={n!r}: use a positive integer such as 2")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current:
        if len(current) < n:
            raise StrategyError(
                f"the CPU is already split into {len(current)} logical devices in this process, fewer than "
                f"cpu_replicas={n}; the split can be made only once: restart the kernel/process and call "
                f"lepton_nb.distributed.strategy(cpu_replicas={n}) (with the largest number you need) first")
    elif n > 1:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        except RuntimeError:
            raise StrategyError(
                f"cannot split the CPU into {n} logical devices: TensorFlow's runtime is already initialised "
                "in this process (some op ran or devices were listed before). Call "
                f"lepton_nb.distributed.strategy(cpu_replicas={n}) before anything else touches TensorFlow "
                "(first cell after the imports), or restart the kernel/process") from None
    return [d.name for d in tf.config.list_logical_devices("CPU")[:n]]


# ------------------------------------------------------------------------------------------ TPU


@dataclass(frozen=True)
class TPUBackend:
    """The TensorFlow calls of the TPU path, injectable so tests can exercise it without a TPU.

    Attributes:
        resolver: ``tpu -> TPUClusterResolver``.
        connect: ``resolver -> None``, connects to a remote TPU (skipped for ``tpu="local"``).
        initialize: ``resolver -> topology``, initialises the TPU system.
        make_strategy: ``resolver -> tf.distribute.Strategy``.
    """

    resolver: Callable[[str], Any] = lambda tpu: tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    connect: Callable[[Any], Any] = lambda r: tf.config.experimental_connect_to_cluster(r)
    initialize: Callable[[Any], Any] = lambda r: tf.tpu.experimental.initialize_tpu_system(r)
    make_strategy: Callable[[Any], tf.distribute.Strategy] = lambda r: tf.distribute.TPUStrategy(r)


_TPU_INITIALISED: dict[str, Any] = {}


def _tpu_strategy(tpu: str, backend: TPUBackend) -> tf.distribute.Strategy:
    try:
        resolver = backend.resolver(tpu)
    except (ValueError, RuntimeError, ImportError) as err:
        raise StrategyError(f"TPU {tpu!r} could not be resolved ({type(err).__name__}: {err}); check the TPU "
                            "name/address; on a Cloud TPU VM (TensorFlow 2.14 image) pass tpu='local'") from None
    if tpu not in _TPU_INITIALISED:  # initialising twice wipes the TPU's memory: once per process
        if tpu != "local":
            backend.connect(resolver)
        _TPU_INITIALISED[tpu] = backend.initialize(resolver)
    return backend.make_strategy(resolver)


# ------------------------------------------------------------------------------------- strategy


def strategy(
    kind: Kind = "auto",
    cpu_replicas: int | None = None,
    *,
    tpu: str | None = None,
    tpu_backend: TPUBackend | None = None,
    verbose: bool = True,
) -> tf.distribute.Strategy:
    """A :class:`tf.distribute.Strategy` for this machine, with ``.lepton_choice`` saying why.

    Args:
        kind: "auto" (TPU, several GPUs, TF_CONFIG multi-worker, ``cpu_replicas``, default, in that
            order), or one of "tpu", "gpu", "multi_worker", "cpu", "default" (an error if it is not
            available here).
        cpu_replicas: split the CPU into this many logical devices and mirror over them (implies
            ``kind="cpu"`` unless "auto" finds an accelerator or a cluster first).
        tpu: a TPU name or ``grpc://`` address, or "local"; default: detected.
        tpu_backend: the TPU calls (tests inject a fake; default: TensorFlow's).
        verbose: print the one-line choice.

    Returns:
        The strategy; ``strategy.num_replicas_in_sync`` replicas; ``choice_of(strategy)`` /
        ``strategy.lepton_choice`` is a :class:`StrategyChoice`.

    Raises:
        StrategyError: for an unknown ``kind``, an explicit kind not available here, or a CPU
            split requested after TensorFlow's runtime started.
    """
    if kind not in KINDS:
        raise StrategyError(f"kind={kind!r}: choose one of {', '.join(KINDS)}")
    if cpu_replicas is not None and (not isinstance(cpu_replicas, int) or isinstance(cpu_replicas, bool)
                                     or cpu_replicas < 1):
        raise StrategyError(f"cpu_replicas={cpu_replicas!r}: use a positive integer such as 2")
    if cpu_replicas is not None and kind not in ("auto", "cpu"):
        raise StrategyError(f"cpu_replicas={cpu_replicas} goes with kind='cpu' or 'auto', not kind={kind!r}")
    from lepton_nb.distributed.precision import precision_policy

    backend = tpu_backend or TPUBackend()
    with quiet_tf_logging():
        strat, reason, chosen = _choose(kind, cpu_replicas, tpu, backend)
    choice = StrategyChoice(chosen, reason, strat.num_replicas_in_sync, devices_of(strat),
                            precision_policy(strat, kind=chosen))
    strat.lepton_choice = choice
    if verbose:
        print(choice.line)
    return strat


def _choose(kind: str, cpu_replicas: int | None, tpu: str | None,
            backend: TPUBackend) -> tuple[tf.distribute.Strategy, str, str]:
    if kind in ("auto", "tpu"):
        address, why = _tpu_hint(tpu)
        if address is not None:
            return _tpu_strategy(address, backend), why, "tpu"
        if kind == "tpu":
            raise StrategyError(f"kind='tpu' but {why}; run on a Cloud TPU VM with a TensorFlow 2.14 image "
                                "(tpu='local'), or pass tpu='<name or grpc://address>' of a TPU this VM reaches")
    if kind in ("auto", "gpu"):
        gpus = tf.config.list_physical_devices("GPU")
        if len(gpus) >= 2 or (kind == "gpu" and gpus):
            return (tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(len(gpus))]),
                    f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} visible: mirrored with NCCL all-reduce", "gpu")
        if kind == "gpu":
            raise StrategyError("kind='gpu' but TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') "
                                "is empty); install the CUDA build of TensorFlow or use kind='auto'")
    if kind in ("auto", "multi_worker"):
        cfg = _tf_config()
        tasks = _num_tasks(cfg) if cfg else 0
        if tasks > 1:
            strat = tf.distribute.MultiWorkerMirroredStrategy()
            task = cfg["task"]
            return strat, (f"TF_CONFIG names {tasks} tasks (this is {task.get('type')} {task.get('index')}): "
                           "ring all-reduce across processes"), "multi_worker"
        if kind == "multi_worker":
            raise StrategyError("kind='multi_worker' but TF_CONFIG is " + ("unset" if cfg is None else
                                f"naming only {tasks} task") + "; set TF_CONFIG in every worker "
                                "(lepton_nb.distributed.tf_config) or start them with run_workers()")
    if kind == "cpu" or (kind == "auto" and cpu_replicas is not None):
        n = cpu_replicas or 1
        devices = split_cpu(n)
        why = (f"cpu_replicas={n}: the CPU split into {n} logical devices, mirrored (the replicas share "
               f"the same {os.cpu_count()} cores)" if n > 1 else
               "cpu_replicas=1: one CPU device through MirroredStrategy (the N-replica code path, for comparison)")
        return (tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice()),
                why, "cpu")
    if kind == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        why = "one GPU, used by the default strategy" if gpus else "no TPU, GPU, TF_CONFIG cluster or cpu_replicas"
        return tf.distribute.get_strategy(), why, "default"
    return tf.distribute.get_strategy(), "kind='default' was asked for", "default"
