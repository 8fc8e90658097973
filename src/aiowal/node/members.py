"""Who the members are and where to reach them: ``Member`` (a Raft address and the application's own fields), the
context a configuration change carries (the proposer's tag and the new members' addresses, as etcd puts its member
record there), and the configuration changes a node proposes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiowal.raftpb import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
)

Address = tuple[str, int]


@dataclass(frozen=True)
class Member:
    """Where a member listens for Raft traffic, and free-form fields the application attaches (an HTTP address,
    say); both travel with the configuration change that adds the member, and with every snapshot after it."""

    addr: Address
    meta: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"addr": f"{self.addr[0]}:{self.addr[1]}", "meta": dict(self.meta)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Member:
        host, port = str(d["addr"]).rsplit(":", 1)
        meta = d.get("meta") or {}
        return cls((host, int(port)), {str(k): str(v) for k, v in meta.items()})


def members_to_json(members: Mapping[int, Member]) -> dict[str, Any]:
    return {str(i): m.to_json() for i, m in sorted(members.items())}


def members_from_json(d: Mapping[str, Any]) -> dict[int, Member]:
    return {int(i): Member.from_json(m) for i, m in d.items()}


@dataclass(frozen=True)
class ChangeContext:
    """What a configuration change's ``context`` holds: the proposer's tag (node id, term, sequence number: as for
    normal proposals, it wakes only that proposer's waiter) and the members it introduces."""

    tag: tuple[int, int, int] | None = None
    members: Mapping[int, Member] = field(default_factory=dict)

    def encode(self) -> bytes:
        d: dict[str, Any] = {"members": members_to_json(self.members)}
        if self.tag is not None:
            d["tag"] = list(self.tag)
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> ChangeContext:
        """The context of a change; empty for one that carries none, or one another application wrote."""
        if not data:
            return cls()
        try:
            d = json.loads(data)
            raw = d.get("tag")
            tag = None
            if raw is not None:
                node, term, seq = (int(x) for x in raw)
                tag = (node, term, seq)
            return cls(tag, members_from_json(d.get("members") or {}))
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()


def member_ids(cs: ConfState) -> set[int]:
    """Every node the configuration sends the log to: voters of both halves and learners."""
    return set(cs.voters) | set(cs.voters_outgoing) | set(cs.learners) | set(cs.learners_next)


def is_joint(cs: ConfState) -> bool:
    return bool(cs.voters_outgoing)


def single(kind: ConfChangeType.ValueType, node_id: int, ctx: ChangeContext) -> ConfChange:
    return ConfChange(type=kind, node_id=node_id, context=ctx.encode())


def joint(changes: Iterable[tuple[ConfChangeType.ValueType, int]], ctx: ChangeContext) -> ConfChangeV2:
    """Several changes at once through a joint configuration, left automatically once entered."""
    return ConfChangeV2(
        transition=ConfChangeTransition.ConfChangeTransitionJointImplicit,
        changes=[ConfChangeSingle(type=t, node_id=n) for t, n in changes],
        context=ctx.encode(),
    )


def bootstrap_changes(voters: Iterable[int]) -> list[ConfChange]:
    """The changes a new cluster's log starts with, one voter added per entry, as etcd bootstraps: a node that
    joins later replays them (or gets their outcome in a snapshot) to learn the first configuration. They carry no
    address: every founding node writes the same entries, whatever route it has to its peers."""
    return [ConfChange(type=ConfChangeType.ConfChangeAddNode, node_id=i) for i in sorted(voters)]
