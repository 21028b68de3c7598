"""Per-client ("per-hospital") accuracy of one global federated model, and its spread.

In medicine the worst-served hospital matters as much as the mean. Two numbers per client, both
for the *global* model:

- ``heldout_accuracy``: accuracy on the client's own held-out data (a part of its split never
  trained on; :func:`lepton_nb.federated.client_data.federate` with ``holdout``). Small clients
  hold few images, so its standard error is about sqrt(a (1 - a) / n) (``heldout_n`` is given).
- ``test_accuracy_at_client_mix``: the global test set re-weighted to the client's label mix,
  ``sum_c p_client(c) * acc_test(c)`` with ``acc_test(c)`` the model's per-class test accuracy.
  The plain global test set gives every client the same number (one model), so this is what
  "accuracy on the global test set" per client means here; thousands of test images stand behind
  it where the held-out part has tens.

The model is exported to Keras and scores every held-out image in one batched call, grouped by
client afterwards; on the same weights this equals TFF's own local evaluation run at each client.
DP runs release neither number: both are computed from the clients' data and no epsilon covers
them.
"""

from __future__ import annotations

import numpy as np

from lepton_nb.reports import Summary

__all__ = ["distribution", "for_run", "per_client_accuracy"]


def per_client_accuracy(model, data, x_test: np.ndarray, y_test: np.ndarray, *, batch_size: int = 1024):
    """One row per client for the Keras logits ``model``.

    Args:
        model: the global model exported to Keras (:meth:`~lepton_nb.federated.loop.FederatedRun.export_keras`).
        data: the :class:`~lepton_nb.federated.client_data.FederatedData` (with held-out parts).
        x_test, y_test: the global test set, images (N, H, W, C) and labels (N,).

    Returns:
        pandas DataFrame indexed by client id: ``train_n``, ``heldout_n``, ``heldout_accuracy``,
        ``test_accuracy_at_client_mix`` (fractions); ``attrs["test_accuracy"]`` is the global one.
    """
    import pandas as pd

    from lepton_nb.distributed import quiet_tf_logging

    x, y, owner = data.heldout()
    with quiet_tf_logging("ERROR"):  # a fresh model's predict function: TF's retracing warning is noise here
        correct = model.predict(x, batch_size=batch_size, verbose=0).argmax(1) == y
        test_pred = model.predict(x_test, batch_size=batch_size, verbose=0).argmax(1)
    y_test = np.asarray(y_test)
    k = data.histograms.shape[1]
    per_class = np.array([(test_pred[y_test == c] == c).mean() if (y_test == c).any() else np.nan for c in range(k)])
    mix = data.histograms / np.maximum(data.histograms.sum(1, keepdims=True), 1)
    heldout_n = np.bincount(owner, minlength=data.num_clients)
    hits = np.bincount(owner, weights=correct.astype(float), minlength=data.num_clients)
    df = pd.DataFrame({"train_n": data.sizes, "heldout_n": heldout_n,
                       "heldout_accuracy": np.where(heldout_n > 0, hits / np.maximum(heldout_n, 1), np.nan),
                       "test_accuracy_at_client_mix": mix @ np.nan_to_num(per_class)}, index=data.client_ids)
    df.attrs["test_accuracy"] = float((test_pred == y_test).mean())
    return df


def for_run(run, data, x_test: np.ndarray, y_test: np.ndarray):
    """:func:`per_client_accuracy` of a run's global model over its clients ``data``.

    Raises:
        ValueError: ``run`` is a DP run (per-client metrics are not covered by its epsilon, so they
            are not released), or ``data`` holds nothing out.
    """
    if getattr(run, "private", False):
        raise ValueError(f"{run.name} is a DP run: its per-client metrics are computed from the clients' data and "
                         "are not covered by its epsilon, so they are not released")
    return per_client_accuracy(run.export_keras(), data, x_test, y_test)


def distribution(values) -> dict:
    """min, 10th percentile, median and mean of per-client values, in percent (NaNs ignored)."""
    v = 100 * np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        raise ValueError("no per-client value to summarise")
    return Summary({"min": round(float(v.min()), 2), "p10": round(float(np.percentile(v, 10)), 2),
                    "median": round(float(np.median(v)), 2), "mean": round(float(v.mean()), 2),
                    "clients": int(len(v))})
