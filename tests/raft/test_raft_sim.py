"""Deterministic simulation of clusters of 3-5 nodes at the start under message loss, duplication, delay,
reordering, partitions, crash-restarts and membership changes (single-server and joint, learners added, promoted
and demoted, members and leaders removed). Each seed checks that every election and every commit had a majority of
each half of the leader's configuration, one leader per term, log matching, leader completeness, state-machine
safety, that every node's configuration is the one its applied changes lead to (the same on every node), and that
every acknowledged proposal was applied everywhere. ``make soak`` (AIOWAL_SOAK=1) runs 7,000 more seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from raft_sim import SafetyViolation, SimConfig, run_seed

from aiowal.raft import log as raft_log
from aiowal.raft import membership, tracker
from aiowal.raft import raft as raft_core
from aiowal.raft.quorum import majority_committed, majority_vote

SEEDS = range(200)
DISK_SEEDS = frozenset(range(7, 200, 20))  # 10 of them on DiskStorage in a tmp dir
TICKS = 200
MEMBERSHIP_SEEDS = range(200, 240)  # with frequent membership changes, most of them joint
MEMBERSHIP = {"membership_rate": 0.01, "joint_share": 0.6}


@pytest.mark.parametrize("seed", SEEDS)
def test_simulation(seed: int, tmp_path: Path) -> None:
    sim = run_seed(seed, tmp_path if seed in DISK_SEEDS else None, ticks=TICKS)
    # The run made progress: at least the final proposal is applied on every node.
    assert sim.acked
    assert all(sim.nodes[i].applied == max(sim.committed) for i in sim.members())


@pytest.mark.parametrize("seed", MEMBERSHIP_SEEDS)
def test_simulation_with_frequent_membership_changes(seed: int) -> None:
    sim = run_seed(seed, ticks=TICKS, **MEMBERSHIP)
    assert all(sim.nodes[i].applied == max(sim.committed) for i in sim.members())


@pytest.mark.parametrize("seed", [4440, 5696])
def test_simulation_seeds_that_failed_in_the_soak(seed: int) -> None:
    """4440: a leader with a stale view proposed to re-add a removed server, which the operator had shut down.
    5696: a lone voter restarted with a commit index behind what its learners had applied served a stale read."""
    run_seed(seed, ticks=300)


def test_simulation_exercises_every_fault() -> None:
    """The seeds of ``make test`` drop, duplicate, partition, crash, send snapshots, serve reads, transfer
    leadership and change membership in every way, starting with 3 to 5 nodes."""
    totals: dict[str, int] = {}
    sizes = set()
    for seed in range(30):
        cfg = SimConfig.random(seed)
        sizes.add(cfg.nodes)
        sim = run_seed(seed, ticks=TICKS)
        for k, v in sim.stats.items():
            totals[k] = totals.get(k, 0) + v
        # Membership changes applied, beyond the bootstrap configuration (entries 1..n).
        totals["conf_changes"] = totals.get("conf_changes", 0) + len(sim.conf_changes) - cfg.nodes
    totals["explicit_leaves"] = totals["joint_left"] - totals["auto_leaves"]
    assert sizes == {3, 4, 5}
    for k in (
        "dropped",
        "duplicated",
        "crashes",
        "crashes_before_save",
        "partitions",
        "snapshots",
        "reads_served",
        "transfers",
        "conf_changes",
        "conf_refused",
        "learners_added",
        "learners_promoted",
        "joint_entered",
        "auto_leaves",
        "explicit_leaves",
        "joint_elections",
        "joint_commits",
        "leaders_removed",
    ):
        assert totals[k] > 0, k


def test_simulation_is_deterministic() -> None:
    a, b = run_seed(11, ticks=100), run_seed(11, ticks=100)
    assert a.committed == b.committed
    assert a.stats == b.stats


def test_simulation_catches_a_voter_that_ignores_log_freshness(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks can fail: voting for any candidate, however stale its log, is caught within a few seeds."""
    monkeypatch.setattr(raft_log.RaftLog, "is_up_to_date", lambda self, i, t: True)
    with pytest.raises(SafetyViolation):
        for seed in range(40):
            run_seed(seed, ticks=TICKS)


def test_simulation_catches_a_follower_that_skips_the_log_matching_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_log.RaftLog, "match_term", lambda self, i, t: self.term(i) is not None)
    with pytest.raises(SafetyViolation):
        for seed in range(40):
            run_seed(seed, ticks=TICKS)


