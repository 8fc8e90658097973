"""The linearizability checker on generated histories: histories produced by running a sequential model (always
linearizable, however the operations overlap, fail or time out), and small arbitrary or mutated histories whose
verdict is compared with a brute-force search over every order of the operations."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lincheck import Op, Verdict, check

KEYS = ("x", "y")
VALUES = ("a", "b", "c")


def brute_force(history: list[Op]) -> bool:
    """Whether some order of the operations (every ok one, any subset of the unknown ones) respects real time and
    the register model, found by trying them all: one map of every key, no memo, no pruning."""
    ops = [op for op in history if op.outcome != "fail"]
    must = [op.outcome == "ok" for op in ops]
    n = len(ops)

    def ready(i: int, placed: int) -> bool:
        # Every ok operation that returned before this one was called must already be placed.
        return all(placed >> j & 1 or not must[j] or not ops[j].ret < ops[i].call for j in range(n))

    def search(placed: int, state: dict[str, str | None]) -> bool:
        if all(placed >> j & 1 or not must[j] for j in range(n)):
            return True
        for i, op in enumerate(ops):
            if placed >> i & 1 or not ready(i, placed):
                continue
            after = dict(state)
            if op.kind == "put":
                after[op.key] = op.value
            elif op.kind == "delete":
                after[op.key] = None
            elif op.outcome == "ok" and state.get(op.key) != op.value:
                continue
            if search(placed | 1 << i, after):
                return True
        return False

    return search(0, {})


def sequential_history(rng: random.Random, n_ops: int) -> list[Op]:
    """Clients take turns on a real register map: each operation takes effect at a moment inside its interval (an
    unknown write possibly long after its client gave up, or never; a failed one never), and GETs report what was
    there at that moment."""
    processes = rng.randint(1, 4)
    clock = [0] * processes
    plans = []  # (moment of effect or None, op without its GET result)
    for i in range(n_ops):
        p = rng.randrange(processes)
        kind = rng.choice(("put", "put", "delete", "get", "get", "get"))
        key = rng.choice(KEYS)
        value = rng.choice(VALUES) if kind == "put" else None
        call = clock[p] + rng.randint(0, 3)
        moment = call + rng.randint(0, 4)
        ret = moment + rng.randint(0, 4)
        fate = rng.choice(("ok", "ok", "ok", "ok", "fail", "unknown", "unknown-never"))
        clock[p] = ret
        if fate == "fail":
            plans.append((None, Op(i, p, kind, key, value if kind == "put" else None, call, ret, "fail")))
        elif fate.startswith("unknown"):
            late = moment + rng.randint(0, 15)  # an unknown operation may take effect after its client gave up
            when = None if fate == "unknown-never" else late
            plans.append((when, Op(i, p, kind, key, value if kind == "put" else None, call, math.inf, "unknown")))
        else:
            plans.append((moment, Op(i, p, kind, key, value, call, ret, "ok")))  # type: ignore[arg-type]
    state: dict[str, str | None] = {}
    out: dict[int, Op] = {}
    effective = [(when, op) for when, op in plans if when is not None]
    for _, op in sorted(effective, key=lambda pl: pl[0]):
        if op.kind == "put":
            state[op.key] = op.value
        elif op.kind == "delete":
            state[op.key] = None
        elif op.outcome == "ok":
            op = replace(op, value=state.get(op.key))
        out[op.id] = op
    return [out.get(op.id, op) for _, op in plans]


def arbitrary_history(rng: random.Random, n_ops: int) -> list[Op]:
    """Operations with random intervals, outcomes and GET results: most such histories are not linearizable."""
    ops = []
    for i in range(n_ops):
        kind = rng.choice(("put", "delete", "get", "get"))
        outcome = rng.choice(("ok", "ok", "ok", "fail", "unknown"))
        call = rng.randint(0, 10)
        ret = math.inf if outcome == "unknown" else call + rng.randint(0, 6)
        value = rng.choice((*VALUES, None)) if kind == "get" and outcome == "ok" else None
        if kind == "put":
            value = rng.choice(VALUES)
        ops.append(Op(i, rng.randrange(3), kind, rng.choice(KEYS), value, call, ret, outcome))  # type: ignore[arg-type]
    return ops


def pending_deletes_history(rng: random.Random, n_ops: int) -> list[Op]:
    """Several unknown DELETEs called early, then PUTs and GETs of one key that may need some of them, in any
    number: the case where the checker counts interchangeable operations instead of telling them apart."""
    ops = [Op(i, 9, "delete", "x", None, rng.randint(0, 6), math.inf, "unknown") for i in range(rng.randint(2, 3))]
    for i in range(len(ops), len(ops) + n_ops):
        kind = rng.choice(("put", "get", "get"))
        call = rng.randint(0, 12)
        value = rng.choice(("a", "b")) if kind == "put" else rng.choice(("a", "b", None, None))
        ops.append(Op(i, rng.randrange(3), kind, "x", value, call, call + rng.randint(0, 3), "ok"))  # type: ignore[arg-type]
    return ops


def mutate(rng: random.Random, ops: list[Op]) -> list[Op]:
    """One small change that may or may not break linearizability: another GET result, another outcome, or a
    shifted interval."""
    ops = list(ops)
    i = rng.randrange(len(ops))
    op = ops[i]
    change = rng.randrange(4)
    if change == 0 and op.kind == "get":
        ret = op.call + 2 if math.isinf(op.ret) else op.ret
        op = replace(op, value=rng.choice((*VALUES, None)), outcome="ok", ret=ret)
    elif change == 1:
        outcome = rng.choice(("ok", "fail", "unknown"))
        ret = math.inf if outcome == "unknown" else (op.call + 1 if math.isinf(op.ret) else op.ret)
        op = replace(op, outcome=outcome, ret=ret, value=op.value if op.kind != "get" or outcome == "ok" else None)
    elif change == 2:
        shift = rng.randint(-4, 4)
        call = max(0, op.call + shift)
        op = replace(op, call=call, ret=op.ret if math.isinf(op.ret) else max(call, op.ret + shift))
    elif op.kind == "put":
        op = replace(op, kind="delete", value=None)
    elif op.kind == "delete":
        op = replace(op, kind="put", value=rng.choice(VALUES))
    ops[i] = op
    return ops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(0, 60))
def test_histories_of_a_sequential_model_are_linearizable(rng: random.Random, n_ops: int) -> None:
    history = sequential_history(rng, n_ops)
    res = check(history)
    assert res.verdict is Verdict.LINEARIZABLE, res.explanation()


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 7))
def test_small_mutated_histories_agree_with_brute_force(rng: random.Random, n_ops: int) -> None:
    history = mutate(rng, sequential_history(rng, n_ops))
    assert check(history).ok == brute_force(history), history


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 7))
def test_small_arbitrary_histories_agree_with_brute_force(rng: random.Random, n_ops: int) -> None:
    history = arbitrary_history(rng, n_ops)
    assert check(history).ok == brute_force(history), history


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 6))
def test_histories_with_pending_deletes_agree_with_brute_force(rng: random.Random, n_ops: int) -> None:
    history = pending_deletes_history(rng, n_ops)
    assert check(history).ok == brute_force(history), history


def test_generated_histories_cover_both_verdicts() -> None:
    # The comparisons above mean something only if both answers come up often; count them on fixed seeds.
    verdicts = {True: 0, False: 0}
    makers = (
        lambda rng: arbitrary_history(rng, 6),
        lambda rng: mutate(rng, sequential_history(rng, 7)),
        lambda rng: pending_deletes_history(rng, 6),
    )
    for seed in range(600):
        rng = random.Random(seed)
        history = makers[seed % 3](rng)
        ok = check(history).ok
        assert ok == brute_force(history), history
        verdicts[ok] += 1
    print(verdicts)
    assert verdicts[True] >= 150 and verdicts[False] >= 150, verdicts
