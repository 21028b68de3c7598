"""Property test of the fast clipping path: random layer configurations, float64, exact or refused.

For every drawn configuration a tiny model is built around the layer under test (then Flatten or
pooling and a Dense logits layer), and on a small random batch the fast path's per-example
gradient norms and clipped sum (:func:`lepton_nb.privacy.fast_clipping.clipped_gradient_sum`,
book-keeping and second-backward variants alternating) must equal a per-example
``tf.GradientTape`` loop, or ``check_dp_model`` must refuse the model, naming the layer and a fix,
before any training. Draws come from a seeded numpy generator (reproducible; no hypothesis).
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

import tensorflow as tf

from lepton_nb.privacy import fast_clipping as fc

L = tf.keras.layers
DRAWS = 240  # configurations per run (the issue asks for at least 200 checked)
CLASSES = 3
RTOL = 1e-7
BRANCHES = 3  # layer configurations per test model


@pytest.fixture()
def float64():
    """Build models in float64 (the policy too: once any code set a global policy, floatx is ignored)."""
    policy = tf.keras.mixed_precision.global_policy()
    tf.keras.backend.set_floatx("float64")
    tf.keras.mixed_precision.set_global_policy("float64")
    yield
    tf.keras.mixed_precision.set_global_policy(policy)
    tf.keras.backend.set_floatx("float32")


# ------------------------------------------------------------------------------------- the draws


def _conv(rng):
    h, w, cin = (int(v) for v in (*rng.integers(3, 8, 2), rng.integers(1, 5)))
    kernel = tuple(int(v) for v in rng.integers(1, 4, 2))
    dilated = rng.random() < 0.4
    strides = (1, 1) if dilated else tuple(int(v) for v in rng.integers(1, 4, 2))
    dilation = tuple(int(v) for v in rng.integers(1, 4, 2)) if dilated else (1, 1)
    cfg = dict(kind="conv2d", input=(h, w, cin), filters=int(rng.integers(1, 9)), kernel_size=kernel,
               strides=strides, dilation_rate=dilation, padding=str(rng.choice(["same", "valid"])),
               use_bias=bool(rng.random() < 0.5), activation=str(rng.choice(["linear", "tanh"])))
    for k, (size, dil) in enumerate(zip((h, w), dilation)):
        if cfg["padding"] == "valid" and size < dil * (kernel[k] - 1) + 1:
            return None  # Keras rejects it (no output position): not a configuration
    if rng.random() < 0.06 and cin > 1:  # grouped convolution: refused
        cfg.update(groups=cin, filters=cin * int(rng.integers(1, 3)), refuse="groups=1 only")
    return cfg


def _dense(rng):
    extra = [] if rng.random() < 0.5 else [int(v) for v in rng.integers(1, 5, int(rng.integers(1, 3)))]
    cfg = dict(kind=f"dense{2 + len(extra)}d", input=tuple(extra) + (int(rng.integers(1, 7)),),
               units=int(rng.integers(1, 6)), use_bias=bool(rng.random() < 0.7),
               activation=str(rng.choice(["linear", "tanh", "relu"])))
    if rng.random() < 0.04:  # activity regularization reads the data: refused
        cfg.update(activity_regularizer="l2", refuse="activity_regularizer")
    return cfg


def _group_norm(rng):
    c = int(rng.choice([1, 2, 3, 4, 6]))
    groups = int(rng.choice([g for g in range(1, c + 1) if c % g == 0]))
    rank = int(rng.choice([1, 2]))  # positions: (T,) or (H, W)
    cfg = dict(kind="groupnorm", input=tuple(int(v) for v in rng.integers(1, 5, rank)) + (c,), groups=groups,
               center=bool(rng.random() < 0.7), scale=bool(rng.random() < 0.7),
               epsilon=float(rng.choice([1e-3, 1e-5])), conv_before=bool(rank == 2 and rng.random() < 0.5))
    if not (cfg["center"] or cfg["scale"]):
        cfg["center"] = True  # without weights it is no configuration of the fast path
    if rng.random() < 0.05 and rank == 2 and c > 1:
        cfg.update(axis=1, groups=1, refuse="axis=-1 only")
    return cfg


def _embedding(rng):
    return dict(kind="embedding", input=(int(rng.integers(1, 6)),), input_dim=int(rng.integers(2, 7)),
                output_dim=int(rng.integers(1, 5)), mask_zero=bool(rng.random() < 0.4),
                pool=bool(rng.random() < 0.5))


DRAW = {"conv2d": _conv, "dense": _dense, "groupnorm": _group_norm, "embedding": _embedding}
SHARE = {"conv2d": 0.4, "dense": 0.25, "groupnorm": 0.2, "embedding": 0.15}


def _configs(n: int, seed: int = 20240612):
    rng = np.random.default_rng(seed)
    kinds, p = list(SHARE), list(SHARE.values())
    out = []
    while len(out) < n:
        cfg = DRAW[str(rng.choice(kinds, p=p))](rng)
        if cfg is not None:
            cfg["batch"] = int(rng.integers(1, 6))
            cfg["clip"] = str(rng.choice(["median", "median", "tiny", "huge"]))
            cfg["seed"] = int(rng.integers(0, 2**31))
            out.append(cfg)
    return out


# ----------------------------------------------------------------------------------- the models


def _branch(cfg: dict, k: int):
    """``(input, features (B, F))`` of the layer under test, named ``under_test_<k>``."""
    tf.keras.utils.set_random_seed(cfg["seed"])
    kind, name = cfg["kind"], f"under_test_{k}"
    if kind == "embedding":
        inp = tf.keras.Input(cfg["input"], dtype="int32")
        h = L.Embedding(cfg["input_dim"], cfg["output_dim"], mask_zero=cfg["mask_zero"], name=name)(inp)
        return inp, L.GlobalAveragePooling1D()(h) if cfg["pool"] else L.Flatten()(h)  # pooling reads the mask
    inp = tf.keras.Input(cfg["input"])
    if kind == "conv2d":
        h = L.Conv2D(cfg["filters"], cfg["kernel_size"], strides=cfg["strides"], padding=cfg["padding"],
                     dilation_rate=cfg["dilation_rate"], use_bias=cfg["use_bias"], activation=cfg["activation"],
                     groups=cfg.get("groups", 1), name=name)(inp)
    elif kind.startswith("dense"):
        h = L.Dense(cfg["units"], use_bias=cfg["use_bias"], activation=cfg["activation"],
                    activity_regularizer=cfg.get("activity_regularizer"), name=name)(inp)
    else:
        h = inp
        if cfg["conv_before"]:  # the input gradient through the normalization feeds this layer's norm
            h = L.Conv2D(cfg["input"][-1], 1, name=f"conv_before_{k}")(h)
        h = L.GroupNormalization(groups=cfg["groups"], axis=cfg.get("axis", -1), center=cfg["center"],
                                 scale=cfg["scale"], epsilon=cfg["epsilon"], name=name)(h)
        h = L.Activation("tanh")(h)
    return inp, L.Flatten()(h) if len(h.shape) > 2 else h


def _build(cfgs: list[dict]) -> tf.keras.Model:
    """One model with a branch per configuration and one Dense logits layer on their concatenated
    features (a Keras model per configuration would cost most of the test's time). An example's
    gradient concatenates all branches' gradients, so every branch's norm enters the clipping
    factor of every variable."""
    branches = [_branch(cfg, k) for k, cfg in enumerate(cfgs)]
    features = [f for _, f in branches]
    h = L.Concatenate()(features) if len(features) > 1 else features[0]
    return tf.keras.Model([i for i, _ in branches], L.Dense(CLASSES, name="logits")(h))


def _data(cfgs: list[dict], rng):
    b = cfgs[0]["batch"]
    xs = []
    for cfg in cfgs:
        if cfg["kind"] == "embedding":
            x = rng.integers(0, cfg["input_dim"], (b,) + cfg["input"])
            if cfg["mask_zero"]:
                x[:, 0] = rng.integers(1, cfg["input_dim"], b)  # at least one unmasked position per example
        else:
            x = rng.standard_normal((b,) + cfg["input"])
        xs.append(x)
    return xs, rng.integers(0, CLASSES, b)


def _reference(model, xs, y):
    """Per-example gradients by a GradientTape per example (numpy, one array per variable)."""
    grads = []
    for i in range(len(y)):
        with tf.GradientTape() as tape:
            logits = model([x[i:i + 1] for x in xs], training=True)
            loss = tf.keras.losses.sparse_categorical_crossentropy(y[i:i + 1], logits, from_logits=True)
        grads.append([tf.convert_to_tensor(g).numpy() if g is not None else np.zeros(v.shape)
                      for g, v in zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)])
    return grads


# ------------------------------------------------------------------------------------- the test


def _check(cfgs: list[dict], registry, rng, bookkeeping: bool = True) -> bool:
    """Assert the fast path equals the per-example loop on the model of ``cfgs``, or that it is
    refused (a configuration to refuse comes alone); True if checked."""
    model = _build(cfgs)
    if "refuse" in cfgs[0]:
        with pytest.raises(fc.DPModelError) as err:
            fc.check_dp_model(model, registry=registry)
        message = str(err.value)
        assert "'under_test_0'" in message and cfgs[0]["refuse"] in message, (cfgs, message)
        assert any(fix in message for fix in ("path='stock'", "Remove", "use ", "Use ")), (cfgs, message)
        return False
    fc.check_dp_model(model, registry=registry)  # accepted: then it must be exact
    xs, y = _data(cfgs, rng)
    ref = _reference(model, xs, y)
    ref_norms = np.array([np.sqrt(sum(np.sum(g ** 2) for g in r)) for r in ref])
    clip = {"median": float(np.median(ref_norms)), "tiny": 1e-3, "huge": 1e6}[cfgs[0]["clip"]]
    grads, norms, logits, _ = fc.clipped_gradient_sum(model, [tf.constant(x) for x in xs], tf.constant(y), clip,
                                                      registry=registry, bookkeeping=bookkeeping)
    # float64: any error of the mathematics shows at 1e-3 or more (the old dilated shortcut: 4-30 %);
    # 1e-7 leaves room for rounding that an ill-conditioned normalization (tiny group variance) amplifies
    np.testing.assert_allclose(logits.numpy(), model(xs).numpy(), rtol=RTOL, atol=1e-10, err_msg=str(cfgs))
    np.testing.assert_allclose(norms.numpy(), ref_norms, rtol=RTOL, atol=1e-10, err_msg=str(cfgs))
    factors = np.minimum(1.0, clip / np.maximum(ref_norms, 1e-300))
    for j, v in enumerate(model.trainable_variables):
        want = sum(f * r[j] for f, r in zip(factors, ref))
        got = tf.convert_to_tensor(grads[j]).numpy()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-10 * max(1.0, clip), err_msg=f"{v.name} {cfgs}")
    return True


def _groups(cfgs: list[dict], size: int = BRANCHES):
    """Consecutive accepted configurations in models of ``size`` branches; each one to refuse alone."""
    batch = []
    for cfg in cfgs:
        if "refuse" in cfg:
            yield [cfg]
            continue
        batch.append(cfg)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _features(cfg: dict) -> list[str]:
    flags = {"dilated": cfg.get("dilation_rate", (1, 1)) != (1, 1), "strided": cfg.get("strides", (1, 1)) != (1, 1),
             "valid": cfg.get("padding") == "valid", "bias": cfg.get("use_bias", False),
             "cin1": cfg["kind"] == "conv2d" and cfg["input"][-1] == 1, "mask": cfg.get("mask_zero", False),
             "gn_no_center": cfg["kind"] == "groupnorm" and not cfg["center"],
             "gn_no_scale": cfg["kind"] == "groupnorm" and not cfg["scale"]}
    return [k for k, v in flags.items() if v]


def _other_form_registry():
    """The registry with every Conv2D and multi-position Dense norm in the form production does not
    pick for it (direct <-> ghost; both exact, the choice is cost), so both forms meet every shape."""

    def flipped(fn):
        def registry_fn(*args, **kwargs):
            z, outputs, norms = fn(*args, **kwargs)
            if norms.form in ("direct", "ghost"):
                norms.form = "ghost" if norms.form == "direct" else "direct"
            return z, outputs, norms
        return registry_fn

    registry = fc.make_layer_registry()
    registry.insert(tf.keras.layers.Conv2D, flipped(fc.conv2d_layer_computation))
    registry.insert(tf.keras.layers.Dense, flipped(fc.dense_layer_computation))
    return registry


def test_random_layer_configurations_are_exact_or_refused(float64):
    rng = np.random.default_rng(7)
    registries = [fc.make_layer_registry(), _other_form_registry()]
    checked, refused, features = collections.Counter(), collections.Counter(), collections.Counter()
    for n, cfgs in enumerate(_groups(_configs(DRAWS))):
        # every other model with the other norm form; every third with the second backward pass
        if _check(cfgs, registries[n % 2], rng, bookkeeping=n % 3 != 0):
            for cfg in cfgs:
                checked[cfg["kind"]] += 1
                features.update(_features(cfg))
                if cfg["kind"] == "conv2d":
                    features["conv_other_form" if n % 2 else "conv_production_form"] += 1
        else:
            refused[cfgs[0]["kind"]] += 1
    total = sum(checked.values())
    print(f"\nchecked {total} configurations {dict(checked)}, refused {sum(refused.values())} {dict(refused)}, "
          f"features {dict(features)}")
    assert total >= 200
    assert min(checked[k] for k in ("conv2d", "dense2d", "groupnorm", "embedding")) >= 20
    assert checked["dense3d"] + checked["dense4d"] >= 10
    assert min(features[k] for k in ("dilated", "strided", "valid", "cin1", "mask", "gn_no_center",
                                     "conv_other_form", "conv_production_form")) >= 5
    assert sum(refused.values()) >= 3


def test_the_check_catches_the_old_dilated_shortcut(float64):
    """Control: a registry whose Conv2D uses the old depthwise shortcut with dilation (TF's CPU kernel
    ignores the dilations) fails the same check on dilated one-channel draws, each in a model with
    two correct branches beside it."""

    def old_conv2d(layer, input_args, input_kwargs, tape, num_microbatches=None):
        z, outputs, norms = fc.conv2d_layer_computation(layer, input_args, input_kwargs, tape, num_microbatches)
        (x,) = input_args
        (kh, kw), (dh, dw), o = layer.kernel_size, layer.dilation_rate, layer.filters
        if x.shape[-1] != 1:
            return z, outputs, norms

        def per_example(g):
            xb = tf.reshape(tf.transpose(x, [3, 1, 2, 0]), [1, x.shape[1], x.shape[2], -1])
            gb = tf.reshape(tf.transpose(g, [1, 2, 0, 3]), [1, g.shape[1], g.shape[2], -1])
            f = tf.compat.v1.nn.depthwise_conv2d_native_backprop_filter(
                xb, tf.stack([kh, kw, tf.shape(x)[0], o]), gb, [1, 1, 1, 1], layer.padding.upper(),
                dilations=[1, dh, dw, 1])
            return tf.transpose(tf.reshape(f, [kh * kw, -1, o]), [1, 0, 2]), 0, None  # (w, batch axis, bias)

        norms.per_example_fn, norms.form = per_example, "direct"
        return z, outputs, norms

    broken = fc.make_layer_registry()
    broken.insert(tf.keras.layers.Conv2D, old_conv2d)
    drawn = _configs(1500)
    targets = [c for c in drawn if c["kind"] == "conv2d" and c["input"][-1] == 1 and "refuse" not in c
               and c["padding"] == "same" and c["clip"] != "huge"
               and any(k > 1 and d > 1 for k, d in zip(c["kernel_size"], c["dilation_rate"]))][:4]
    others = [c for c in drawn if c["kind"] in ("dense", "dense2d", "embedding") and "refuse" not in c]
    assert targets
    failures = 0
    for k, cfg in enumerate(targets):
        cfgs = [cfg] + [dict(o, batch=cfg["batch"], clip=cfg["clip"]) for o in others[2 * k:2 * k + 2]]
        try:
            _check(cfgs, broken, np.random.default_rng(k))
        except AssertionError:
            failures += 1
        assert _check(cfgs, fc.make_layer_registry(), np.random.default_rng(k))  # the real registry passes
    assert failures == len(targets)
