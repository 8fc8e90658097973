"""Raft messages wire-compatible with etcd's ``raftpb`` (generated from ``raft.proto`` by ``make proto``)."""

from aiowal.raftpb.raft_pb2 import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

EntryNormal = EntryType.EntryNormal
EntryConfChange = EntryType.EntryConfChange
EntryConfChangeV2 = EntryType.EntryConfChangeV2

__all__ = [
    "ConfChange",
    "ConfChangeSingle",
    "ConfChangeTransition",
    "ConfChangeType",
    "ConfChangeV2",
    "ConfState",
    "Entry",
    "EntryConfChange",
    "EntryConfChangeV2",
    "EntryNormal",
    "EntryType",
    "HardState",
    "Message",
    "MessageType",
    "Snapshot",
    "SnapshotMetadata",
]
