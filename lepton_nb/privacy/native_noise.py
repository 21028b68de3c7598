"""DP-SGD's Gaussian noise from one fused, vectorized CPU kernel, compiled on first use.

On a CPU, drawing the noise for every weight is most of what a fast DP step costs beyond a plain
one: for the seed CNN's 804,554 weights, TensorFlow's ops (Philox uniforms, then log, sqrt, cos,
sin, each a pass over memory) take 3.0 ms of a 12.6 ms step on 2 cores. The kernel in
``native_noise.cc`` does the same in one pass, in 1.3 ms: Philox-4x32-10 (Salmon et al. 2011, the
generator of TensorFlow's own random ops), vectorized by the compiler, and the Box-Muller
transform with Eigen's vectorized log / sqrt / cos / sin, over chunks that stay in the L1 cache.

Layout (what the tests check against a NumPy reference): chunk ``c`` holds Philox blocks
``64 c .. 64 c + 63`` under counter ``(block, stream)``; the words ``(w0, w1)`` and ``(w2, w3)`` of
each block give the uniforms ``u1 = ((w >> 8) + 1) / 2^24`` in (0, 1] and ``u2 = (w >> 8) / 2^24``
in [0, 1), then ``sqrt(-2 ln u1) (cos, sin)(2 pi u2)``: draws ``256 c + [0, 64)`` are the cosines of
the first pair of the 64 blocks, ``+ [64, 128)`` their sines, then the same for the second pair.
``stream`` counts the op's calls, so no two calls share counters.

The key: unseeded (TensorFlow's global seed cleared, as :func:`lepton_nb.privacy.train_dp` does by
default) it is 64 bits read from ``/dev/urandom`` when the op's kernel is created, so nobody can regenerate
the noise; with a global seed (``DPSGDConfig(reproducible=True)``) it is the op's pair of seeds, as
for TensorFlow's random ops, and the run repeats.

Used by :func:`lepton_nb.privacy.fast_clipping.standard_normal` for float32 noise when no GPU or
TPU is visible. The library is built with the C++ compiler ``$CXX`` (default ``g++``) and
TensorFlow's own compile and link flags, ``-O3 -march=native``, into
``$LEPTON_NB_CACHE/ops`` (default ``~/.cache/lepton_nb/ops``), keyed by the source, the flags,
TensorFlow's version and the CPU: about 10 s once per machine. Without a compiler, or if the build
fails, the TensorFlow ops draw the noise (same distribution, slower) and :func:`status` says why;
``LEPTON_NB_NATIVE_NOISE=0`` turns the kernel off.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import tensorflow as tf

__all__ = ["compiler", "gaussian_noise", "library", "status"]

SOURCE = Path(__file__).with_name("native_noise.cc")
_OPTIMIZE = ["-O3", "-march=native"]
_log = logging.getLogger(__name__)


def _cpu_signature() -> str:
    """The CPU model and flags (``-march=native`` code runs only where they match)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return platform.processor() or platform.machine()


def _build(compiler: str) -> Path:
    """Compile ``native_noise.cc`` into the cache (once per source, flags, TensorFlow and CPU)."""
    from lepton_nb.settings import cache_dir

    flags = ["-shared", "-fPIC", *_OPTIMIZE, *tf.sysconfig.get_compile_flags()]
    link = tf.sysconfig.get_link_flags()
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *flags, *link, tf.__version__, _cpu_signature(),
                                    compiler]).encode()).hexdigest()[:16]
    out = cache_dir("ops") / f"native_noise-{key}.so"
    if out.exists():
        return out
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp, *link], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode:
            raise RuntimeError(f"{compiler} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        os.replace(tmp, out)  # atomic: a concurrent build never loads a half-written library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


_loaded = None  # this process's op library
_status = "not loaded yet"  # what library() found, for status()


def _load(path: str):
    """``tf.load_op_library`` once per process. TensorFlow registers the op globally, and loading any
    second file with the same op (another cache directory, or the same file again) returns a module
    without its wrapper, so the first library loaded serves every later call."""
    global _loaded
    if _loaded is None:
        _loaded = tf.load_op_library(path)
    return _loaded


def compiler() -> str | None:
    """The path of the C++ compiler that builds the library, ``$CXX`` (default ``g++``), or ``None``."""
    return shutil.which(os.environ.get("CXX") or "g++")


@functools.cache
def library():
    """The loaded op library, or ``None`` when it is turned off or cannot be built (see :func:`status`)."""
    global _status
    if os.environ.get("LEPTON_NB_NATIVE_NOISE", "1") == "0":
        _status = "off (LEPTON_NB_NATIVE_NOISE=0): TensorFlow's ops draw the noise"
        return None
    cxx = compiler()
    if cxx is None:
        _status = ("no C++ compiler (set CXX, or on Debian/Ubuntu: apt-get install g++): TensorFlow's ops draw "
                   "the noise, same distribution, slower")
        _log.warning("lepton_nb native noise: %s", _status)
        return None
    try:
        lib = _load(str(_build(cxx)))
    except Exception as err:  # a failed build must not stop training: the TensorFlow path is exact too
        _status = f"build or load failed, TensorFlow's ops draw the noise: {err}"
        _log.warning("lepton_nb native noise: %s", _status)
        return None
    _status = "native kernel (fused Philox-4x32-10 + Box-Muller)"
    return lib


def status() -> str:
    """Which sampler draws the float32 noise on a CPU, and why (after :func:`library` was tried)."""
    library()
    return _status


def _accelerator_visible() -> bool:
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def gaussian_noise(n: int, scale=1.0) -> tf.Tensor | None:
    """``n`` float32 draws of N(0, scale^2) from the native kernel, or ``None`` when it is not used
    (turned off, not buildable, or a GPU / TPU is visible: their own generators are faster there).

    The op's seeds follow TensorFlow's global seed as ``tf.random.uniform``'s do
    (``tf.compat.v1.get_seed``); without one, its key comes from the OS.
    """
    if _accelerator_visible():
        return None
    lib = library()
    if lib is None:
        return None
    seed, seed2 = tf.compat.v1.get_seed(None)
    return lib.lepton_gaussian_noise(tf.constant(n, tf.int64), tf.cast(scale, tf.float32),
                                     seed=seed or 0, seed2=seed2 or 0)