def test_simulation_catches_a_leader_that_never_sends_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower left behind a compacted log never converges without MsgSnap."""
    original = raft_core.Raft._send_append

    def no_snapshot(self: raft_core.Raft, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs.progress[to]
        if self.raft_log.term(pr.next - 1) is None or pr.next < self.raft_log.first_index():
            return False
        return original(self, to, send_if_empty)

    monkeypatch.setattr(raft_core.Raft, "_send_append", no_snapshot)
    with pytest.raises(SafetyViolation, match="no convergence"):
        for seed in range(40):
            run_seed(seed, ticks=TICKS, settle_ticks=200)


def test_simulation_catches_reads_served_without_a_quorum_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader that answers a read index without confirming its leadership serves stale reads."""
    monkeypatch.setattr(
        raft_core.Raft, "_start_read_index", lambda self, m: self._respond_read_index(m, self.raft_log.committed)
    )
    with pytest.raises(SafetyViolation, match="stale read"):
        for seed in range(40):
            # Without check-quorum a leader cut off in a minority keeps leading, and reads at it go stale.
            run_seed(seed, ticks=TICKS, read_rate=0.05, partition_rate=0.006, check_quorum=False)


def test_simulation_catches_commits_counted_in_one_half_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leader that commits once the incoming voters alone hold an entry is caught while joint."""
    monkeypatch.setattr(
        tracker, "joint_committed", lambda incoming, outgoing, match: majority_committed(incoming, match)
    )
    with pytest.raises(SafetyViolation, match="committed"):
        for seed in MEMBERSHIP_SEEDS:
            run_seed(seed, ticks=TICKS, **MEMBERSHIP)


def test_simulation_catches_elections_won_in_one_half_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker, "joint_vote", lambda incoming, outgoing, votes: majority_vote(incoming, votes))
    with pytest.raises(SafetyViolation, match="leads term"):
        for seed in MEMBERSHIP_SEEDS:
            run_seed(seed, ticks=TICKS, **MEMBERSHIP)


def test_simulation_catches_a_core_that_loses_demoted_voters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving a joint configuration without turning ``learners_next`` into learners differs from what the applied
    changes say the configuration is."""
    monkeypatch.setattr(
        membership, "leave_joint", lambda m: membership.Membership(voters=m.voters, learners=m.learners)
    )
    with pytest.raises(SafetyViolation, match="instead of"):
        for seed in MEMBERSHIP_SEEDS:
            run_seed(seed, ticks=TICKS, **MEMBERSHIP)


def test_simulation_catches_a_configuration_not_taken_from_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower that installs a snapshot but keeps its old configuration works with one its application never
    applied."""
    original = raft_core.Raft._restore

    def restore_keeping_configuration(self: raft_core.Raft, s: object) -> bool:
        m = self.prs.membership
        restored = original(self, s)  # type: ignore[arg-type]
        self.prs.set_membership(m, self.raft_log.last_index() + 1)
        return restored

    monkeypatch.setattr(raft_core.Raft, "_restore", restore_keeping_configuration)
    with pytest.raises(SafetyViolation, match="works with"):
        for seed in MEMBERSHIP_SEEDS:
            run_seed(seed, ticks=TICKS, **MEMBERSHIP)


if os.environ.get("AIOWAL_SOAK") == "1":
    SOAK_SEEDS = range(1000, 6000)
    MEMBERSHIP_SOAK_SEEDS = range(10_000, 12_000)

    @pytest.mark.soak
    def test_simulation_soak(tmp_path: Path) -> None:
        """5,000 seeds after those of ``make test``, every 25th on DiskStorage, 300 ticks each."""
        passed = 0
        for seed in SOAK_SEEDS:
            disk = tmp_path / str(seed) if seed % 25 == 0 else None
            try:
                run_seed(seed, disk, ticks=300)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed} failed after {passed} passed seeds: {exc}") from exc
            passed += 1
        assert passed == len(SOAK_SEEDS)

    @pytest.mark.soak
    def test_simulation_membership_soak(tmp_path: Path) -> None:
        """2,000 seeds with frequent membership changes, every 25th on DiskStorage, 300 ticks each."""
        passed = 0
        for seed in MEMBERSHIP_SOAK_SEEDS:
            disk = tmp_path / str(seed) if seed % 25 == 0 else None
            try:
                run_seed(seed, disk, ticks=300, **MEMBERSHIP)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed} failed after {passed} passed seeds: {exc}") from exc
            passed += 1
        assert passed == len(MEMBERSHIP_SOAK_SEEDS)
