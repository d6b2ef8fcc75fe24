"""What a transport reports of a run: one small shape every transport fills, and one
typed class per transport family for what only it has.

Every class says which proofs (transports/proofs.py) its result must pass, from its own
settings and evidence: `checks()`. The runner only runs them. A transport names its class
in `Transport.statistics_class`, so the runner reads the server's JSON back into it.

In JSON (`as_dict`, a result's `transport_stats`) every field is a flat key: `effective`
is written as `settings` (its name since result format 2), `requested` as `requested`,
and `detail` (keys no class types: `spec` and `export` from `serve`, or an outside
transport's own) merged in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from transports import proofs

if TYPE_CHECKING:
    from typing import Self

# A field whose None means "did not happen in this run" and is left out of the JSON
# (uring's and devfuse's `native`, `sched_guard`, devfuse's `follow`), where other None
# values are written as null.
_OMIT_NONE = {"omit_none": True}
# JSON names of fields whose attribute name says more.
_JSON_NAMES = {"effective": "settings"}

Proof = Callable[[Any, "proofs.ProofContext"], dict[str, Any]]


# -- the nested records, as they are in JSON -------------------------------------------------
class NativeTotals(TypedDict):
    """What the compiled data path answered (transports/datapath: native_totals)."""

    reads: int
    writes: int
    read_bytes: int
    write_bytes: int
    errors: int
    deferred: int  # READ/WRITE left to Python (past the end, growing, read-only)
    served: int  # reads + writes


class GuardThread(TypedDict):
    tid: int
    boosted: bool
    boosts: int
    restores: int
    boosted_ms: float
    last_error: str | None


class GuardCounters(TypedDict):
    """What sched=idle's starvation guard did (transports/sched: SchedGuard.counters)."""

    period_ms: float
    hold_ms: list[float]
    fallback: str
    checks: int
    boosts: int  # serving threads found starved and moved to the fallback policy
    restores: int
    boosted_ms: float
    per_thread: list[GuardThread]


class FollowThread(TypedDict):
    looks: int
    moves: int
    releases: int
    policy_changes: int
    cpu: int | None
    last_error: str | None


class FollowTotals(TypedDict):
    """devfuse's client following (transports/sched: follow_totals)."""

    every: int
    looks: int
    moves: int  # pinned to a client's CPU
    releases: int
    policy_changes: int
    per_thread: list[FollowThread]


class CodecCounters(TypedDict):
    """One codec's counters (transports/fuse/codec.py: Codec.counters)."""

    requests: int
    errors: int
    exceptions: int
    ops: dict[str, int]


class Memlock(TypedDict, total=False):
    """RLIMIT_MEMLOCK against the ring buffers (transports/builtin/uring/queue.py: MemlockCheck)."""

    needed_bytes: int
    rlimit_memlock: int | str  # "unlimited"
    cap_ipc_lock: bool
    limit_applies: bool


class BufferTotals(TypedDict, total=False):
    """The queues' buffer counters summed (transports/builtin/uring/queue.py: BUFFER_COUNTERS)."""

    zc_requests: int  # data-carrying READ/WRITE that arrived in lent pages
    zc_bytes: int
    copied_requests: int
    copied_bytes: int
    fixed_ios: int
    slots_in_use: int
    slots_hwm: int  # the largest of any queue
    zero_copy_share: float | None


class Registration(TypedDict, total=False):
    """buffers=pinned: a queue's pool as the ring's fdinfo (UserBufs) shows it."""

    ring_fd: int
    user_bufs: list[list[Any]] | None
    pool_address: str
    pool_bytes: int
    pool_registered: bool


class QueueStatistics(TypedDict, total=False):
    """One uring queue (transports/builtin/uring/transport.py: _Queue.stats)."""

    qid: int
    cpu: int
    affinity: list[int] | None
    affinity_error: str | None
    sched: str | None
    requests: int
    errors: int
    ops: dict[str, int]
    ring: dict[str, Any]  # the ring's settings and counters (ring.c), BUFFER_COUNTERS among them
    registration: Registration | None
    entry_errors: dict[str, int]
    dead_entries: int
    no_reply: int
    failure: str | None
    native: dict[str, int] | None


