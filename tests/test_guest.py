"""`ringside kernel` and `ringside guest`: kernel names and paths, bad input, where runs ran.

The boot tests at the end boot a real guest (TCG here: ~1-2 min each) on the cached
7.3 kernel; they are skipped when it is not cached, except on CI, which fetches it first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy
import pandas
import pytest

from conftest import ON_CI, REPO
from harness.analysis import where
from harness.analysis.campaign_results import load_campaign
from harness.analysis.compare import compare
from harness.analysis.synthetic import Point, default_points, make_run
from harness.guests import host, inside, kernels
from harness.results import rows, write_result

BOOT_KERNEL = "7.3"


def fake_bzimage(path: Path, version: str = "7.9.0-test (me@host) #1 SMP") -> Path:
    """A file with an x86 boot header pointing at a version string, as bzImage has."""
    data = bytearray(0x5000)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x4500 - 0x200).to_bytes(2, "little")
    data[0x4500 : 0x4500 + len(version)] = version.encode()
    path.write_bytes(bytes(data))
    return path


def fake_cache(cache: Path, name: str = "7.9-amd64", uring: bool = True) -> Path:
    root = cache / name
    moddir = root / "usr/lib/modules" / name
    moddir.mkdir(parents=True)
    fake_bzimage(moddir / "vmlinuz", f"{name} (debian-kernel@lists.debian.org) #1 SMP")
    config = "CONFIG_FUSE_FS=y\nCONFIG_IO_URING=y\n"
    config += "CONFIG_FUSE_IO_URING=y\n" if uring else "# CONFIG_FUSE_IO_URING is not set\n"
    (moddir / "config").write_text(config)
    header = root / "usr/include/linux"
    header.mkdir(parents=True)
    (header / "fuse.h").write_text("#define FUSE_KERNEL_VERSION 7\n"
                                   "#define FUSE_KERNEL_MINOR_VERSION 46\n")
    (root / "kernel.json").write_text(json.dumps({"release": name, "version": "7.9-1"}))
    return root


# -- names and paths --------------------------------------------------------------------
def test_cached_name_resolves_with_and_without_flavour(tmp_path: Path) -> None:
    fake_cache(tmp_path)
    for spec in ("7.9", "7.9-amd64"):
        k = kernels.resolve(spec, cache=tmp_path)
        assert k.name == "7.9-amd64" and k.release == "7.9-amd64"
        assert k.fuse_minor()[0] == 46
        assert k.missing_uring_configs() == []
    assert [k.name for k in kernels.cached(tmp_path)] == ["7.9-amd64"]


def test_unknown_name_lists_cached_kernels_and_the_fetch_command(tmp_path: Path) -> None:
    fake_cache(tmp_path)
    with pytest.raises(kernels.KernelError) as e:
        kernels.resolve("6.99", cache=tmp_path)
    assert "7.9-amd64" in str(e.value) and "ringside kernel fetch 6.99" in str(e.value)


def test_image_path_reads_release_from_the_boot_header(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "bzImage")
    k = kernels.resolve(str(image), cache=tmp_path / "none")
    assert k.release == "7.9.0-test" and k.image == image.resolve()
    assert k.fuse_minor()[0] is None and "unknown" in k.fuse_minor()[1]
    assert k.missing_uring_configs() is None  # no config: the guest finds out


def test_build_tree_gives_config_header_and_modules(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "include/uapi/linux").mkdir(parents=True)
    (tree / "Makefile").write_text("")
    (tree / ".config").write_text("CONFIG_FUSE_FS=m\nCONFIG_IO_URING=y\n")
    (tree / "include/uapi/linux/fuse.h").write_text("#define FUSE_KERNEL_MINOR_VERSION 47\n")
    fake_bzimage(tree / "arch/x86/boot/bzImage")
    for spec in (tree, tree / "arch/x86/boot/bzImage"):
        k = kernels.resolve(str(spec), cache=tmp_path / "none")
        assert k.build_tree == tree.resolve()
        assert k.fuse_minor()[0] == 47
        assert k.missing_uring_configs() == ["CONFIG_FUSE_IO_URING"]
        assert k.fuse_is_module()


@pytest.mark.parametrize("content", [b"", b"not a kernel" * 100, b"\0" * 0x5000])
def test_a_path_that_is_not_a_kernel_image(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notakernel"
    path.write_bytes(content)
    with pytest.raises(kernels.KernelError, match="is not an x86 kernel image"):
        kernels.resolve(str(path), cache=tmp_path)


def test_missing_path_and_directory_without_image(tmp_path: Path) -> None:
    with pytest.raises(kernels.KernelError, match="does not exist"):
        kernels.resolve(str(tmp_path / "nope" / "bzImage"), cache=tmp_path)
    with pytest.raises(kernels.KernelError, match="without arch/x86/boot/bzImage"):
        kernels.resolve(str(tmp_path), cache=tmp_path)


def run_cli(*args: str, timeout: float = 120, tmp: Path | None = None
            ) -> subprocess.CompletedProcess:
    # TMPDIR: the guest's status directory, named on qemu's command line, is then below
    # `tmp`, which tells this test's qemu from any other guest's.
    env = dict(os.environ, **({"TMPDIR": str(tmp)} if tmp else {}))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_guest_refuses_bad_input_before_booting(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("x" * 5000)
    cases = {
        ("--kernel", "no-such-kernel-9.9", "--", "doctor"): "ringside kernel fetch no-such",
        ("--kernel", str(junk), "--", "doctor"): "not an x86 kernel image",
        ("--kernel", str(tmp_path / "missing"), "--", "doctor"): "does not exist",
        ("--kernel", "7.3", "--memory", "lots", "--", "doctor"): "bad --memory",
        ("--kernel", "7.3"): "nothing to run",
    }
    for args, expected in cases.items():
        proc = run_cli("guest", *args, tmp=tmp_path)
        assert proc.returncode != 0, args
        assert expected in proc.stderr, (args, proc.stderr)
    assert not _guest_qemus(tmp_path)


def test_kernel_without_fuse_io_uring_names_the_missing_config(tmp_path: Path) -> None:
    root = fake_cache(tmp_path, uring=False)
    k = kernels.resolve("7.9", cache=tmp_path)
    with pytest.raises(kernels.KernelError, match="lacks CONFIG_FUSE_IO_URING=y"):
        host.run(["doctor"], host.GuestOptions(kernel=k, log=lambda m: None))
    assert (root / "kernel.json").exists()


@pytest.mark.mount
def test_full_result_directory_is_refused(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], check=True)
    try:
        with pytest.raises(host.GuestError, match="is full"):
            host.check_writable(full)
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)


def test_result_dirs_follow_out(tmp_path: Path) -> None:
    assert host.result_dirs(["run", "x"]) == [Path("results").absolute()]
    assert host.result_dirs(["run", "x", "--out", str(tmp_path)]) == [tmp_path]
    assert host.result_dirs(["campaign", "q", f"--out={tmp_path}"]) == [tmp_path]


def test_tidy_results_removes_only_unfinished_files(tmp_path: Path) -> None:
    since = time.time() - 1
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "a.fio").write_text("")  # beside its result: kept
    (tmp_path / "b.fio").write_text("")  # no result: the run was cut
    (tmp_path / ".c.json.tmp").write_text("")
    removed = host.tidy_results([tmp_path], since)
    assert sorted(p.name for p in removed) == [".c.json.tmp", "b.fio"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.fio", "a.json"]


def test_the_guest_script_reads_command_and_facts_as_the_host_wrote_them(tmp_path: Path) -> None:
    """params.sh, sourced as guest-init.sh sources it, gives back the command word for word
    and the accelerator the host chose for this boot."""
    assert subprocess.run(["bash", "-n", str(host.GUEST_INIT)]).returncode == 0
    opts = host.GuestOptions(kernel=kernels.resolve(str(fake_bzimage(tmp_path / "bzImage"))),
                             command=True, env={"EXTRA": "a b"})
    facts = inside.GuestFacts(accel="tcg", qemu_version="7.2.22", kernel="7.3-amd64")
    command = ["sh", "-c", 'echo "$1|$EXTRA|$RINGSIDE_VIRTUALIZATION|$PWD"; exit 7', "-",
               "it's $HOME"]
    (tmp_path / "params.sh").write_text(host.guest_parameters(command, opts, facts))
    proc = subprocess.run(["bash", "-c", '. "$1/params.sh" && cd "$workdir" && '
                           '"${command[@]}"', "-", str(tmp_path)],
                          capture_output=True, text=True, cwd="/")  # fmt: skip
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout == f"it's $HOME|a b|tcg|{os.getcwd()}\n"


def test_the_accelerator_is_recorded_with_the_boot_command(tmp_path: Path) -> None:
    if host.vng_path() is None:
        pytest.skip("virtme-ng (vng) is missing: `make setup`")
    opts = host.GuestOptions(kernel=kernels.resolve(str(fake_bzimage(tmp_path / "bzImage"))))
    for accel in inside.ACCELERATORS:
        command = host.boot_command(opts, accel, tmp_path, [tmp_path])
        assert command.facts.accel == accel
        assert ("--disable-kvm" in command.argv) == command.facts.emulated
        params = host.guest_parameters(["doctor"], opts, command.facts)
        assert f"export {inside.VIRTUALIZATION_ENV}={accel}\n" in params
    with pytest.raises(ValueError, match="accelerator"):
        host.boot_command(opts, "auto", tmp_path, [tmp_path])


# -- results say where they ran ---------------------------------------------------------
def test_kernel_section_from_the_codecs_init_or_unknown() -> None:
    stats = {"settings": {"negotiated": {"kernel_minor": 46, "kernel_flags": "0x20000000001"}}}
    s = inside.kernel_section(stats)
    assert s["release"] == os.uname().release
    assert s["fuse_minor_offered"] == 46 and s["fuse_flags_offered"] == "0x20000000001"
    assert s["fuse_flags_offered_names"] == ["FUSE_ASYNC_READ", "FUSE_OVER_IO_URING"]
    s = inside.kernel_section({"transport": "pyfuse3"})
    assert s["fuse_minor_offered"] is None and s["fuse_init_source"].startswith("unknown")


def test_where_run_reads_the_guest_environment(monkeypatch) -> None:
    monkeypatch.delenv(inside.VIRTUALIZATION_ENV, raising=False)
    assert inside.where_run() == {"kind": "none"}
    assert not inside.in_guest() and inside.slowdown() == 1
    monkeypatch.setenv(inside.VIRTUALIZATION_ENV, "tcg")
    monkeypatch.setenv(inside.QEMU_VERSION_ENV, "7.2.22")
    assert inside.where_run()["emulated"] and inside.where_run()["qemu_version"] == "7.2.22"
    assert inside.slowdown() > 1


def test_the_facts_the_host_records_are_what_the_guest_reads(monkeypatch) -> None:
    for accel in inside.ACCELERATORS:
        facts = inside.GuestFacts(accel=accel, qemu_version="7.2.22", kernel="7.3-amd64")
        for name in (inside.VIRTUALIZATION_ENV, inside.QEMU_VERSION_ENV,
                     inside.GUEST_KERNEL_ENV):
            monkeypatch.delenv(name, raising=False)
        for name, value in facts.environment().items():
            monkeypatch.setenv(name, value)
        assert inside.this_guest() == facts
        assert inside.where_run() == {"kind": accel, "qemu_version": "7.2.22",
                                      "guest_kernel": "7.3-amd64", "emulated": accel == "tcg"}
        section = inside.kernel_section({"transport": "pyfuse3"})
        assert section["guest_kernel"] == "7.3-amd64" and "uapi_header" in section


def _campaign(path: Path, kernels_virt: list[tuple[str, str]]) -> Path:
    point = Point("randread-4k-qd1", default_points()[0].fio)
    for kernel, virt in kernels_virt:
        for spec in ("pyfuse3", "uring"):
            for rep in range(2):
                data = make_run(point, spec, 1.0, numpy.random.default_rng(rep), campaign="c",
                                repetition=rep, start=datetime(2026, 1, 1, tzinfo=UTC),
                                host={"hostname": "h", "kernel": kernel, "cpu_count": 2})
                data["virtualization"] = {"kind": virt, "qemu_version": "7.2.22"}
                write_result(path, data)
    return path


def test_tables_keep_kernels_apart_and_mark_emulated_runs(tmp_path: Path) -> None:
    path = _campaign(tmp_path / "c", [("6.18.0", "none"), ("7.3-amd64", "tcg")])
    assert rows(json.loads(next(path.glob("*.json")).read_text()))[0]["virtualization"]
    c = load_campaign(path)
    specs = c.transports()
    assert "uring:kernel=7.3-amd64,vm=tcg" in specs and "uring:kernel=6.18.0" in specs
    comparison = compare(c)
    text = "\n".join(comparison.warnings)
    assert "this table mixes kernels" in text and "emulated CPU (TCG)" in text
    assert "EMULATED (4 of 8 runs" in comparison.footer


def test_one_kernel_all_emulated_still_says_so(tmp_path: Path) -> None:
    c = load_campaign(_campaign(tmp_path / "c", [("7.3-amd64", "tcg")]))
    assert c.transports() == ["pyfuse3", "uring"]
    assert "EMULATED (all runs" in c.footer()
    assert where.warnings(pandas.DataFrame(c.table))


# -- real guests ------------------------------------------------------------------------
def _boot_kernel() -> kernels.Kernel:
    if inside.in_guest():
        pytest.skip("already inside a guest: no guest in a guest")
    try:
        return kernels.resolve(BOOT_KERNEL)
    except kernels.KernelError as e:
        if ON_CI:
            pytest.fail(f"CI fetches the guest kernel first: {e}")
        pytest.skip(str(e))


def _guest_qemus(tmp: Path) -> set[str]:
    """qemu processes of guests started by this test (their status dir is below `tmp`)."""
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    return {line for line in out.splitlines() if str(tmp) in line}


@pytest.mark.guest
def test_guest_runs_a_command_and_passes_its_exit_code(tmp_path: Path) -> None:
    _boot_kernel()
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("guest", "--kernel", BOOT_KERNEL, "--command", "--rwdir", str(out), "--",
                   "sh", "-c", f"uname -r; cat /sys/module/fuse/parameters/enable_uring; "
                   f"echo written > {out}/file; exit 7", timeout=900, tmp=tmp_path)
    assert proc.returncode == 7, proc.stderr
    lines = proc.stdout.splitlines()
    assert "7.3-amd64" in lines and "Y" in lines, proc.stdout
    assert (out / "file").read_text() == "written\n"
    assert not _guest_qemus(tmp_path)


@pytest.mark.guest
def test_ctrl_c_stops_the_command_then_the_guest_and_leaves_no_qemu(tmp_path: Path) -> None:
    _boot_kernel()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "guest", "--kernel", BOOT_KERNEL, "--command", "--",
         "sh", "-c", "trap 'echo got-term; exit 130' TERM; echo command-up; "
         "sleep 600 & wait"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
    )  # fmt: skip
    out = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            out.append(line)
            if not line or "command-up" in line:
                break
        assert "command-up" in out[-1], "".join(out)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=300)
        out.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(out)
    assert proc.returncode == 130, text
    assert "stopping the command in the guest" in text and "got-term" in text
    assert not _guest_qemus(tmp_path)


@pytest.mark.guest
def test_ctrl_c_while_booting_stops_qemu(tmp_path: Path) -> None:
    _boot_kernel()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "guest", "--kernel", BOOT_KERNEL, "--accel", "tcg",
         "--command", "--", "true"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=dict(os.environ, TMPDIR=str(tmp_path)))
    try:
        # Interrupt as soon as qemu runs: a TCG kernel takes seconds to boot, so the
        # command cannot have started yet (a fixed sleep raced a quick boot).
        deadline = time.monotonic() + 120
        while not _guest_qemus(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _guest_qemus(tmp_path), "qemu did not start"
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    assert "stopping the guest" in out and "interrupted" in out
    assert not _guest_qemus(tmp_path)


@pytest.mark.guest
def test_a_killed_ringside_guest_leaves_no_qemu(tmp_path: Path) -> None:
    """SIGKILL gives Ringside no chance to stop the guest: its guard process does."""
    _boot_kernel()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "guest", "--kernel", BOOT_KERNEL, "--accel", "tcg",
         "--command", "--", "sleep", "600"], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=str(tmp_path)))
    try:
        deadline = time.monotonic() + 120
        while not _guest_qemus(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _guest_qemus(tmp_path), "qemu did not start"
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
                _guest_qemus(tmp_path) or list(tmp_path.glob("ringside-guest-*"))):
            time.sleep(0.5)
        assert not _guest_qemus(tmp_path), "qemu outlived the killed ringside guest"
        assert not list(tmp_path.glob("ringside-guest-*")), "the status directory was left"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for line in _guest_qemus(tmp_path):  # never leave one behind, even on failure
            os.kill(int(line.split()[0]), 9)


@pytest.mark.guest
def test_a_kernel_that_does_not_boot_shows_its_console_and_leaves_no_qemu(tmp_path: Path) -> None:
    _boot_kernel()  # the same tools; this image only looks like a kernel
    image = fake_bzimage(tmp_path / "bzImage")
    proc = run_cli("guest", "--kernel", str(image), "--accel", "tcg", "--boot-stall", "15",
                   "--boot-attempts", "2", "--command", "--", "true", timeout=600, tmp=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "did not boot kernel" in proc.stderr and "last console lines" in proc.stderr
    assert "retrying (2/2)" in proc.stderr or "qemu exited" in proc.stderr
    assert not _guest_qemus(tmp_path)
