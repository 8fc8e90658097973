"""Message helpers: the message types as plain attributes, ``from`` (a Python keyword), and message classes."""

from __future__ import annotations

from typing import Final

from aiowal.raftpb import Message, MessageType

NONE = 0
"""The id that means "no node" (etcd's ``None``): node ids are never 0."""

CAMPAIGN_TRANSFER = b"CampaignTransfer"
"""The context of the vote requests of a leader transfer: they bypass the leader lease."""


class MT:
    """The message types as plain class attributes (a lookup on the protobuf enum wrapper is slow)."""

    MsgHup: Final = MessageType.MsgHup
    MsgBeat: Final = MessageType.MsgBeat
    MsgProp: Final = MessageType.MsgProp
    MsgApp: Final = MessageType.MsgApp
    MsgAppResp: Final = MessageType.MsgAppResp
    MsgVote: Final = MessageType.MsgVote
    MsgVoteResp: Final = MessageType.MsgVoteResp
    MsgSnap: Final = MessageType.MsgSnap
    MsgHeartbeat: Final = MessageType.MsgHeartbeat
    MsgHeartbeatResp: Final = MessageType.MsgHeartbeatResp
    MsgUnreachable: Final = MessageType.MsgUnreachable
    MsgSnapStatus: Final = MessageType.MsgSnapStatus
    MsgCheckQuorum: Final = MessageType.MsgCheckQuorum
    MsgTransferLeader: Final = MessageType.MsgTransferLeader
    MsgTimeoutNow: Final = MessageType.MsgTimeoutNow
    MsgReadIndex: Final = MessageType.MsgReadIndex
    MsgReadIndexResp: Final = MessageType.MsgReadIndexResp
    MsgPreVote: Final = MessageType.MsgPreVote
    MsgPreVoteResp: Final = MessageType.MsgPreVoteResp


def vote_resp_type(t: MessageType.ValueType) -> MessageType.ValueType:
    if t == MT.MsgVote:
        return MT.MsgVoteResp
    if t == MT.MsgPreVote:
        return MT.MsgPreVoteResp
    raise ValueError(f"not a vote message: {MessageType.Name(t)}")


def msg_from(m: Message) -> int:
    """``m.from`` (a Python keyword)."""
    v: int = getattr(m, "from")
    return v


def new_message(t: MessageType.ValueType, to: int, frm: int, term: int = 0, **fields: object) -> Message:
    m = Message(type=t, to=to, term=term, **fields)  # type: ignore[arg-type]
    setattr(m, "from", frm)
    return m


LOCAL_MSGS: Final = frozenset({MT.MsgHup, MT.MsgBeat, MT.MsgUnreachable, MT.MsgSnapStatus, MT.MsgCheckQuorum})
# Messages a follower forwards to its leader: "from" keeps naming the node that asked (or the transferee).
FORWARDED_MSGS: Final = frozenset({MT.MsgProp, MT.MsgReadIndex, MT.MsgTransferLeader})
VOTE_MSGS: Final = frozenset({MT.MsgVote, MT.MsgVoteResp, MT.MsgPreVote, MT.MsgPreVoteResp})


def is_local_msg(t: MessageType.ValueType) -> bool:
    return t in LOCAL_MSGS
