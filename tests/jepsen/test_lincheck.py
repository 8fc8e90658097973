"""The linearizability checker on hand-written histories whose verdict is known: the classic anomalies (stale read,
lost write, a value never written, a failed write seen), histories that are fine though they look odd (overlapping
operations, unknown writes that appear late or never), and what it says when a history is wrong."""

from __future__ import annotations

import json
import math
from pathlib import Path

from lincheck import Op, Outcome, Verdict, check, from_json, save, to_json

INF = math.inf


class History:
    """Builds a history op by op: ``h.put(p, key, value, call, ret)``, ``h.get(p, key, value_or_None, ...)``."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def _add(self, p: int, kind: str, key: str, value: str | None, call: float, ret: float, outcome: Outcome) -> Op:
        op = Op(len(self.ops), p, kind, key, value, call, INF if outcome == "unknown" else ret, outcome)  # type: ignore[arg-type]
        self.ops.append(op)
        return op

    def put(self, p: int, key: str, value: str, call: float, ret: float = INF, outcome: Outcome = "ok") -> Op:
        return self._add(p, "put", key, value, call, ret, outcome)

    def delete(self, p: int, key: str, call: float, ret: float = INF, outcome: Outcome = "ok") -> Op:
        return self._add(p, "delete", key, None, call, ret, outcome)

    def get(self, p: int, key: str, value: str | None, call: float, ret: float = INF, outcome: Outcome = "ok") -> Op:
        return self._add(p, "get", key, value if outcome == "ok" else None, call, ret, outcome)


def verdict(h: History) -> Verdict:
    return check(h.ops).verdict


def test_sequential_puts_gets_and_deletes() -> None:
    h = History()
    h.get(0, "x", None, 0, 1)
    h.put(0, "x", "a", 2, 3)
    h.get(1, "x", "a", 4, 5)
    h.put(1, "x", "b", 6, 7)
    h.get(0, "x", "b", 8, 9)
    h.delete(0, "x", 10, 11)
    h.get(1, "x", None, 12, 13)
    assert verdict(h) is Verdict.LINEARIZABLE


def test_stale_read_is_caught_and_explained() -> None:
    h = History()
    h.put(0, "x", "a", 0, 1)
    h.put(0, "x", "b", 2, 3)
    stale = h.get(1, "x", "a", 4, 5)
    res = check(h.ops)
    assert res.verdict is Verdict.NOT_LINEARIZABLE
    (k,) = res.keys
    assert k.stuck is not None
    assert k.stuck.key == "x"
    assert k.stuck.blocking == stale  # the read had to be placed before it returned, and could not be
    assert k.stuck.state == "b"  # after both writes, where the read's 'a' can no longer be
    assert k.stuck.linearized == 2
    text = res.explanation()
    assert "key 'x'" in text and "#2 p1 GET x -> 'a'" in text and "'b'" in text


def test_lost_write_is_caught() -> None:
    h = History()
    h.put(0, "x", "a", 0, 1)
    h.get(1, "x", None, 2, 3)  # the acknowledged write is gone
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_acknowledged_write_overwritten_by_an_older_one_is_caught() -> None:
    h = History()
    h.put(0, "x", "a", 0, 1)
    h.put(1, "x", "b", 2, 3)
    h.get(2, "x", "b", 4, 5)
    h.get(2, "x", "a", 6, 7)  # 'a' came back after 'b' was read: no order of the writes explains both
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_read_of_a_value_never_written_is_caught() -> None:
    h = History()
    h.put(0, "x", "a", 0, 1)
    h.get(1, "x", "z", 2, 3)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_read_from_the_future_is_caught() -> None:
    h = History()
    h.get(1, "x", "a", 0, 1)
    h.put(0, "x", "a", 2, 3)  # called after the read returned
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_overlapping_operations_may_take_effect_anywhere_in_their_interval() -> None:
    h = History()
    h.put(0, "x", "a", 0, 10)
    h.get(1, "x", None, 1, 2)  # before the write took effect
    h.get(1, "x", "a", 3, 4)  # after
    h.put(2, "x", "b", 5, 12)
    h.get(1, "x", "a", 6, 7)
    h.get(1, "x", "b", 11, 13)
    assert verdict(h) is Verdict.LINEARIZABLE


def test_concurrent_writes_may_take_effect_in_either_order_but_only_one() -> None:
    for first, second in (("a", "b"), ("b", "a")):
        h = History()
        h.put(0, "x", "a", 0, 5)
        h.put(1, "x", "b", 1, 6)
        h.get(2, "x", second, 7, 8)
        assert verdict(h) is Verdict.LINEARIZABLE
        h.get(2, "x", first, 9, 10)  # both writes ended before either read: the register cannot flip back
        assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_reads_concurrent_with_a_write_may_not_flip_back() -> None:
    h = History()
    h.put(0, "x", "a", 0, 10)
    h.get(1, "x", "a", 1, 2)
    h.get(1, "x", None, 3, 4)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_touching_intervals_count_as_concurrent() -> None:
    h = History()
    h.put(0, "x", "a", 0, 5)
    h.get(1, "x", None, 5, 6)  # called at the very instant the write returned: either order is allowed
    assert verdict(h) is Verdict.LINEARIZABLE


def test_unknown_write_may_appear_late() -> None:
    h = History()
    h.put(0, "x", "a", 0, outcome="unknown")
    h.get(1, "x", None, 1, 2)
    h.get(1, "x", None, 30, 31)
    h.get(1, "x", "a", 60, 61)  # long after the client gave up
    assert verdict(h) is Verdict.LINEARIZABLE


def test_unknown_write_may_never_appear() -> None:
    h = History()
    h.put(0, "x", "a", 0, 1)
    h.put(0, "x", "b", 2, outcome="unknown")
    h.get(1, "x", "a", 3, 4)
    h.get(1, "x", "a", 50, 51)
    assert verdict(h) is Verdict.LINEARIZABLE


def test_unknown_write_takes_effect_once_and_not_before_its_call() -> None:
    h = History()
    h.put(0, "x", "a", 0, outcome="unknown")
    h.get(1, "x", "a", 1, 2)
    h.get(1, "x", None, 3, 4)  # nothing deleted it
    assert verdict(h) is Verdict.NOT_LINEARIZABLE

    h = History()
    h.get(1, "x", "a", 0, 1)
    h.put(0, "x", "a", 2, outcome="unknown")
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_unknown_deletes_each_take_effect_at_most_once() -> None:
    h = History()
    h.put(0, "x", "a", 0, 1)
    h.delete(1, "x", 2, outcome="unknown")
    h.get(2, "x", "a", 3, 4)
    h.get(2, "x", None, 5, 6)
    assert verdict(h) is Verdict.LINEARIZABLE
    h.put(0, "x", "b", 7, 8)
    h.get(2, "x", None, 9, 10)  # a second deletion needs a second delete
    assert verdict(h) is Verdict.NOT_LINEARIZABLE
    h.delete(3, "x", 0.5, outcome="unknown")  # and here is one, called early enough
    assert verdict(h) is Verdict.LINEARIZABLE


def test_failed_write_did_not_happen() -> None:
    h = History()
    h.put(0, "x", "a", 0, 1, outcome="fail")
    h.get(1, "x", None, 2, 3)
    assert verdict(h) is Verdict.LINEARIZABLE
    h.get(1, "x", "a", 4, 5)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_reads_without_an_answer_constrain_nothing() -> None:
    h = History()
    h.put(0, "x", "a", 0, 1)
    h.get(1, "x", None, 2, outcome="unknown")
    h.get(1, "x", None, 3, 4, outcome="fail")
    h.get(1, "x", "a", 5, 6)
    assert verdict(h) is Verdict.LINEARIZABLE


def test_keys_are_independent() -> None:
    h = History()
    h.put(0, "x", "a", 0, 1)
    h.get(1, "y", None, 2, 3)
    h.get(1, "x", "a", 2, 3)
    assert verdict(h) is Verdict.LINEARIZABLE
    h.get(1, "y", "a", 4, 5)  # 'a' was written to x, not y
    res = check(h.ops)
    assert res.verdict is Verdict.NOT_LINEARIZABLE
    assert [(k.key, k.verdict) for k in res.keys] == [("x", Verdict.LINEARIZABLE), ("y", Verdict.NOT_LINEARIZABLE)]


def test_many_unknown_deletes_and_writes_stay_cheap() -> None:
    # Unknown operations stay pending to the end; the interchangeable ones are tried once, not in every order.
    h = History()
    t = 0.0
    for i in range(60):
        h.delete(9, "x", t, outcome="unknown")
        h.put(8, "x", f"u{i}", t, outcome="unknown")
        h.put(0, "x", f"v{i}", t + 0.1, t + 1)
        h.get(1, "x", f"v{i}", t + 1.5, t + 2)
        t += 3
    h.get(1, "x", None, t, t + 1)
    res = check(h.ops, max_states=200_000)
    assert res.verdict is Verdict.LINEARIZABLE
    assert res.keys[0].explored < 10_000
    h.get(1, "x", "v3", t + 2, t + 3)  # a value overwritten long ago
    assert check(h.ops, max_states=200_000).verdict is Verdict.NOT_LINEARIZABLE


def test_a_search_budget_gives_undecided() -> None:
    h = History()
    for i in range(12):
        h.put(i, "x", f"v{i}", 0, 100)  # twelve concurrent writes, then a read none of them explains
    h.get(99, "x", "never", 101, 102)
    res = check(h.ops, max_states=50)
    assert res.verdict is Verdict.UNDECIDED
    assert not res.ok
    assert res.explanation().startswith("key 'x': undecided (13 operations, 50 states explored)")


def test_history_round_trips_through_json(tmp_path: Path) -> None:
    h = History()
    h.put(0, "x", "a", 0.25, 1.5)
    h.delete(1, "x", 2, outcome="unknown")
    h.get(2, "x", None, 3, 4)
    h.get(2, "x", None, 5, 6, outcome="fail")
    assert from_json(to_json(h.ops)) == h.ops
    save(tmp_path / "h.json", h.ops, nemesis=[{"at": 1.0, "event": "kill 1"}])
    data = json.loads((tmp_path / "h.json").read_text())
    assert from_json(data["ops"]) == h.ops
    assert data["nemesis"] == [{"at": 1.0, "event": "kill 1"}]
