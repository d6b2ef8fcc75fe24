"""transports.native: the one compiled module, its stamp and its loader's refusals. No mount."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from transports import native
from transports.fuse import abi
from transports.native import sources

ROOT = Path(__file__).resolve().parent.parent


def _copy_sources(into: Path) -> None:
    for name in sources.STAMPED:
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sources.TRANSPORTS / name, into / name)


def test_a_stale_build_is_refused(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    stamp = sources.source_hash(tmp_path)
    assert stamp == sources.source_hash()  # the hash is of the files, not of where they are
    native.check_stamp(stamp, tmp_path)  # built from these very sources: accepted
    with (tmp_path / "datapath" / "native.c").open("a") as c:
        c.write("/* changed after the build */\n")
    with pytest.raises(native.NativeModuleUnavailable, match="stale") as refused:
        native.check_stamp(stamp, tmp_path)
    assert "make setup" in str(refused.value) and "pip install -e ." in str(refused.value)
    assert isinstance(refused.value, ImportError)  # as a missing module always was


def test_every_stamped_file_counts(tmp_path: Path) -> None:
    _copy_sources(tmp_path)
    stamps = {sources.source_hash(tmp_path)}
    for name in sources.STAMPED:
        original = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(original + b"\n")
        stamps.add(sources.source_hash(tmp_path))
        (tmp_path / name).unlink()
        stamps.add(sources.source_hash(tmp_path))
        (tmp_path / name).write_bytes(original)
    assert len(stamps) == 1 + 2 * len(sources.STAMPED)


def test_an_install_without_sources_is_not_checked(tmp_path: Path) -> None:
    assert sources.source_hash(tmp_path) is None
    native.check_stamp("built elsewhere", tmp_path)


def test_a_missing_build_names_its_fix() -> None:
    with pytest.raises(native.NativeModuleUnavailable, match="is not built") as refused:
        native.load("transports._native_never_built")
    message = str(refused.value)
    assert "make setup" in message
    if not sources.liburing_headers():
        assert "apt-get install liburing-dev" in message


def test_the_built_module_is_the_trees() -> None:
    """`make setup` built transports._native from the sources in this tree."""
    ffi, lib = native.load()
    assert ffi.string(lib.rs_native_stamp()).decode() == sources.source_hash()
    for area in ("rs_next", "rs_dev_serve", "rs_guard_start", "rs_follow"):  # ring, datapath,
        assert hasattr(lib, area), area  # sched: one module


def test_the_compiler_lays_out_fuse_abi_h_as_abi_py_reads_it() -> None:
    ffi, _ = native.load()
    declared = abi.declarations()
    for struct_name in declared.list_types()[1]:
        cname = f"struct {struct_name}"
        assert ffi.sizeof(cname) == declared.sizeof(cname), cname
        for field, _ in declared.typeof(cname).fields:
            assert ffi.offsetof(cname, field) == declared.offsetof(cname, field), (cname, field)


def test_nothing_imports_the_compiled_module_but_the_loader() -> None:
    direct = re.compile(
        r"^\s*(from\s+transports\._native\b|import\s+transports\._native\b"
        r"|from\s+transports\s+import\s+[^#\n]*\b_native\b)|importorskip\(\"transports\._native",
        re.M,
    )
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("transports", "harness", "tests", "notebooks")
        for path in (ROOT / folder).rglob("*.py")
        if path.parent != sources.TRANSPORTS / "native" and direct.search(path.read_text())
    ]
    assert not offenders, f"import transports.native instead (it checks the build): {offenders}"
