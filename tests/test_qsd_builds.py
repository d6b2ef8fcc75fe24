"""`ringside peers fetch qsd` and the qsd transport's choice of build, without QEMU.

Patch series read and applied to small fake source trees (mbox, .patch files, plain
diffs; a patch that does not apply names its file and hunk), the version choice among
what Debian lists and serves, a failed build's report, the cache (variants, other
versions, --if-missing, no network), the build's probe on fake daemons, the refusal of
io_uring=on before mounting, and the proof of the path the requests took.
(A real build takes 10-20 minutes: tests/test_qsd_live.py uses a cached one.)
"""

from __future__ import annotations

import io
import os
import shutil
import textwrap
from pathlib import Path

import pytest

# One refused connection, no apt retries: the same as for libfuse's fetch.
from test_peer_builds import UNREACHABLE, no_apt_retries  # noqa: E402,F401

from harness.commands import peers as peers_command
from harness.debian.private_apt import AptError
from harness.peer_builds import BuildError, meson, patches, qsd
from harness.peer_builds.debian_source import SourceFiles
from transports import proofs
from transports.base import TransportUnavailable, parse_spec
from transports.peers import builds, qsd_build
from transports.statistics import QsdStatistics

# -- patch series -----------------------------------------------------------------------
ORIGINAL = "".join(f"line {i}\n" for i in range(1, 41))


def source_tree(root: Path) -> Path:
    (root / "block").mkdir(parents=True)
    (root / "block" / "fuse.c").write_text(ORIGINAL)
    (root / "README").write_text("a fake source tree\n")
    return root


def diff(path: str, hunks: list[tuple[int, str, str]]) -> str:
    """A unified diff of `path` replacing, at each 1-based line, one line with another."""
    out = [f"diff --git a/{path} b/{path}", f"--- a/{path}", f"+++ b/{path}"]
    for line, old, new in hunks:
        before = [f"line {i}" for i in range(line - 3, line)]
        after = [f"line {i}" for i in range(line + 1, line + 4)]
        out += [f"@@ -{line - 3},7 +{line - 3},7 @@ fuse_export_create",
                *[f" {c}" for c in before], f"-{old}", f"+{new}", *[f" {c}" for c in after]]
    return "\n".join(out) + "\n"


def mail(number: int, total: int, subject: str, body: str, qp: bool = False) -> str:
    encoding = "quoted-printable" if qp else "8bit"
    if qp:
        body = body.replace("=", "=3D")
    return (f"From 0123456789abcdef0123456789abcdef0123456{number} Mon Sep 17 00:00:00 2001\n"
            f"From: Some One <one@example.org>\nDate: Sat, 7 Feb 2026 12:09:0{number} +0000\n"
            f"Subject: [PATCH v4 {number}/{total}] {subject}\nMIME-Version: 1.0\n"
            f"Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: {encoding}\n"
            f"\n{subject}, the message.\n\nSigned-off-by: Some One <one@example.org>\n---\n"
            f"{body}--\n2.43.0\n\n")


def test_an_mbox_series_applies_in_order_and_skips_its_cover_letter(tmp_path):
    cover = mail(0, 2, "add a thing", "The cover letter has no diff.\n")
    first = mail(1, 2, "fuse: change line 10", diff("block/fuse.c", [(10, "line 10", "ten = 1")]),
                 qp=True)
    second = mail(2, 2, "fuse: change line 30", diff("block/fuse.c", [(30, "line 30", "thirty")]))
    mbox = tmp_path / "v4.mbx"
    mbox.write_text(cover + first + second)
    series = patches.read_series([mbox])
    assert [p.subject for p in series.patches] == ["[PATCH v4 1/2] fuse: change line 10",
                                                   "[PATCH v4 2/2] fuse: change line 30"]
    assert [p.index for p in series.patches] == [2, 3] and series.patches[0].of == 3
    assert len(series.skipped) == 1 and "message 1 ([PATCH v4 0/2] add a thing)" in \
        series.skipped[0]
    assert b"ten = 1" in series.patches[0].body  # quoted-printable decoded
    tree = source_tree(tmp_path / "src")
    log = io.StringIO()
    for patch in series.patches:
        patches.apply(patch, tree, log)
    text = (tree / "block" / "fuse.c").read_text()
    assert "ten = 1\n" in text and "thirty\n" in text and "line 10\n" not in text
    records = series.record()
    assert records[0]["file"] == "v4.mbx" and records[0]["message"] == 2
    assert len(records[0]["sha256"]) == 64
    assert series.default_name().startswith("p") and len(series.default_name()) == 11


