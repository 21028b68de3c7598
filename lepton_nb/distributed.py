"""Distribution strategies from a laptop to TPU pods: choose one, say why, set the precision.

:func:`strategy` returns a real :class:`tf.distribute.Strategy` and attaches a
:class:`StrategyChoice` (``strategy.lepton_choice``, also :func:`choice_of`) saying what was
chosen and why. ``kind="auto"`` tries, in order:

1. **TPU** (``TPUStrategy`` via ``TPUClusterResolver``): an explicit ``tpu=`` name or address,
   ``COLAB_TPU_ADDR`` (older Colab TPU nodes, ``grpc://<addr>``), ``TPU_NAME`` (a named TPU seen
   from a cloud VM), or a TPU attached to this VM (``/dev/accel*``, ``/dev/vfio``,
   ``TPU_ACCELERATOR_TYPE``: ``tpu="local"``, as on Colab TPU VMs). The TPU system is
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

Mixed precision (Micikevicius et al. 2018, "Mixed Precision Training"): :func:`precision_policy`
picks ``mixed_bfloat16`` on TPU, ``mixed_float16`` on GPU (Keras wraps the optimizer in a
``LossScaleOptimizer`` when it compiles such a model) and ``float32`` on CPU;
:func:`float32_logits` keeps the output layer in float32.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import tensorflow as tf

from lepton_nb.config import DataConfig, Mode, TrainConfig, mode
from lepton_nb.reports import Summary

__all__ = [
    "DistributedConfig",
    "InterruptAtEpoch",
    "Interrupted",
    "ResumeDemo",
    "StrategyChoice",
    "StrategyError",
    "TPUBackend",
    "WorkerResult",
    "choice_of",
    "compare",
    "comparison_markdown",
    "comparison_strategies",
    "comparison_table",
    "config",
    "detect_hardware",
    "float32_logits",
    "interrupt_and_resume",
    "precision_policy",
    "precision_scope",
    "quiet_tf_logging",
    "resume_markdown",
    "run_summary",
    "run_workers",
    "split_cpu",
    "strategy",
    "tf_config",
]

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
    found = getattr(strat, "lepton_choice", None)
    if found is not None:
        return found
    return StrategyChoice(_kind_of(strat), "built outside lepton_nb.distributed.strategy",
                          strat.num_replicas_in_sync, _devices(strat), precision_policy(strat))


def _devices(strat: tf.distribute.Strategy) -> tuple[str, ...]:
    try:
        return tuple(strat.extended.worker_devices)
    except RuntimeError:  # the default strategy: whatever device TensorFlow places ops on
        gpus = tf.config.list_physical_devices("GPU")
        return ("/device:GPU:0",) if gpus else ("/device:CPU:0",)


def _kind_of(strat: tf.distribute.Strategy) -> str:
    if isinstance(strat, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)):
        return "tpu"
    if isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    devices = [d.upper() for d in _devices(strat)]
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
                            "name/address, or on Colab choose Runtime > Change runtime type > TPU") from None
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
    backend = tpu_backend or TPUBackend()
    with quiet_tf_logging():
        strat, reason, chosen = _choose(kind, cpu_replicas, tpu, backend)
    choice = StrategyChoice(chosen, reason, strat.num_replicas_in_sync, _devices(strat),
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
            raise StrategyError(f"kind='tpu' but {why}; on Colab choose Runtime > Change runtime type > TPU, "
                                "or pass tpu='<name or grpc://address>'")
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


# ---------------------------------------------------------------------------- mixed precision


def precision_policy(strat: tf.distribute.Strategy | None = None, *, kind: str | None = None) -> str:
    """The Keras mixed-precision policy suited to ``strat``'s devices.

    ``mixed_bfloat16`` on TPU (bfloat16 has float32's range, no loss scaling needed),
    ``mixed_float16`` on GPU (Keras adds dynamic loss scaling at compile), ``float32`` on CPU.
    """
    kind = kind or _kind_of(strat or tf.distribute.get_strategy())
    if kind == "tpu":
        return "mixed_bfloat16"
    devices = " ".join(_devices(strat or tf.distribute.get_strategy())).upper()
    if kind == "gpu" or ":GPU:" in devices:
        return "mixed_float16"
    if kind == "default" and tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "float32"


@contextlib.contextmanager
def precision_scope(policy: str | None) -> Iterator[str]:
    """Set Keras' global dtype policy while models are built inside, then restore the previous one.

    ``policy``: "float32", "mixed_float16", "mixed_bfloat16" (``None`` leaves the policy alone).
    """
    from tensorflow.keras import mixed_precision as mp

    allowed = ("float32", "mixed_float16", "mixed_bfloat16")
    if policy is not None and policy not in allowed:
        raise ValueError(f"mixed precision policy {policy!r}: choose one of {', '.join(allowed)}")
    previous = mp.global_policy()
    if policy is not None:
        mp.set_global_policy(policy)
    try:
        yield mp.global_policy().name
    finally:
        mp.set_global_policy(previous)


def float32_logits(model: tf.keras.Model) -> tf.keras.Model:
    """``model`` with float32 outputs: a float32 linear activation appended if the output is not float32.

    Softmax / cross-entropy in float16 overflow easily; the Keras mixed-precision guide keeps the
    last layer in float32. Input (B, ...), output (B, classes) float32 logits.
    """
    if model.output.dtype == tf.float32:
        return model
    out = tf.keras.layers.Activation("linear", dtype="float32", name="logits_float32")(model.output)
    return tf.keras.Model(model.inputs, out, name=model.name)


# --------------------------------------------------------------------------- multi-worker runs


def tf_config(workers: Sequence[str], index: int) -> str:
    """The ``TF_CONFIG`` JSON of worker ``index`` in a cluster of ``workers`` ("host:port")."""
    if not 0 <= index < len(workers):
        raise ValueError(f"worker index {index} outside 0..{len(workers) - 1}")
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})


@dataclass
class WorkerResult:
    """One worker process of :func:`run_workers`."""

    index: int
    pid: int
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


def run_workers(
    argv: Sequence[str],
    num_workers: int = 2,
    *,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
) -> list[WorkerResult]:
    """Run ``num_workers`` copies of ``argv`` as a ``MultiWorkerMirroredStrategy`` cluster on ``host``.

    Each process gets free ports (portpicker) in its ``TF_CONFIG`` and ``LEPTON_NB_WORKER=<index>``;
    all are killed (their whole process group, SIGKILL) when the first one fails, when
    ``timeout`` seconds pass, or on any error: none is left behind.

    Returns:
        One :class:`WorkerResult` per worker, in index order.

    Raises:
        TimeoutError: when the cluster did not finish within ``timeout`` (stderr tails included;
            ``err.pids`` lists the killed processes).
    """
    import portpicker

    if num_workers < 1:
        raise ValueError(f"num_workers={num_workers}: need at least one worker")
    ports = [portpicker.pick_unused_port() for _ in range(num_workers)]
    addresses = [f"{host}:{p}" for p in ports]
    procs: list[subprocess.Popen] = []
    outs: list[tuple[Any, Any]] = []
    t0 = time.perf_counter()
    try:
        for i in range(num_workers):
            worker_env = {**os.environ, **(env or {}), "TF_CONFIG": tf_config(addresses, i),
                          "LEPTON_NB_WORKER": str(i)}
            out, err = _tempfile(), _tempfile()
            outs.append((out, err))
            procs.append(subprocess.Popen(list(argv), env=worker_env, cwd=cwd, stdout=out, stderr=err,
                                          start_new_session=True))
        done: dict[int, float] = {}
        while len(done) < num_workers:
            if time.perf_counter() - t0 > timeout:
                tails = "\n".join(f"--- worker {i} stderr ---\n{_tail(outs[i][1])}" for i in range(num_workers))
                err = TimeoutError(f"multi-worker run did not finish within {timeout:.0f} s\n{tails}")
                err.pids = [p.pid for p in procs]
                raise err
            for i, p in enumerate(procs):
                if i not in done and p.poll() is not None:
                    done[i] = time.perf_counter() - t0
                    if p.returncode != 0:  # the others would wait for it forever
                        for q in procs:
                            _kill(q)
            time.sleep(0.05)
        return [WorkerResult(i, procs[i].pid, procs[i].returncode, _read(outs[i][0]), _read(outs[i][1]), done[i])
                for i in range(num_workers)]
    finally:
        for p in procs:
            _kill(p)
        for out, err in outs:
            out.close()
            err.close()
        for p in ports:
            with contextlib.suppress(Exception):
                portpicker.return_port(p)


def _tempfile():
    import tempfile

    return tempfile.TemporaryFile(mode="w+")


def _read(f) -> str:
    f.flush()
    f.seek(0)
    return f.read()


def _tail(f, lines: int = 15) -> str:
    return "\n".join(_read(f).splitlines()[-lines:])


def _kill(p: subprocess.Popen) -> None:
    """SIGKILL ``p``'s process group (it was started in its own session) and reap it."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.wait(timeout=10)


# ------------------------------------------------------------------------ comparisons and resume


def compare(build: Callable[[], tf.keras.Model], data, cfg: TrainConfig,
            strategies: dict[str, tf.distribute.Strategy | None], **train_kwargs) -> dict:
    """Train the same model under each strategy with the same global batch, seed and data.

    Args:
        build: a function returning a fresh logits model.
        data: the :class:`~lepton_nb.data.Dataset`.
        cfg: training settings; ``cfg.batch_size`` is the global batch of every run.
        strategies: ``{label: strategy}`` (``None``: the default strategy).
        train_kwargs: passed on to :func:`lepton_nb.training.train` (``data_cfg``, ``mixed_precision``...).

    Returns:
        ``{label: TrainResult}`` in the given order.
    """
    from lepton_nb.training import train

    return {label: train(build, data, cfg, strategy=strat, name=label, **train_kwargs)
            for label, strat in strategies.items()}


def comparison_strategies(main: tf.distribute.Strategy, cpu_replicas: int = 2) -> dict:
    """The runs notebook 02 compares: 1 replica, ``cpu_replicas`` CPU replicas, and ``main`` when it
    is an accelerator or a cluster (TPU, GPUs, multi-worker). Call after ``strategy(cpu_replicas=N)``."""
    out = {"1 replica": strategy("cpu", 1, verbose=False),
           f"{cpu_replicas} CPU replicas": strategy("cpu", cpu_replicas, verbose=False)}
    kind = choice_of(main).kind
    if kind in ("tpu", "gpu", "multi_worker"):
        out[f"{kind} x{main.num_replicas_in_sync}"] = main
    return out


def run_summary(result) -> dict:
    """A ``TrainResult``'s report figures plus replicas, global batch, precision and images/s."""
    d = result.distribution
    return {**result.summary(), "strategy": d["strategy"], "replicas": d["replicas"],
            "global_batch": d["global_batch"], "precision": d["precision"],
            "images_per_s": round(result.images_per_second(), 1)}


def comparison_markdown(results: dict) -> str:
    """One paragraph on :func:`compare`'s runs, every number taken from ``results``."""
    labels = list(results)
    first = results[labels[0]]
    base = first.images_per_second()
    parts = []
    for label in labels:
        r = results[label]
        ips = r.images_per_second()
        acc = f", test accuracy {100 * r.report['accuracy']:.1f} %" if r.report else ""
        parts.append(f"**{label}** trained at {ips:,.0f} images/s ({ips / base:.2f}x {labels[0]}){acc}")
    text = "; ".join(parts) + "."
    if len(labels) > 1 and first.report:
        gap = max(abs(results[k].report["accuracy"] - first.report["accuracy"]) for k in labels[1:]) * 100
        text += (f" Accuracies differ by at most {gap:.1f} points: with the same global batch the replicas "
                 "compute the same averaged gradient, so the model is the same up to float rounding.")
    cores = os.cpu_count()
    text += (f" On {cores} CPU cores, logical CPU replicas share the same cores, so a speed-up is not expected "
             "there: they exercise the all-reduce code path that GPUs, TPUs and several machines use.")
    return text


def resume_markdown(demo: "ResumeDemo") -> str:
    """One paragraph on :func:`interrupt_and_resume`'s outcome, numbers from ``demo``."""
    s = demo.summary()
    same = "the same" if s["max_weight_diff"] == 0 else f"within {s['max_weight_diff']:.1e} of the"
    return (f"The first run was stopped after {s['completed_before_interruption']} completed epochs. Restarted "
            f"with the same backup folder, it resumed at epoch {s['resumed_at_epoch']} and ran "
            f"{s['epochs_after_resume']} more, {s['total_epochs']} in total like the uninterrupted run "
            f"({s['reference_epochs']} epochs), and ended with {same} weights "
            f"(final loss {s['final_loss_resumed']} vs {s['final_loss_reference']}).")


def comparison_table(results: dict) -> "Any":
    """A pandas table of :func:`compare`'s runs: replicas, batches, images/s, speed-up, accuracy."""
    import pandas as pd

    rows = []
    base = None
    for label, r in results.items():
        ips = r.images_per_second()
        base = base or ips
        d = r.distribution
        rows.append({"run": label, "strategy": d["strategy"], "replicas": d["replicas"],
                     "global batch": d["global_batch"], "per-replica batch": d["per_replica_batch"],
                     "precision": d["precision"], "images/s": round(ips, 1),
                     "vs first": round(ips / base, 2), "epochs": r.epochs_run,
                     "final loss": round(r.history["loss"][-1], 4),
                     "test accuracy %": round(100 * r.report["accuracy"], 2) if r.report else None})
    return pd.DataFrame(rows).set_index("run")


class Interrupted(RuntimeError):
    """Raised by :class:`InterruptAtEpoch` to stand in for a crash or preemption."""


class InterruptAtEpoch(tf.keras.callbacks.Callback):
    """Stops training by raising :class:`Interrupted` when epoch ``epoch`` (0-based) begins."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupted(f"interrupted at the start of epoch {epoch}")


@dataclass
class ResumeDemo:
    """What :func:`interrupt_and_resume` measured.

    Attributes:
        completed_before: epochs completed before the interruption.
        resumed: the run restarted from the backup (its history lists only the epochs it ran).
        reference: an uninterrupted run with the same seed and settings.
        max_weight_diff: largest absolute difference between the final weights of the two.
    """

    completed_before: int
    resumed: Any
    reference: Any
    max_weight_diff: float

    @property
    def total_epochs(self) -> int:
        return self.completed_before + self.resumed.epochs_run

    def summary(self) -> dict:
        return Summary({"completed_before_interruption": self.completed_before,
                        "resumed_at_epoch": self.resumed.distribution["resumed_at_epoch"],
                        "epochs_after_resume": self.resumed.epochs_run, "total_epochs": self.total_epochs,
                        "reference_epochs": self.reference.epochs_run,
                        "final_loss_resumed": round(self.resumed.history["loss"][-1], 5),
                        "final_loss_reference": round(self.reference.history["loss"][-1], 5),
                        "max_weight_diff": self.max_weight_diff})


def interrupt_and_resume(build: Callable[[], tf.keras.Model], data, cfg: TrainConfig, workdir: str | os.PathLike,
                         *, interrupt_at: int, strategy: tf.distribute.Strategy | None = None,
                         **train_kwargs) -> ResumeDemo:
    """Interrupt a run when epoch ``interrupt_at`` begins, restart it from its backup, and compare.

    The interruption is an exception raised inside ``fit`` (in-process, so notebooks can show it);
    the tests do the same with a real process killed by SIGKILL. The restarted run must resume at
    epoch ``interrupt_at`` and end with the weights of an uninterrupted run (exactly for models
    without dropout or augmentation, whose random draws a backup does not hold).
    """
    import numpy as np

    from lepton_nb.training import train

    if not 0 < interrupt_at < cfg.epochs:
        raise ValueError(f"interrupt_at={interrupt_at}: must lie strictly between 0 and cfg.epochs={cfg.epochs}")
    workdir = Path(workdir)
    backup, ref_backup = workdir / "backup", workdir / "reference_backup"
    for d in (backup, ref_backup):
        if d.exists():
            raise ValueError(f"{d} exists from an earlier run; use an empty workdir (e.g. tempfile.mkdtemp())")
    try:
        train(build, data, cfg, strategy=strategy, backup_dir=backup, callbacks=[InterruptAtEpoch(interrupt_at)],
              evaluate_test=False, **train_kwargs)
        raise RuntimeError("the interruption did not happen")  # pragma: no cover
    except Interrupted:
        pass
    resumed = train(build, data, cfg, strategy=strategy, backup_dir=backup, **train_kwargs)
    reference = train(build, data, cfg, strategy=strategy, backup_dir=ref_backup, **train_kwargs)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(resumed.model.get_weights(), reference.model.get_weights()))
    return ResumeDemo(interrupt_at, resumed, reference, diff)


# --------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class DistributedConfig:
    """Notebook 02: strategies, the 1-vs-N-replica comparison, resume and export.

    Attributes:
        kind: the strategy of the main run ("auto": TPU, GPUs, TF_CONFIG, else default).
        cpu_replicas: logical CPU devices for the comparison (split first thing in the process).
        per_replica_batch: examples per replica per step; global batch = this x replicas.
        lr_scaling: how the learning rate follows the global batch (see ``training.train``).
        mixed_precision: use the device's mixed-precision policy (float32 on CPU).
        jit_compile: compile the train step with XLA.
        steps_per_execution: train steps per ``tf.function`` call off TPU.
        tpu_steps_per_execution: the same on a TPU, where host round trips dominate.
        interrupt_at_epoch: the resume demo stops the first run when this epoch starts.
    """

    mode: Mode = "default"
    data: DataConfig = field(default_factory=lambda: DataConfig(validation_fraction=0.1))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, batch_size=64, verbose=0,
                                                                   early_stopping_patience=None, tensorboard=False))
    kind: Kind = "auto"
    cpu_replicas: int = 2
    per_replica_batch: int = 64
    lr_scaling: Literal["none", "linear", "sqrt"] = "sqrt"
    mixed_precision: bool = True
    jit_compile: bool = False
    steps_per_execution: int = 1
    tpu_steps_per_execution: int = 50
    compare_epochs: int = 4
    resume_epochs: int = 4
    interrupt_at_epoch: int = 2
    min_accuracy: float = 0.85
    max_accuracy_gap: float = 0.02

    def steps_for(self, strat: tf.distribute.Strategy) -> int:
        """``tpu_steps_per_execution`` on a TPU (host round trips dominate there), else ``steps_per_execution``."""
        return self.tpu_steps_per_execution if choice_of(strat).kind == "tpu" else self.steps_per_execution

    def __post_init__(self) -> None:
        if self.cpu_replicas < 1 or self.per_replica_batch < 1 or self.steps_per_execution < 1:
            raise ValueError("DistributedConfig: cpu_replicas, per_replica_batch and steps_per_execution must be >= 1")
        if not 0 < self.interrupt_at_epoch < self.resume_epochs:
            raise ValueError(f"DistributedConfig.interrupt_at_epoch={self.interrupt_at_epoch}: must lie strictly "
                             f"between 0 and resume_epochs={self.resume_epochs}")


def config(which: Mode | None = None) -> DistributedConfig:
    """Settings of notebook 02 for ``which`` mode (default: the environment's mode)."""
    which = which or mode()
    if which == "smoke":
        return DistributedConfig(
            mode="smoke", data=DataConfig(max_train=640, max_test=300, validation_fraction=0.1),
            train=TrainConfig(epochs=2, batch_size=64, early_stopping_patience=None, verbose=0, tensorboard=False),
            compare_epochs=2, resume_epochs=3, interrupt_at_epoch=1)
    if which == "full":
        return DistributedConfig(
            mode="full", data=DataConfig(full=True, validation_fraction=0.1),
            train=TrainConfig(epochs=15, batch_size=128, early_stopping_patience=None, verbose=0, tensorboard=False),
            per_replica_batch=128, compare_epochs=5, resume_epochs=5, interrupt_at_epoch=3, min_accuracy=0.90)
    if which != "default":
        raise ValueError(f"mode {which!r}: choose 'smoke', 'default' or 'full'")
    return DistributedConfig()
