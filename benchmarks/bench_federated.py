"""Federated learning with TFF 0.87: round overhead, scaling with clients per round, rounds to target.

(a) TFF seconds per round (after the first, which traces) against the same local training done
    directly in Keras: the same sampled clients, the same per-client pipelines (examples, order,
    batches, local epochs), the same SGD, then the example-weighted average of the client models:
    ``ratios.tff_vs_keras``.
(b) seconds per round as clients per round grows (10, 50, 100 of 100 clients).
(c) rounds until the global model first reaches a target test accuracy, IID vs Dirichlet(0.5).
(d) one round split over two TFF ``worker_binary`` processes on 127.0.0.1 (TFF's mergeable
    execution context, :mod:`lepton_nb.federated.mergeable`) against the same round on one worker:
    the models must agree to float32 rounding (max abs difference <= 1e-6), and
    ``ratios.workers2_vs_1`` = seconds of the two-worker round / the one-worker round. Both workers
    share this machine's cores, so the ratio measures the split's overhead here, not the speed-up
    of workers on separate machines.

Default: the bundled 6,000/4,000 sample (a few minutes here). ``--full``: the full 60k/10k set,
100 clients, 10 per round for (a) and (c) (long). ``--overhead-only``: (a) alone, written to
``reports/bench/federated_overhead.json`` (with ``--full``: a round of 10 clients x 600 images x
E = 5 at B = 10, the FedAvg paper's setting, a few minutes).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import _common  # noqa: F401 - puts the repository on sys.path
from _common import timed, write

import numpy as np


def keras_round(model, data, ids, cfg, seeds, global_weights):
    """One FedAvg round done in plain Keras: local fit per client, example-weighted average."""
    total, acc = 0, None
    for cid, seed in zip(ids, seeds):
        model.set_weights(global_weights)
        ds = data.dataset(cid, local_epochs=cfg.client.local_epochs, batch_size=cfg.client.batch_size, seed=seed)
        model.fit(ds, epochs=1, verbose=0)
        n = int(data.sizes[data.client_ids.index(cid)])
        w = [n * v for v in model.get_weights()]
        acc = w if acc is None else [a + b for a, b in zip(acc, w)]
        total += n
    return [a / total for a in acc]


def two_workers(process, data, ids, seeds, client, secure_process) -> dict:
    """(d): the same round (clients ``ids``) on the shared worker, then split over two new workers."""
    import numpy as np

    from lepton_nb.federated import mergeable, runtime

    def datasets():
        return [data.dataset(c, local_epochs=client.local_epochs, batch_size=client.batch_size, seed=s)
                for c, s in zip(ids, seeds)]

    with runtime.context():
        state = process.initialize()
        one_t = timed(lambda: process.next(state, datasets()), repeats=3, warmup=1)
        one = process.get_model_weights(process.next(state, datasets()).state).trainable
    with mergeable.workers(2) as pair, mergeable.mergeable_context([w.address for w in pair]):
        two_t = timed(lambda: process.next(state, datasets()), repeats=3, warmup=1)  # warm-up compiles
        two_state = process.next(state, datasets()).state
    with runtime.context():
        two = process.get_model_weights(two_state).trainable
        start = process.get_model_weights(state).trainable
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(one, two))
    update = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(one, start))
    if diff > 1e-6:
        raise AssertionError(f"the two-worker round differs from the one-worker round by {diff:.2e} (> 1e-6)")
    return {"clients_per_round": len(ids), "one_worker_seconds": one_t, "two_workers_seconds": two_t,
            "max_abs_diff": diff, "max_abs_update": update, "tolerance": 1e-6,
            "secure_process_mergeable": mergeable.compile_check(secure_process.next) or "compiles"}


def write_overhead(results: dict, full: bool, data: str, client, n_clients: int, per_round: int) -> None:
    r = results["round_vs_keras"]
    ratio = r["tff_seconds"]["median"] / r["keras_seconds"]["median"]
    write("federated_overhead",
          config={"full": full, "data": data, "model": "seed_cnn", "client": client.__dict__, "clients": n_clients,
                  "clients_per_round": per_round},
          results=results, ratios={"tff_vs_keras": round(ratio, 3)},
          summary=(f"TFF round {r['tff_seconds']['median']:.2f} s vs Keras {r['keras_seconds']['median']:.2f} s "
                   f"(x{ratio:.2f}), {r['examples_per_round']} examples per round"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full Fashion-MNIST, 100 clients (long)")
    parser.add_argument("--overhead-only", action="store_true", help="only (a), the TFF round vs Keras")
    args = parser.parse_args()

    import tensorflow as tf

    import lepton_nb as ln
    from lepton_nb.federated import algorithms, client_data, loop, runtime
    from lepton_nb.federated.settings import ClientConfig, FedAvgConfig

    ds = ln.data.load("fashion-mnist", full=args.full)
    shape, k = ds.input_shape, ds.num_classes
    task = algorithms.task(lambda: ln.models.build_seed_cnn(shape, k), shape, k)
    client = ClientConfig(local_epochs=1 if not args.full else 5, batch_size=20 if not args.full else 10,
                          learning_rate=0.05)
    results: dict = {}
    try:
        # (a) TFF round vs the same training in Keras ---------------------------------------------
        n_clients, per_round = (20, 5) if not args.full else (100, 10)
        cfg = FedAvgConfig(num_clients=n_clients, clients_per_round=per_round, rounds=1, client=client)
        data = client_data.federate(ds, n_clients, seed=0)
        process = algorithms.fedavg(task, cfg)
        ids = list(np.array(data.client_ids)[np.random.default_rng(0).choice(n_clients, per_round, replace=False)])
        seeds = list(range(per_round))
        with runtime.context():
            state = process.initialize()

            def tff_round():
                datasets = [data.dataset(c, local_epochs=client.local_epochs, batch_size=client.batch_size, seed=s)
                            for c, s in zip(ids, seeds)]
                process.next(state, datasets)

            tff_t = timed(tff_round, repeats=3, warmup=1)
        model = task.build()
        model.compile(optimizer=tf.keras.optimizers.SGD(client.learning_rate),
                      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        w0 = model.get_weights()
        keras_t = timed(lambda: keras_round(model, data, ids, cfg, seeds, w0), repeats=3, warmup=1)
        examples = int(sum(data.sizes[data.client_ids.index(c)] for c in ids)) * client.local_epochs
        results["round_vs_keras"] = {"clients_per_round": per_round, "examples_per_round": examples,
                                     "tff_seconds": tff_t, "keras_seconds": keras_t,
                                     "tff_images_per_s": examples / tff_t["median"],
                                     "keras_images_per_s": examples / keras_t["median"]}

        if args.overhead_only:
            return write_overhead(results, args.full, ds.name, client, n_clients, per_round)

        # (b) round time against clients per round --------------------------------------------------
        data100 = client_data.federate(ds, 100, seed=0)
        scaling = {}
        with runtime.context():
            state = process.initialize()
            for per in (10, 50, 100):
                chosen = list(np.array(data100.client_ids)[:per])

                def round_k(chosen=chosen):
                    process.next(state, [data100.dataset(c, batch_size=client.batch_size, seed=i)
                                         for i, c in enumerate(chosen)])

                t = timed(round_k, repeats=1, warmup=1)
                scaling[str(per)] = {"seconds": t, "examples": int(sum(data100.sizes[:per])),
                                     "images_per_s": float(sum(data100.sizes[:per]) / t["median"])}
        results["clients_per_round"] = scaling

        # (c) rounds to a target accuracy, IID vs Dirichlet(0.5) ------------------------------------
        target = 0.80 if not args.full else 0.88
        max_rounds = 25 if not args.full else 200
        cfg_c = replace(cfg, rounds=max_rounds, eval_every=1, client=replace(client, local_epochs=2 if not args.full else 5))
        evaluator = loop.Evaluator(task, ds.x_test, ds.y_test, test_clients=cfg_c.test_clients)
        to_target = {}
        for name, alpha in (("iid", None), ("dirichlet_0.5", 0.5)):
            fd = client_data.federate(ds, n_clients, alpha=alpha, seed=0)
            run = loop.run(process, fd, cfg_c, task=task, evaluator=evaluator, name=f"bench_{name}", progress=False,
                           tensorboard=False)
            to_target[name] = {"rounds_to_target": run.rounds_to(target), "final_accuracy": run.test_accuracy,
                               "accuracy_by_round": [round(float(a), 4) for a in run.history["test_accuracy"]]}
        results["rounds_to_target"] = {"target": target, "max_rounds": max_rounds, **to_target}

        # (d) one round over two workers vs one ------------------------------------------------------
        results["two_workers"] = two_workers(process, data, ids, seeds, client, algorithms.secure_fedavg(task, cfg))
    finally:
        runtime.shutdown()

    ratio = results["round_vs_keras"]["tff_seconds"]["median"] / results["round_vs_keras"]["keras_seconds"]["median"]
    s = results["clients_per_round"]
    w = results["two_workers"]
    ratios = {"tff_vs_keras": round(ratio, 3),
              "round_100_vs_10_clients": round(s["100"]["seconds"]["median"] / s["10"]["seconds"]["median"], 3),
              "workers2_vs_1": round(w["two_workers_seconds"]["median"] / w["one_worker_seconds"]["median"], 3)}
    rt = results["rounds_to_target"]
    write("federated",
          config={"full": args.full, "data": ds.name, "model": "seed_cnn", "client": client.__dict__,
                  "clients": n_clients, "clients_per_round": per_round},
          results=results, ratios=ratios,
          summary=(f"TFF round {results['round_vs_keras']['tff_seconds']['median']:.2f} s vs Keras "
                   f"{results['round_vs_keras']['keras_seconds']['median']:.2f} s (x{ratio:.2f}); "
                   f"10/50/100 clients per round {s['10']['seconds']['median']:.2f}/{s['50']['seconds']['median']:.2f}/"
                   f"{s['100']['seconds']['median']:.2f} s; rounds to {100 * rt['target']:.0f} %: "
                   f"IID {rt['iid']['rounds_to_target']}, Dirichlet(0.5) {rt['dirichlet_0.5']['rounds_to_target']}; "
                   f"2 workers vs 1 x{ratios['workers2_vs_1']:.2f} (max abs diff {w['max_abs_diff']:.1e})"))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