def test_separate_patch_files_and_a_plain_diff_give_the_same_set_name(tmp_path):
    d1 = diff("block/fuse.c", [(10, "line 10", "ten")])
    one = tmp_path / "0001-ten.patch"
    one.write_text(mail(1, 1, "fuse: ten", d1))
    plain = tmp_path / "ten.diff"
    plain.write_text(d1)
    from_mail, from_plain = patches.read_series([one]), patches.read_series([plain])
    assert from_plain.patches[0].subject == "ten.diff"
    # The mail's body has its message and signature too: another patch, another name.
    assert from_mail.default_name() != from_plain.default_name()
    assert patches.read_series([plain]).default_name() == from_plain.default_name()


def test_a_file_without_a_diff_is_named(tmp_path):
    notes = tmp_path / "cover.txt"
    notes.write_text("Subject: [PATCH 0/3] nothing here\n\njust words\n")
    with pytest.raises(patches.PatchError, match=rf"{notes} holds no diff"):
        patches.read_series([notes])
    with pytest.raises(patches.PatchError, match="cannot read patch file"):
        patches.read_series([tmp_path / "missing.patch"])


def test_a_patch_that_does_not_apply_names_its_file_the_target_and_the_hunk(tmp_path):
    good = diff("block/fuse.c", [(10, "line 10", "ten")])
    # Hunk 2 expects a line 30 the tree does not have.
    bad = diff("block/fuse.c", [(20, "line 20", "twenty"), (30, "line thirty", "thirty")])
    mbox = tmp_path / "series.mbx"
    mbox.write_text(mail(1, 2, "fuse: ten", good) + mail(2, 2, "fuse: twenty and thirty", bad))
    series = patches.read_series([mbox])
    tree = source_tree(tmp_path / "src")
    log = io.StringIO()
    patches.apply(series.patches[0], tree, log)
    with pytest.raises(patches.PatchError) as e:
        patches.apply(series.patches[1], tree, log)
    message = str(e.value)
    assert message.startswith(f"patch {mbox} (message 2 of 2) ([PATCH v4 2/2] fuse: twenty "
                              "and thirty) does not apply: ")
    assert "block/fuse.c: hunk #2 (@@ -27,7 +27,7 @@ fuse_export_create) does not apply at " \
           "line 27" in message
    assert "hunk #1" not in message
    text = (tree / "block" / "fuse.c").read_text()
    assert "twenty" not in text and "ten\n" in text  # the failed patch left nothing
    missing = patches.read_series([_written(tmp_path / "m.diff", diff("hw/none.c",
                                                                      [(5, "line 5", "x")]))])
    with pytest.raises(patches.PatchError, match="does not exist in the tree"):
        patches.apply(missing.patches[0], tree, log)


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_set_names_must_fit_a_directory_name():
    assert patches.check_name("fuse-uring-v4") == "fuse-uring-v4"
    for bad in ("", "a/b", "../x", "x" * 65, "-lead"):
        with pytest.raises(BuildError, match="cannot name a build directory"):
            patches.check_name(bad)


# -- versions Debian lists and serves ------------------------------------------------------
class FakeApt:
    """download() stands in for apt: these versions answer 404."""


def test_an_unknown_version_lists_what_debian_has(tmp_path):
    available = ["1:10.0.13+ds-1", "1:10.2.2+ds-1", "1:11.1.3+ds-1"]
    with pytest.raises(BuildError) as e:
        qsd._download(FakeApt(), "9.9.9", available, "Debian sid", tmp_path, print)
    assert str(e.value).startswith("Debian sid source package qemu has no version 9.9.9; it "
                                   "has: 10.0.13 (Debian 1:10.0.13+ds-1), 10.2.2 (Debian "
                                   "1:10.2.2+ds-1), 11.1.3 (Debian 1:11.1.3+ds-1)")
    with pytest.raises(BuildError, match="no such source package"):
        qsd._download(FakeApt(), None, [], "Debian sid", tmp_path, print)