# -- the shape every transport fills --------------------------------------------------------
@dataclass
class TransportStatistics:
    """What every transport's `statistics()` returns.

    `requested` is the spec's options as the transport got them (defaults filled in);
    `effective` what actually ran: every setting as served (sched=auto resolved to its
    policy) and the facts of the run (negotiated protocol, queue count). Opcodes are
    named as in transports.fuse.abi.OPCODE_NAMES (upper case). None means "not counted":
    a peer counts nothing, and only a transport with a ring fills the ring fields, even
    with zero counts, so a silent fallback to /dev/fuse is caught.
    """

    transport: str
    requested: dict[str, Any] | None  # None: not known (a result older than the key)
    effective: dict[str, Any]
    requests: int | None  # every request served
    ops: dict[str, int] | None = None  # opcode name -> requests served
    errors: int | None = None  # error replies
    exceptions: int | None = None  # requests the export raised on (answered EIO)
    requests_device: int | None = None  # of `requests`, read from the FUSE device, /dev/fuse
    ops_device: dict[str, int] | None = None
    requests_ring: int | None = None  # of `requests`, carried by the ring
    ops_ring: dict[str, int] | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # keys no class types

    # Left out of the JSON when None (not counted, not known).
    _OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = (
        "requested", "ops", "errors", "exceptions", "requests_device", "ops_device",
        "requests_ring", "ops_ring",
    )

    @property
    def settings(self) -> dict[str, Any]:
        """The effective settings, under the name the JSON gives them."""
        return self.effective

    def checks(self) -> list[Proof]:
        """The proofs this run's result must pass; none unless a class says otherwise."""
        return []

    def ring_completions_are_requests(self) -> bool:
        """True when the serving processes' io_uring completions over the fio window
        count the requests served (an io_uring peer that counts nothing itself)."""
        return False

    def data_requests(self, names: tuple[str, ...], ring: bool = False) -> int | None:
        """Requests of the named opcodes (all paths, or the ring's); None if not counted."""
        ops = self.ops_ring if ring else self.ops
        return None if ops is None else sum(int(ops.get(name, 0)) for name in names)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "detail":
                continue
            if f.name == "requests":
                out["requests"] = value  # kept when None: "counted by nobody"
            elif value is not None or not _omits_none(f):
                out[_JSON_NAMES.get(f.name, f.name)] = value
        # The keys in the order results have always had them, `requested` after `settings`.
        return {"transport": self.transport, "settings": self.effective, **out, **self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Read back what as_dict wrote; other keys (such as serve's spec) go to detail.
        A document older than `requested` reads as requested None (not known)."""
        by_json = {_JSON_NAMES.get(f.name, f.name): f for f in dataclasses.fields(cls)}
        by_json.pop("detail")
        known = {by_json[k].name: v for k, v in data.items() if k in by_json}
        known["transport"] = str(known.get("transport", ""))
        known.setdefault("requested", None)
        known.setdefault("effective", {})
        known.setdefault("requests", None)
        detail = {k: v for k, v in data.items() if k not in by_json}
        return cls(**known, detail=detail)

    @classmethod
    def of_codecs(
        cls,
        transport: str,
        requested: dict[str, Any],
        effective: dict[str, Any],
        total: dict[str, Any],
        device: dict[str, Any],
        ring: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Self:
        """From merged Codec.counters(): of every path (`total`), of the requests read from
        /dev/fuse and, for a transport with a ring, of those the ring carried; `fields`
        are the class's own."""
        return cls(
            transport=transport,
            requested=requested,
            effective=effective,
            requests=total["requests"],
            ops=total["ops"],
            errors=total["errors"],
            exceptions=total["exceptions"],
            requests_device=device["requests"],
            ops_device=device["ops"],
            requests_ring=None if ring is None else ring["requests"],
            ops_ring=None if ring is None else ring["ops"],
            **fields,
        )

    def claims(self, key: str, value: str) -> bool:
        """Whether the spec asked for `key=value` or the run says it ran so: either way
        the result must prove it."""
        asked = (self.requested or {}).get(key)
        return value in (_word(asked), _word(self.effective.get(key)))


def _omits_none(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("omit_none")) or f.name in TransportStatistics._OMITTED_WHEN_NONE


def _word(value: Any) -> str | None:
    """A setting as the spec writes it: a parsed on/off option is a bool."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return None if value is None else str(value)


def _optional() -> Any:
    return field(default=None, metadata=_OMIT_NONE)


# -- our own servers ----------------------------------------------------------------------
@dataclass
class Pyfuse3Statistics(TransportStatistics):
    unsupported_ops: list[str] = field(default_factory=list)  # answered ENOSYS by libfuse
    libfuse: str | None = None  # "pyfuse3 VERSION"


@dataclass
class DevfuseStatistics(TransportStatistics):
    per_thread: list[CodecCounters] = field(default_factory=list)  # each reader's codec
    thread_sched: list[str] = field(default_factory=list)  # each reader's policy as it ran
    native: NativeTotals | None = _optional()  # datapath=native
    follow: FollowTotals | None = _optional()  # follow=on
    sched_guard: GuardCounters | None = _optional()  # a guarded sched=idle

    def checks(self) -> list[Proof]:
        return [proofs.native] if self.claims("datapath", "native") else []


@dataclass
class UringStatistics(TransportStatistics):
    per_queue: list[QueueStatistics] = field(default_factory=list)
    locked_bytes: int = 0  # VmLck once the buffers were set up
    pinned_bytes: int = 0  # VmPin once the pools were registered
    memlock: Memlock | None = None  # RLIMIT_MEMLOCK against the buffers (locking modes)
    pinning: str | None = None  # what holds the buffers in memory, in words
    buffers: BufferTotals | None = None
    kernel_offer: dict[str, Any] | None = None  # FUSE_INIT of a throwaway mount (pool modes)
    enable_uring: str | None = None  # the fuse module's parameter: "Y"
    first_request_via_ring: bool | None = None
    teardown: dict[str, Any] = field(default_factory=dict)
    native: NativeTotals | None = _optional()  # datapath=native
    sched_guard: GuardCounters | None = _optional()  # a guarded sched=idle

    def checks(self) -> list[Proof]:
        wanted = [proofs.ring_share]
        if self.claims("buffers", "mlock"):
            wanted.append(proofs.mlock)
        if self.claims("buffers", "pinned"):
            wanted.append(proofs.pinned)
        if self.claims("zerocopy", "on"):
            wanted.append(proofs.zerocopy)
        if self.claims("datapath", "native"):
            wanted.append(proofs.native)
        return wanted


# -- peers ----------------------------------------------------------------------------------
@dataclass
class PeerStatistics(TransportStatistics):
    """A server that is not ours (qsd, external): it counts no requests."""

    version: str | None = None
    image: str | None = None  # the file it served
    exit_code: int | None = None


@dataclass
class DirectStatistics(TransportStatistics):
    """No server at all (`direct`, the ceiling): the backing itself on the mountpoint."""

    fuse: bool = False
    served_from: str | None = None  # what is bound on the mountpoint
    guard_exit_code: int | None = None  # the process that unmounts if serve dies


@dataclass
class QsdStatistics(PeerStatistics):
    """qemu-storage-daemon's FUSE export: which build served, and through which path.

    `io_uring` is the export's io-uring setting as given to the daemon (None: a result
    older than the key). Either way the result must prove the path the FUSE requests took
    (proofs.qsd_path): the daemon's main loop, which reads /dev/fuse and writes each reply
    to it in the legacy export, is `serving_tid`.
    """

    argv: list[str] | None = None
    # which build served: binary, version, how it was chosen; a cached build's source and
    # patches (subjects and sha256)
    build: dict[str, Any] | None = None
    io_uring: bool | None = None
    serving_tid: int | None = None
    output_tail: str = ""

    def checks(self) -> list[Proof]:
        return [] if self.io_uring is None else [proofs.qsd_path]


@dataclass
class LibfuseStatistics(PeerStatistics):
    argv: list[str] | None = None
    # which build served, how it was chosen (build=, $RINGSIDE_LIBFUSE_BUILD, the cache)
    build: dict[str, Any] | None = None
    # mode=uring: its rings' completions must cover the fio I/Os; legacy: no ring at all
    # (FUSE_INIT status alone proves no traffic).
    ring_expected: bool | None = None
    init_status: list[str] = field(default_factory=list)  # its FUSE_INIT: lines
    io_uring_at_init: str | None = None
    served_from: str | None = None
    output_tail: str = ""

    def checks(self) -> list[Proof]:
        return [] if self.ring_expected is None else [proofs.peer_ring]

    def ring_completions_are_requests(self) -> bool:
        return bool(self.ring_expected)
