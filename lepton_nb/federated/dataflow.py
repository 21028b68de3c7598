"""What leaves the clients: the intrinsic calls of a TFF computation that move client values to the server.

A TFF computation is a tree of building blocks; every value placed at the clients
(``{T}@CLIENTS``) can reach the server only through an intrinsic whose parameter is placed at
the clients and whose result is placed at the server (``federated_sum``, ``federated_mean``,
``federated_aggregate``, ``federated_secure_sum_bitwidth``, ...). :func:`client_to_server_calls`
walks the whole tree of a computation (e.g. a learning process's ``next``, with every nested
lambda and aggregator inside it) and lists those calls, so claims about a process are checked on
the computation that runs, not on one of its parts:

- secure aggregation: every call is a ``federated_secure_*`` intrinsic (:func:`only_secure_sums`);
- DP-FedAvg: the only call is the sum of the clipped updates that the DP query noises (no client
  training metric is summed in the clear).
"""

from __future__ import annotations

__all__ = ["client_to_server_calls", "only_secure_sums"]


def _leaves(t):
    from tensorflow_federated.python.core.impl.types import computation_types

    if isinstance(t, computation_types.StructType):
        for x in t:
            yield from _leaves(x)
    else:
        yield t


def _placed(t, where) -> bool:
    from tensorflow_federated.python.core.impl.types import computation_types

    return any(isinstance(x, computation_types.FederatedType) and x.placement is where for x in _leaves(t))


def client_to_server_calls(computation) -> list[dict]:
    """Every intrinsic call in ``computation`` that takes a value at the CLIENTS to the SERVER.

    Args:
        computation: a TFF computation (e.g. ``process.next``).

    Returns:
        One dict per call: ``uri`` (the intrinsic) and ``value`` (the type of the client values it
        consumes, e.g. ``<float32[784,16],...>@CLIENTS``).
    """
    from tensorflow_federated.python.core.impl.compiler import building_blocks
    from tensorflow_federated.python.core.impl.types import computation_types, placements

    found = []
    stack = [computation.to_building_block()]
    while stack:
        node = stack.pop()
        stack.extend(node.children())
        if not isinstance(node, building_blocks.Call) or not isinstance(node.function, building_blocks.Intrinsic):
            continue
        fn_type = node.function.type_signature
        param, result = fn_type.parameter, fn_type.result
        if param is None or not (_placed(param, placements.CLIENTS) and _placed(result, placements.SERVER)):
            continue
        arg = param[0] if isinstance(param, computation_types.StructType) and len(param) else param
        found.append({"uri": node.function.uri, "value": str(arg)})
    return found


def only_secure_sums(computation) -> dict:
    """Whether every value leaving the clients in ``computation`` goes through a secure sum.

    Returns:
        ``{"ok", "calls", "insecure", "intrinsics"}``: ``calls`` lists every client-to-server
        call (:func:`client_to_server_calls`), ``insecure`` those that are not
        ``federated_secure_*``, ``intrinsics`` the distinct intrinsics used upwards. ``ok`` is
        False when there is no call at all (nothing was checked).
    """
    calls = client_to_server_calls(computation)
    insecure = [c for c in calls if not c["uri"].startswith("federated_secure_")]
    return {"ok": bool(calls) and not insecure, "calls": calls, "insecure": insecure,
            "intrinsics": sorted({c["uri"] for c in calls})}