def test_versions_listed_but_not_served_are_skipped_saying_so(tmp_path, monkeypatch):
    served = {"1:10.2.2+ds-1"}
    tried: list[str] = []

    def download(apt, package, version, into):
        tried.append(version)
        if version not in served:
            raise AptError("`apt-get source` failed (exit 100):\nE: Failed to fetch "
                           f"http://m/qemu_{version}.dsc  404  Not Found")
        return SourceFiles(into / "x.dsc", into / "x.orig.tar.xz", "ab" * 32)

    monkeypatch.setattr(qsd.debian_source, "download", download)
    log: list[str] = []
    available = ["1:10.0.13+ds-1", "1:10.2.2+ds-1", "1:11.1.2+ds-3", "1:11.1.3+ds-1"]
    version, _files, unserved = qsd._download(FakeApt(), None, available, "Debian sid",
                                              tmp_path, log.append)
    assert version == "1:10.2.2+ds-1" and unserved == ["1:11.1.3+ds-1", "1:11.1.2+ds-3"]
    assert tried == ["1:11.1.3+ds-1", "1:11.1.2+ds-3", "1:10.2.2+ds-1"]
    assert any("does not serve its source files (404); trying the next older" in m
               for m in log)
    served.clear()
    with pytest.raises(BuildError, match=r"none of the versions listed is served \(404"):
        qsd._download(FakeApt(), "11.1.3", available, "Debian sid", tmp_path, log.append)


def test_other_apt_failures_are_not_taken_for_404(tmp_path, monkeypatch):
    def download(apt, package, version, into):
        raise AptError("`apt-get source` failed: E: Could not resolve 'deb.debian.org'")

    monkeypatch.setattr(qsd.debian_source, "download", download)
    with pytest.raises(AptError, match="Could not resolve"):
        qsd._download(FakeApt(), None, ["1:10.2.2+ds-1"], "Debian sid", tmp_path, print)


def test_the_upstream_version_drops_debians_repack_suffix():
    assert qsd._upstream("1:10.2.2+ds-1") == "10.2.2"
    assert qsd._upstream("1:11.1.3+ds-1") == "11.1.3"


def test_the_write_copy_fix_is_recognised(tmp_path):
    fuse = tmp_path / "block" / "export" / "fuse.c"
    fuse.parent.mkdir(parents=True)
    fuse.write_text("ret = blk_pwrite(exp->common.blk, offset, size, buf, 0);\n")  # 7.2
    assert not qsd._has_write_copy_fix(tmp_path)
    fuse.write_text("copied = blk_blockalign(exp->common.blk, size);\n"
                    "memcpy(copied, buf, size);\n")  # 10.x
    assert qsd._has_write_copy_fix(tmp_path)
    fuse.write_text("memcpy(copied, in_place_buf, in_place_size);\n")  # the coroutine export
    assert qsd._has_write_copy_fix(tmp_path)


def test_the_meson_minimum_comes_from_pythondeps(tmp_path):
    (tmp_path / "pythondeps.toml").write_text(
        '[meson]\nmeson = { accepted = ">=1.5.0", installed = "1.9.0", canary = "meson" }\n')
    assert qsd._meson_minimum(tmp_path) == "1.5.0"
    with pytest.raises(BuildError, match="not a QEMU >= 8.1 source tree"):
        qsd._meson_minimum(tmp_path / "none")


def test_a_failed_configure_shows_its_log_tail_and_path(tmp_path):
    configure = tmp_path / "configure"
    configure.write_text("#!/bin/sh\nfor i in $(seq 1 40); do echo step $i; done\n"
                         "echo 'ERROR: Dependency \"glib-2.0\" not found'\nexit 1\n")
    configure.chmod(0o755)
    log_path = tmp_path / "qsd.log"
    with open(log_path, "w") as log, pytest.raises(BuildError) as e:
        meson.run_logged([[str(configure), "--enable-fuse"], ["ninja", "-C", "."]], log,
                         log_path, cwd=tmp_path)
    message = str(e.value)
    assert message.startswith(f"`{configure} --enable-fuse` failed (exit 1)")
    assert 'Dependency "glib-2.0" not found' in message and "step 40" in message
    assert "step 10\n" not in message and message.endswith(f"full log: {log_path}")
    assert "ninja" not in log_path.read_text()  # nothing after the failed step


# -- the cache ------------------------------------------------------------------------------
def stamped(cache: Path, version: str, variant: str | None = None,
            io_uring_option: bool = False, patches_record=None) -> Path:
    root = builds.root_of("qsd", version, cache, variant)
    (root / "build" / "storage-daemon").mkdir(parents=True)
    builds.write_stamp(root, {
        "program": "qsd", "version": version, "variant": variant,
        "source": {"package": "qemu", "debian_version": f"1:{version}+ds-1", "sha256": "cd" * 32,
                   "write_copy_fix": {"present": True}},
        "patches": patches_record,
        "build": {"export": {"io_uring_option": io_uring_option}},
        "built": "2026-12-07T06:00:00+00:00",
    })
    return root


