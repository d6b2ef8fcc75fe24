"""The proofs a result must pass (transports/proofs.py), as each transport's statistics
declare them (transports/statistics.py): pure logic on typed statistics built here. The
real runs that pass them are in test_run.py, test_uring_pools.py and test_libfuse.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.point.runner import CheckError, check_statistics
from transports import proofs
from transports.base import transport_class
from transports.statistics import (
    DevfuseStatistics,
    LibfuseStatistics,
    PeerStatistics,
    Pyfuse3Statistics,
    QsdStatistics,
    TransportStatistics,
    UringStatistics,
)

CONTEXT = proofs.ProofContext()


def uring(requested: dict[str, Any] | None = None, **fields: Any) -> UringStatistics:
    """A uring run whose ring carried every one of 1000 READs, unless told otherwise."""
    counts: dict[str, Any] = dict(requests=1001, ops={"INIT": 1, "READ": 1000},
                                  requests_ring=1000, ops_ring={"READ": 1000})
    return UringStatistics("uring", requested or {}, fields.pop("effective", {}),
                           **{**counts, **fields})


def names(stats: TransportStatistics) -> list[str]:
    return [proof.__name__ for proof in stats.checks()]


# -- who declares what ----------------------------------------------------------------------
def test_each_transport_names_its_statistics_class() -> None:
    assert transport_class("uring").statistics_class is UringStatistics
    assert transport_class("devfuse").statistics_class is DevfuseStatistics
    assert transport_class("libfuse").statistics_class is LibfuseStatistics
    assert transport_class("qsd").statistics_class is QsdStatistics
    assert transport_class("external").statistics_class is PeerStatistics


def test_checks_follow_the_settings() -> None:
    assert names(uring()) == ["ring_share"]
    everything = {"buffers": "pinned", "zerocopy": True, "datapath": "native"}
    assert names(uring(everything)) == ["ring_share", "pinned", "zerocopy", "native"]
    assert names(uring({"buffers": "mlock"})) == ["ring_share", "mlock"]
    # What ran claims as much as what was asked: a claim either makes must be proven.
    assert names(uring(effective={"zerocopy": "on"})) == ["ring_share", "zerocopy"]
    assert names(uring({"zerocopy": False, "datapath": "python"})) == ["ring_share"]
    devfuse = DevfuseStatistics("devfuse", {"datapath": "native"}, {}, requests=0)
    assert names(devfuse) == ["native"]
    devfuse.requested = {"datapath": "python"}
    assert names(devfuse) == []
    assert Pyfuse3Statistics("pyfuse3", {}, {}, requests=0).checks() == []
    assert names(LibfuseStatistics("libfuse", {}, {}, requests=None, ring_expected=False)) == [
        "peer_ring"]
    assert PeerStatistics("qsd", {}, {}, requests=None).checks() == []
    assert check_statistics(TransportStatistics("t", {}, {}, requests=None)) == []


def test_a_failed_check_names_itself_and_its_reason() -> None:
    bad = uring({"datapath": "native", "buffers": "mlock"}, ops_ring={"READ": 10},
                native={"served": 1000}, locked_bytes=0, memlock={"needed_bytes": 4096})
    with pytest.raises(CheckError) as caught:
        check_statistics(bad)
    assert str(caught.value) == (
        "ring_share check failed: the ring carried 10 of 1000 READ+WRITE requests (1.00%); "
        "at least 99% is required for a ring result; mlock check failed: the server had 0 "
        "bytes locked (VmLck) for 4096 bytes of ring buffers; an mlock result needs every "
        "buffer locked"
    )


# -- each proof, pass and fail --------------------------------------------------------------
def test_ring_share() -> None:
    stats = uring(requests=1010, requests_ring=995, requests_device=15,
                  ops={"INIT": 1, "GETATTR": 9, "READ": 900, "WRITE": 100},
                  ops_ring={"READ": 895, "WRITE": 100})
    (result,) = check_statistics(stats)
    assert result == {
        "name": "ring_share", "ok": True, "share": pytest.approx(0.995), "ring": 995,
        "total": 1000, "basis": "READ+WRITE",
        "reason": "the ring carried 995 of 1000 READ+WRITE requests (99.50%); at least 99% "
                  "is required for a ring result",
    }
    stats.ops_ring = {"READ": 800, "WRITE": 100}
    assert not proofs.ring_share(stats, CONTEXT)["ok"]
    with pytest.raises(CheckError, match=r"ring carried 900 of 1000 READ\+WRITE requests"):
        check_statistics(stats)


def test_ring_share_catches_a_silent_fallback() -> None:
    with pytest.raises(CheckError, match="0 of 0 READ"):
        check_statistics(uring(requests=0, ops={}, ops_ring={}, requests_ring=0))
    fallback = uring(requests=500, requests_ring=0, ops={"READ": 490}, ops_ring={})
    with pytest.raises(CheckError, match=r"ring carried 0 of 490 READ\+WRITE requests \(0.00%\)"):
        check_statistics(fallback)
    # A ring that counted nothing at all carried nothing.
    assert not proofs.ring_share(uring(ops_ring=None, requests_ring=None), CONTEXT)["ok"]


def test_mlock() -> None:
    good = uring({"buffers": "mlock"}, locked_bytes=5 << 20, memlock={"needed_bytes": 4 << 20},
                 pinning="user space: per-entry buffers populated and mlocked")
    result = proofs.mlock(good, CONTEXT)
    assert result["ok"] and result["locked_bytes"] == 5 << 20
    assert result["needed_bytes"] == 4 << 20 and result["pinning"] == good.pinning
    bad = uring({"buffers": "mlock"}, locked_bytes=1 << 20, memlock={"needed_bytes": 4 << 20})
    assert not proofs.mlock(bad, CONTEXT)["ok"]
    assert not proofs.mlock(uring({"buffers": "mlock"}), CONTEXT)["ok"]  # nothing measured
    with pytest.raises(CheckError, match="mlock check failed"):
        check_statistics(bad)


def test_pinned() -> None:
    queue = {"registration": {"pool_registered": True}}
    good = uring({"buffers": "pinned"}, per_queue=[queue, queue], pinned_bytes=4 << 20,
                 memlock={"needed_bytes": 4 << 20, "cap_ipc_lock": False})
    result = proofs.pinned(good, CONTEXT)
    assert result["ok"] and result["queues_registered"] == result["queues"] == 2
    assert result["charged"]
    as_root = uring({"buffers": "pinned"}, per_queue=[queue], pinned_bytes=0,
                    memlock={"needed_bytes": 4 << 20, "cap_ipc_lock": True})
    assert proofs.pinned(as_root, CONTEXT)["ok"]  # nothing is charged with CAP_IPC_LOCK
    uncharged = uring({"buffers": "pinned"}, per_queue=[queue], pinned_bytes=1 << 20,
                      memlock={"needed_bytes": 4 << 20, "cap_ipc_lock": False})
    assert not proofs.pinned(uncharged, CONTEXT)["ok"]
    one_missing = uring({"buffers": "pinned"}, per_queue=[queue, {"registration": None}],
                        pinned_bytes=4 << 20, memlock={"needed_bytes": 4 << 20})
    assert not proofs.pinned(one_missing, CONTEXT)["ok"]
    assert not proofs.pinned(uring({"buffers": "pinned"}), CONTEXT)["ok"]  # no queue at all
    with pytest.raises(CheckError, match="pinned check failed: 1 of 2 queues"):
        check_statistics(one_missing)


def test_zerocopy() -> None:
    good = uring({"zerocopy": True}, buffers={"zc_requests": 990, "copied_requests": 10,
                                              "zc_bytes": 990 << 12, "copied_bytes": 10 << 12})
    result = proofs.zerocopy(good, CONTEXT)
    assert result["ok"] and result["share"] == pytest.approx(0.99)
    assert (result["zero_copied"], result["copied"]) == (990, 10)
    assert (result["zc_bytes"], result["copied_bytes"]) == (990 << 12, 10 << 12)
    bad = uring({"zerocopy": True}, buffers={"zc_requests": 980, "copied_requests": 20})
    assert not proofs.zerocopy(bad, CONTEXT)["ok"]
    assert not proofs.zerocopy(uring({"zerocopy": True}, buffers={}), CONTEXT)["ok"]
    with pytest.raises(CheckError, match="zerocopy check failed"):
        check_statistics(bad)


@pytest.mark.parametrize("kind", ["uring", "devfuse"])
def test_native(kind: str) -> None:
    def stats(served: int) -> TransportStatistics:
        native = {"reads": served, "writes": 0, "served": served}
        if kind == "uring":
            return uring({"datapath": "native"}, native=native)
        return DevfuseStatistics("devfuse", {"datapath": "native"}, {}, requests=1001,
                                 ops={"INIT": 1, "READ": 1000}, native=native)

    result = proofs.native(stats(995), CONTEXT)
    assert result["ok"] and (result["served"], result["total"]) == (995, 1000)
    assert not proofs.native(stats(980), CONTEXT)["ok"]
    with pytest.raises(CheckError, match="native check failed: the native data path answered "
                                         "0 of 1000"):
        check_statistics(stats(0))


def test_peer_ring() -> None:
    io_uring = LibfuseStatistics("libfuse", {"mode": "uring"}, {}, requests=None,
                                 ring_expected=True)
    window = {"ring_completions": 1003}
    result = proofs.peer_ring(io_uring, proofs.ProofContext(window, 1000))
    assert result == {"name": "peer_ring", "ok": True, "ring_completions": 1003,
                      "fio_ios": 1000, "reason": result["reason"]}
    assert check_statistics(io_uring, proofs.ProofContext(window, 1000)) == [result]
    with pytest.raises(CheckError, match="peer_ring check failed: .* 900 completions"):
        check_statistics(io_uring, proofs.ProofContext({"ring_completions": 900}, 1000))
    # Without the runner's measurements there is no proof.
    assert not proofs.peer_ring(io_uring, CONTEXT)["ok"]
    assert io_uring.ring_completions_are_requests()
    legacy = LibfuseStatistics("libfuse", {"mode": "legacy"}, {}, requests=None,
                               ring_expected=False)
    assert proofs.peer_ring(legacy, proofs.ProofContext({}, 1000))["ok"]
    assert not proofs.peer_ring(legacy, proofs.ProofContext({"ring_completions": 2}, 9))["ok"]
    assert not legacy.ring_completions_are_requests()


# -- the JSON ---------------------------------------------------------------------------------
def test_statistics_round_trip_through_json() -> None:
    stats = TransportStatistics("t", None, {}, requests=10, ops={"READ": 3},
                                ops_ring={"READ": 3}, requests_ring=3, detail={"q": [1]})
    data = json.loads(json.dumps({"spec": "uring", **stats.as_dict()}))
    assert "errors" not in data and "requested" not in data and data["q"] == [1]
    back = TransportStatistics.from_dict(data)
    assert back.ops_ring == {"READ": 3} and back.detail == {"q": [1], "spec": "uring"}
    assert back.requested is None  # older documents: not known
    nobody = TransportStatistics("t", {}, {}, requests=None)
    assert TransportStatistics.from_dict(nobody.as_dict()).requests is None


def test_typed_statistics_write_flat_keys_and_read_back_the_same() -> None:
    stats = uring({"depth": 8, "zerocopy": False, "sched": "auto"},
                  effective={"depth": 8, "zerocopy": "off", "sched": "idle", "queues": 2},
                  per_queue=[{"qid": 0}], locked_bytes=0, pinned_bytes=0, memlock=None,
                  pinning="none", buffers={"zc_requests": 0}, kernel_offer=None,
                  enable_uring="Y", first_request_via_ring=True, teardown={},
                  sched_guard={"boosts": 2, "boosted_ms": 5.0}, detail={"spec": "uring"})
    data = json.loads(json.dumps(stats.as_dict()))
    # As before the split: `settings` is what ran (sched resolved, queue count); the spec's
    # options are beside it; what did not happen (no native path) is left out, other
    # None values are null.
    assert data["settings"] == {"depth": 8, "zerocopy": "off", "sched": "idle", "queues": 2}
    assert data["requested"]["sched"] == "auto" and "effective" not in data
    assert "native" not in data and data["kernel_offer"] is None and data["memlock"] is None
    assert data["sched_guard"]["boosts"] == 2 and data["spec"] == "uring"
    assert list(data)[:3] == ["transport", "settings", "requested"]
    back = UringStatistics.from_dict(data)
    assert back == stats and back.settings is back.effective
    assert back.as_dict() == data
