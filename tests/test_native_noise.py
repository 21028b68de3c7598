"""The native noise kernel (lepton_nb.privacy.native_noise) against a NumPy reference of Philox-4x32-10
and Box-Muller, the generator against Random123's answers and TensorFlow's own Philox, its keys and
streams, and its fallbacks. The kernel is built here when the machine has a C++ compiler; without
one, the tests of the kernel are skipped (saying so) and the fallback is still tested."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from lepton_nb.privacy import fast_clipping as fc
from lepton_nb.privacy import native_noise

MASK = np.uint64(0xFFFFFFFF)


def philox(ctr, key):
    """NumPy Philox-4x32-10: ctr, four arrays of uint32 words; key, two uint32 words."""
    c0, c1, c2, c3 = (np.asarray(w, np.uint64) for w in ctr)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0, p1 = np.uint64(0xD2511F53) * c0, np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & MASK, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & MASK
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & MASK, (k1 + np.uint64(0xBB67AE85)) & MASK
    return [w.astype(np.uint32) for w in (c0, c1, c2, c3)]


def reference_noise(n, key, stream, scale=1.0):
    """The kernel's draws by the layout in native_noise's docstring, in float64."""
    chunks = -(-n // 256)
    block = np.arange(chunks * 64, dtype=np.uint64)
    w = philox([block & MASK, block >> np.uint64(32), np.full_like(block, stream & 0xFFFFFFFF),
                np.full_like(block, stream >> 32)], key)
    out = []
    for a, b in ((w[0], w[1]), (w[2], w[3])):
        r = scale * np.sqrt(-2 * np.log(((a >> 8).astype(np.float64) + 1) / 2**24))
        t = 2 * np.pi * (b >> 8).astype(np.float64) / 2**24
        out.append((r * np.cos(t)).reshape(chunks, 64))
        out.append((r * np.sin(t)).reshape(chunks, 64))
    return np.stack(out, axis=1).reshape(-1)[:n]


@pytest.fixture(scope="module")
def lib():
    if native_noise.compiler() is None:
        pytest.skip("no C++ compiler ($CXX, default g++) on this machine (apt-get install g++, or set CXX): the "
                    "kernel cannot be built, and the product falls back to TensorFlow's ops (tested below)")
    lib = native_noise.library()
    assert lib is not None, native_noise.status()
    return lib


def test_reference_philox_matches_random123_and_tensorflow():
    """The reference itself: Random123's known answers, and TensorFlow's stateless Philox."""
    assert [int(v[0]) for v in philox([[0]] * 4, (0, 0))] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    ctr, key = [[0x243F6A88], [0x85A308D3], [0x13198A2E], [0x03707344]], (0xA4093822, 0x299F31D0)
    assert [int(v[0]) for v in philox(ctr, key)] == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]
    rng = np.random.default_rng(0)
    for _ in range(5):
        k, c0, c1 = (int(v) for v in rng.integers(0, 2**63, 3, dtype=np.uint64))
        tf_words = tf.raw_ops.StatelessRandomUniformFullIntV2(
            shape=[4], key=tf.constant([k], tf.uint64), counter=tf.constant([c0, c1], tf.uint64), alg=1,
            dtype=tf.uint32).numpy()
        ours = philox([[c0 & 0xFFFFFFFF], [c0 >> 32], [c1 & 0xFFFFFFFF], [c1 >> 32]], (k & 0xFFFFFFFF, k >> 32))
        assert [int(v[0]) for v in ours] == tf_words.tolist()


def test_kernel_draws_the_documented_philox_box_muller_values(lib):
    """Seeded: every draw of two successive calls (streams 0 and 1) equals the reference, for sizes that
    end inside a chunk; a broken control (the second call's stream taken as 0) does not match."""
    op = tf.function(lambda n: lib.lepton_gaussian_noise(n, 2.5, seed=123, seed2=456))
    first, second = op(tf.constant(1000, tf.int64)).numpy(), op(tf.constant(777, tf.int64)).numpy()
    assert first.shape == (1000,) and second.shape == (777,) and first.dtype == np.float32
    np.testing.assert_allclose(first, reference_noise(1000, (123, 456), 0, 2.5), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(second, reference_noise(777, (123, 456), 1, 2.5), rtol=2e-5, atol=2e-5)
    assert not np.allclose(second, reference_noise(777, (123, 456), 0, 2.5), atol=1e-3)
    assert op(tf.constant(0, tf.int64)).numpy().shape == (0,)


def test_unseeded_kernel_is_standard_normal_and_keyed_by_the_os(lib):
    """Unseeded: N(0, 1) by Kolmogorov-Smirnov, moments, 3-sigma tails and pairs uncorrelated; two ops
    draw different values (their keys come from /dev/urandom), and so do two calls of one op."""
    op = tf.function(lambda: lib.lepton_gaussian_noise(tf.constant(400_128, tf.int64), 1.0))
    z, z_next = op().numpy().astype(np.float64), op().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01 and abs(stats.kurtosis(z, fisher=False) - 3) < 0.05
    assert abs(np.mean(np.abs(z) > 3) - 2 * stats.norm.sf(3)) < 5e-4
    blocks = z.reshape(-1, 4, 64)  # cosine and sine of one pair, and the block's two pairs
    for i, j in ((0, 1), (0, 2), (1, 3)):
        assert abs(np.corrcoef(blocks[:, i].ravel(), blocks[:, j].ravel())[0, 1]) < 0.01
    other = tf.function(lambda: lib.lepton_gaussian_noise(tf.constant(400_128, tf.int64), 1.0))().numpy()
    assert np.isclose(z, other).mean() < 1e-3 and np.isclose(z, z_next).mean() < 1e-3


def test_standard_normal_uses_the_kernel_and_follows_the_global_seed(lib):
    """``standard_normal`` draws float32 noise from the kernel; a global seed repeats it, none does not;
    ``native=False`` and other dtypes take TensorFlow's ops."""
    assert native_noise.status().startswith("native kernel")
    graph = tf.function(lambda: fc.standard_normal(1000)).get_concrete_function().graph
    assert "LeptonGaussianNoise" in {op.type for op in graph.get_operations()}
    graph = tf.function(lambda: fc.standard_normal(1000, native=False)).get_concrete_function().graph
    assert "LeptonGaussianNoise" not in {op.type for op in graph.get_operations()}
    graph = tf.function(lambda: fc.standard_normal(1000, tf.float64)).get_concrete_function().graph
    assert "LeptonGaussianNoise" not in {op.type for op in graph.get_operations()}

    def draw():
        return tf.function(lambda: fc.standard_normal(500, scale=3.0))().numpy()

    tf.random.set_seed(7)
    a = draw()
    tf.random.set_seed(7)
    b = draw()
    tf.random.set_seed(None)
    c = draw()
    np.testing.assert_array_equal(a, b)
    assert not np.isclose(a, c).any()


def test_without_the_kernel_the_tensorflow_ops_draw_the_noise(monkeypatch, tmp_path):
    """Turned off, or a compiler that fails: ``library()`` is None, ``status()`` says why, and
    ``standard_normal`` still draws N(0, 1) with TensorFlow's ops."""
    try:
        for env, expected in ((("LEPTON_NB_NATIVE_NOISE", "0"), "off"),
                              (("CXX", "false"), "build or load failed"),
                              (("CXX", str(tmp_path / "no-such-compiler")), "no C++ compiler")):
            with monkeypatch.context() as m:
                m.setenv("LEPTON_NB_CACHE", str(tmp_path / "cache"))
                m.setenv(*env)
                native_noise.library.cache_clear()
                assert native_noise.library() is None and native_noise.status().startswith(expected)
                graph = tf.function(lambda: fc.standard_normal(1000)).get_concrete_function().graph
                assert "LeptonGaussianNoise" not in {op.type for op in graph.get_operations()}
                assert stats.kstest(fc.standard_normal(100_000).numpy(), "norm").pvalue > 1e-3
    finally:
        native_noise.library.cache_clear()


def test_kernel_builds_from_source_into_the_cache_once(lib, monkeypatch, tmp_path):
    """A real build into an empty cache (as on a new machine); the second call reuses the library. With
    the kernel already loaded from another cache directory, ``library()`` still has the op's wrapper
    (a second ``tf.load_op_library`` of the same op returns a module without it)."""
    assert lib is not None  # loaded from the default cache first
    compiler = native_noise.compiler()
    monkeypatch.setenv("LEPTON_NB_CACHE", str(tmp_path))
    built = native_noise._build(compiler)
    assert built.parent == tmp_path / "ops" and built.stat().st_size > 10_000
    assert [p.name for p in (tmp_path / "ops").iterdir()] == [built.name]  # no temporary file left behind
    mtime = built.stat().st_mtime_ns
    assert native_noise._build(compiler) == built and built.stat().st_mtime_ns == mtime
    try:
        native_noise.library.cache_clear()
        assert hasattr(native_noise.library(), "lepton_gaussian_noise")
    finally:
        native_noise.library.cache_clear()