def test_variants_are_builds_only_under_their_own_name(tmp_path):
    stamped(tmp_path, "10.2.2")
    stamped(tmp_path, "10.2.2", "fuse-uring-v4")
    wrong = builds.root_of("qsd", "10.2.2", tmp_path, "renamed")
    shutil.copytree(builds.root_of("qsd", "10.2.2", tmp_path, "fuse-uring-v4"), wrong)
    found, not_builds = builds.scan("qsd", tmp_path)
    assert [b.name for b in found] == ["10.2.2", "10.2.2+fuse-uring-v4"]
    assert [p.name for p in not_builds] == ["qsd-10.2.2+renamed"]
    assert builds.newest("qsd", tmp_path).name == "10.2.2"  # a patched one only by name


def test_if_missing_matches_version_and_patches_without_the_network(tmp_path):
    plain = stamped(tmp_path, "10.2.2")
    mbox = tmp_path / "s.patch"
    mbox.write_text(diff("block/fuse.c", [(10, "line 10", "ten")]))
    name = patches.read_series([mbox]).default_name()
    patched = stamped(tmp_path, "10.2.2", name)
    log: list[str] = []
    assert qsd.fetch(mirror=UNREACHABLE, cache=tmp_path, if_missing=True,
                     log=log.append).root == plain
    assert qsd.fetch("10.2.2", patch_files=[mbox], mirror=UNREACHABLE, cache=tmp_path,
                     if_missing=True, log=log.append).root == patched
    assert log == []
    # Another version, or other patches: it has to fetch, and says why it cannot.
    for kwargs in ({"version": "10.0.13"}, {"patch_files": [mbox], "name": "other"}):
        with pytest.raises(BuildError, match=r"cannot read Debian sid and experimental.*"
                           r"no network"):
            qsd.fetch(mirror=UNREACHABLE, cache=tmp_path, if_missing=True, log=log.append,
                      **kwargs)


def test_no_network_leaves_nothing_and_names_the_cause(tmp_path):
    leftover = tmp_path / f"{qsd.BUILDING_PREFIX}10.2.2-abcd"
    (leftover / "build").mkdir(parents=True)
    log: list[str] = []
    with pytest.raises(BuildError, match="no network"):
        qsd.fetch(mirror=UNREACHABLE, cache=tmp_path, log=log.append)
    assert not leftover.exists() and "left by an interrupted fetch" in log[0]
    assert builds.scan("qsd", tmp_path) == ([], [])
    assert not list(tmp_path.glob(".building-*"))


def test_bad_patch_input_fails_before_the_network(tmp_path):
    with pytest.raises(patches.PatchError, match="holds no diff"):
        qsd.fetch(patch_files=[_written(tmp_path / "x.patch", "nothing\n")],
                  mirror=UNREACHABLE, cache=tmp_path)
    with pytest.raises(BuildError, match="--name names a patch set"):
        qsd.fetch(name="x", mirror=UNREACHABLE, cache=tmp_path)
    with pytest.raises(BuildError, match="cannot name a build directory"):
        qsd.fetch(patch_files=[_written(tmp_path / "y.diff", diff("a", [(5, "line 5", "x")]))],
                  name="a/b", mirror=UNREACHABLE, cache=tmp_path)


def test_list_shows_qsd_builds_their_patches_and_the_build_setting(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setattr(builds, "CACHE_DIR", tmp_path)
    peers_command.run_list(None)
    assert "no qemu-storage-daemon build in" in capsys.readouterr().out
    stamped(tmp_path, "10.2.2")
    stamped(tmp_path, "10.2.2", "fuse-uring-v4", io_uring_option=True, patches_record={
        "name": "fuse-uring-v4",
        "applied": [{"file": "0001-a.patch", "message": 1, "subject": "[PATCH 1/2] a",
                     "sha256": "12" * 32},
                    {"file": "0002-b.patch", "message": 1, "subject": "[PATCH 2/2] b",
                     "sha256": "34" * 32}]})
    peers_command.run_list(None)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("qsd ")]
    assert lines[0].startswith("qsd 10.2.2: ") and "no patches" in lines[0]
    assert "io-uring option: no" in lines[0] and lines[0].endswith("[qsd:build=10.2.2]")
    assert "2 patches (fuse-uring-v4): [PATCH 1/2] a [121212121212]; [PATCH 2/2] b" in lines[1]
    assert "io-uring option: yes" in lines[1] and "write-copy fix: yes" in lines[1]


