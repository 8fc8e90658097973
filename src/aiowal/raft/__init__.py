"""A sans-IO Raft core after etcd raft's design: feed it ticks and messages, persist and send what ``ready()``
returns, and ``advance()``. It reads the stable log only through the etcd Storage read methods, so
``aiowal.DiskStorage``, ``aiowal.AsyncDiskStorage`` and ``MemoryStorage`` all work.

Implemented: elections with randomized timeouts, pre-vote, check-quorum and leader lease; replication with
probe / replicate / snapshot progress and a bounded in-flight window; fast backtracking with reject hints;
commit of current-term entries only (the leader counts its own entries once saved); snapshots sent to followers
behind a compacted log and restored by them; linearizable reads (read index); leader transfer; membership
changes applied from committed entries: single-server ones (``ConfChange``: add or remove a voter or learner) and
joint consensus (``ConfChangeV2``: several changes at once through a joint configuration whose decisions need a
majority of both the old and the new voters, left automatically or by an explicit empty change); learners, which
receive the log but never vote. A leader removed from the configuration steps down once the change is applied.
Not implemented: lease-based reads, proposal size limits.

A node's loop::

    rn = RawNode(Config(id=1, storage=st, rng=random.Random(seed), voters=[1, 2, 3]))
    ...  # rn.tick() on a timer, rn.step(msg) for each message received, rn.propose(data)
    while rn.has_ready():
        rd = rn.ready()
        st.save(rd.hard_state, rd.entries, rd.snapshot)  # a leader may send rd.messages first
        send(rd.messages)
        apply(rd.snapshot, rd.committed_entries)  # rn.apply_conf_change(cc) for configuration-change entries
        rn.advance(rd)
"""

from aiowal.raft.log import RaftInvariantError, RaftLog, Unstable
from aiowal.raft.membership import ConfChangeError, Membership
from aiowal.raft.memory import MemoryStorage
from aiowal.raft.messages import NONE
from aiowal.raft.progress import Inflights, Progress, ProgressState
from aiowal.raft.raft import ConfChangeRefusedError, Config, ProposalDroppedError, Raft, StateType, decode_conf_change
from aiowal.raft.rawnode import RawNode, Ready, SoftState
from aiowal.raft.readonly import ReadState
from aiowal.raft.status import MemberProgress, Status
from aiowal.raft.storage import Storage
from aiowal.raft.tracker import ProgressTracker

__all__ = [
    "NONE",
    "ConfChangeError",
    "ConfChangeRefusedError",
    "Config",
    "Inflights",
    "MemberProgress",
    "Membership",
    "MemoryStorage",
    "Progress",
    "ProgressState",
    "ProgressTracker",
    "ProposalDroppedError",
    "Raft",
    "RaftInvariantError",
    "RaftLog",
    "RawNode",
    "ReadState",
    "Ready",
    "SoftState",
    "StateType",
    "Status",
    "Storage",
    "Unstable",
    "decode_conf_change",
]