# -- the transport's build --------------------------------------------------------------------
def fake_daemon(path: Path, version: str = "10.2.2", io_uring: bool | None = True) -> Path:
    """A script answering the probes as a qemu-storage-daemon would (no QEMU in it)."""
    if io_uring is None:
        said = "Parameter 'type' does not accept value 'fuse'"
    elif io_uring:
        said = "Failed to stat '/nonexistent/ringside-probe': No such file or directory"
    else:
        said = "Parameter 'io-uring' is unexpected"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = --version ]; then echo "qemu-storage-daemon version {version}"; exit 0; fi
        echo "qemu-storage-daemon: --export ...: {said}" >&2
        exit 1
        """))
    path.chmod(0o755)
    return path


def test_build_names_cached_choices_and_paths(tmp_path):
    plain = stamped(tmp_path, "10.2.2")
    series = stamped(tmp_path, "10.2.2", "fuse-uring-v4", io_uring_option=True)
    for root, capable in ((plain, False), (series, True)):
        fake_daemon(root / "build" / qsd_build.BINARY, io_uring=capable)
    resolve = qsd_build.resolve
    assert resolve("cached", tmp_path).name == "10.2.2"
    assert resolve("cached-io-uring", tmp_path).name == "10.2.2+fuse-uring-v4"
    assert resolve("10.2.2+fuse-uring-v4", tmp_path).binary == str(
        series / "build" / qsd_build.BINARY)
    assert resolve("qsd-10.2.2", tmp_path).name == "10.2.2"
    by_path = resolve(str(series), tmp_path)
    assert by_path.name == "10.2.2+fuse-uring-v4" and by_path.stamp is not None
    own = fake_daemon(tmp_path / "own" / qsd_build.BINARY)
    assert resolve(str(tmp_path / "own"), tmp_path).binary == str(own)
    with pytest.raises(TransportUnavailable) as e:
        resolve("10.2.3", tmp_path)
    assert "cached: 10.2.2, 10.2.2+fuse-uring-v4" in str(e.value)
    assert "ringside peers fetch qsd" in str(e.value)
    empty = tmp_path / "empty"
    with pytest.raises(TransportUnavailable, match="no cached qemu-storage-daemon build "
                       "without patches"):
        resolve("cached", empty)
    with pytest.raises(TransportUnavailable, match="io-uring option.*--patches"):
        resolve("cached-io-uring", empty)


def test_the_probe_reads_what_the_export_accepts(tmp_path):
    found = qsd_build.probe(str(fake_daemon(tmp_path / "a", io_uring=True)))
    assert found.fuse and found.io_uring_option and found.io_uring_works
    assert found.version == "qemu-storage-daemon version 10.2.2"
    found = qsd_build.probe(str(fake_daemon(tmp_path / "b", io_uring=False)))
    assert found.fuse and not found.io_uring_option
    assert not qsd_build.probe(str(fake_daemon(tmp_path / "c", io_uring=None))).fuse
    liar = _written(tmp_path / "d", "#!/bin/sh\necho something else\n")
    liar.chmod(0o755)
    with pytest.raises(qsd_build.ProbeError, match="did not name qemu-storage-daemon"):
        qsd_build.probe(str(liar))


@pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None,
                    reason="Debian's qemu-storage-daemon is not installed")
def test_debians_installed_daemon_has_no_io_uring_option():
    found = qsd_build.probe(shutil.which("qemu-storage-daemon"))
    assert found.fuse and not found.io_uring_option
    assert "Parameter 'io-uring' is unexpected" in found.detail


def test_io_uring_on_is_refused_before_mounting_naming_the_build(tmp_path, monkeypatch):
    root = stamped(tmp_path, "10.2.2")
    fake_daemon(root / "build" / qsd_build.BINARY, io_uring=False)
    monkeypatch.setattr(builds, "CACHE_DIR", tmp_path)
    transport = parse_spec("qsd:build=10.2.2,io_uring=on").create()
    with pytest.raises(TransportUnavailable) as e:
        transport.check_available()
    message = str(e.value)
    assert "qsd:io_uring=on needs a FUSE export with the io-uring option" in message
    assert f"{root / 'build' / qsd_build.BINARY} (10.2.2, cached build named by build=)" in \
        message and "Parameter 'io-uring' is unexpected" in message
    # serve() refuses it the same way, before anything is mounted.
    mountpoint = tmp_path / "disk.img"
    mountpoint.touch()
    from transports.export.backing import parse_backing
    from transports.export.image import Export

    with Export(parse_backing("memory:1M")) as export, pytest.raises(TransportUnavailable):
        transport.serve(export, str(mountpoint), lambda: pytest.fail("mounted"))
    assert transport.server_pids() == []
    parse_spec("qsd:build=10.2.2").create().check_available()  # legacy is fine


def test_a_daemon_without_the_fuse_export_is_refused(tmp_path):
    daemon = fake_daemon(tmp_path / "nofuse" / qsd_build.BINARY, io_uring=None)
    with pytest.raises(TransportUnavailable, match="has no FUSE export"):
        parse_spec(f"qsd:build={daemon}").create().check_available()


# -- the proof ---------------------------------------------------------------------------------
def qsd_stats(io_uring: bool | None, tid: int = 4242) -> QsdStatistics:
    return QsdStatistics("qsd", {}, {}, requests=None, io_uring=io_uring, serving_tid=tid)


def window(ring: int | None, moved: int | None, tid: int = 4242) -> dict:
    """The serving thread's read/write bytes, `moved`, split between reads and writes."""
    main = {"tid": tid, "rchar": None if moved is None else moved // 3,
            "wchar": None if moved is None else moved - moved // 3}
    return {"ring_completions": ring, "threads": [{"tid": 1, "rchar": 10**9, "wchar": 10**9},
                                                  main]}


MiB = 1 << 20


def prove(stats: QsdStatistics, win: dict, ios: int, data: int = 0) -> dict:
    (result,) = proofs.run_proofs(stats, proofs.ProofContext(win, ios, data or ios * 4096))
    return result


def test_the_path_proof_needs_the_ring_for_io_uring_and_dev_fuse_for_legacy():
    assert qsd_stats(None).checks() == []  # a result from before the setting: nothing claimed
    uring = qsd_stats(True)
    # As measured here: 172033 completions for 160411 I/Os, the main loop's eventfds 0.4%.
    assert prove(uring, window(1010, 40 * 1024), 1000)["ok"]
    short = prove(uring, window(900, 40 * 1024), 1000)
    assert not short["ok"] and "posted 900 completions for 1000 fio I/Os" in short["reason"]
    # Completions alone do not do: the event loop's own polls are completions too.
    polled = prove(uring, window(2100, 4200 * 1000), 1000)
    assert not polled["ok"] and "moved 4200000 bytes for 4096000 bytes" in polled["reason"]
    legacy = qsd_stats(False)
    assert prove(legacy, window(1800, 4200 * 1000), 1000)["ok"]  # fd polls through io_uring
    assert prove(legacy, window(None, 4100 * 1000), 1000)["ok"]  # 7.2: no ring at all
    idle = prove(legacy, window(0, 40 * 1024), 1000)
    assert not idle["ok"] and "(1.0%); at least 99% must" in idle["reason"]
    assert not prove(legacy, window(0, 0), 0, data=1)["ok"]
    unmeasured = prove(legacy, window(0, 4 * MiB, tid=7), 1000)
    assert not unmeasured["ok"] and "was not measured" in unmeasured["reason"]
    assert not prove(legacy, window(0, None), 1000)["ok"]


def test_statistics_round_trip_through_json():
    stats = qsd_stats(True)
    stats.build = {"binary": "/x", "name": "10.2.2+v4", "patches": {"applied": []}}
    again = QsdStatistics.from_dict(stats.as_dict())
    assert again.io_uring is True and again.serving_tid == 4242
    assert again.build == stats.build and again.checks() == [proofs.qsd_path]


def test_a_threads_read_and_write_counts_are_read():
    from harness.point import metrics

    me = metrics.thread_stat(os.getpid(), os.getpid())
    assert None not in (me.syscr, me.syscw, me.rchar, me.wchar)
    before = metrics.snapshot(os.getpid())
    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        os.write(fd, b"x" * 1000)
    finally:
        os.close(fd)
    after = metrics.snapshot(os.getpid())
    (mine,) = [t for t in metrics.delta(before, after)["threads"] if t["tid"] == os.getpid()]
    assert mine["wchar"] >= 1000 and mine["syscw"] >= 1
