"""Kernels to boot a guest on: a cache of Debian kernel packages, or a developer's own image.

A cached kernel is Debian's packages unpacked as they would install, below
`.cache/kernels/RELEASE/` in the checkout: usr/lib/modules/RELEASE/{vmlinuz, config,
kernel/...} (linux-binary, linux-base, linux-modules) and usr/include/linux/fuse.h
(linux-libc-dev of the same version: the uapi header, where the FUSE protocol minor is
written). virtme-ng finds the modules beside vmlinuz in that layout.

Packages come from Debian's archive through apt with a private sources list and state
directory (below the cache), so the host's apt configuration never sees experimental; the
archive is the Debian mirror the machine's apt sources use (or --mirror).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import REPO_DIR
from harness.debian.private_apt import KEYRING, AptError, PrivateApt, archive_uri

CACHE_DIR = REPO_DIR / ".cache" / "kernels"
SUITE = "experimental"
FLAVOUR = "amd64"
# The configs FUSE-over-io_uring needs, in the order a missing one is reported.
URING_CONFIGS = ("CONFIG_FUSE_FS", "CONFIG_IO_URING", "CONFIG_FUSE_IO_URING")
BZIMAGE_MAGIC = b"HdrS"  # at 0x202 of every x86 boot image (Documentation/arch/x86/boot.rst)


class KernelError(RuntimeError):
    """A kernel that cannot be found, fetched or booted; the message says why and the fix."""


@dataclass(frozen=True)
class Kernel:
    """A bootable kernel image and what is known about it without booting it."""

    name: str  # the cache name, or the image path as given
    image: Path
    release: str | None  # uname -r of the image, read from its boot header
    config: Path | None  # the kernel's .config, when known
    uapi_header: Path | None  # its include/uapi/linux/fuse.h, when known
    build_tree: Path | None = None  # a developer's kernel build directory (modules from there)
    package_version: str | None = None  # Debian package version of a cached kernel

    def fuse_minor(self) -> tuple[int | None, str]:
        """FUSE_KERNEL_MINOR_VERSION of the kernel's uapi header, and where it came from."""
        if self.uapi_header is None or not self.uapi_header.exists():
            return None, "unknown (no uapi header for this kernel; learnt at FUSE_INIT)"
        m = re.search(
            r"^#define\s+FUSE_KERNEL_MINOR_VERSION\s+(\d+)", self.uapi_header.read_text(), re.M
        )
        if m is None:
            return None, f"unknown ({self.uapi_header} defines no FUSE_KERNEL_MINOR_VERSION)"
        return int(m.group(1)), str(self.uapi_header)

    def config_values(self) -> dict[str, str] | None:
        if self.config is None or not self.config.exists():
            return None
        values = {}
        for line in self.config.read_text(errors="replace").splitlines():
            if m := re.match(r"^(CONFIG_\w+)=(.*)$", line):
                values[m.group(1)] = m.group(2)
            elif m := re.match(r"^# (CONFIG_\w+) is not set", line):
                values[m.group(1)] = "n"
        return values

    def missing_uring_configs(self) -> list[str] | None:
        """The configs FUSE io_uring needs that this kernel lacks; None when its config is
        unknown (then the guest itself finds out: no enable_uring parameter)."""
        values = self.config_values()
        if values is None:
            return None
        return [c for c in URING_CONFIGS if values.get(c, "n") not in ("y", "m")]

    def fuse_is_module(self) -> bool:
        return (self.config_values() or {}).get("CONFIG_FUSE_FS") == "m"


# -- reading kernel images --------------------------------------------------------------
def image_release(path: Path) -> str:
    """uname -r of an x86 boot image (bzImage/vmlinuz), from the version string its setup
    header points to; KernelError when the file is no such image."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x10000 + 0x200)  # the pointer is a u16
    except IsADirectoryError:
        raise KernelError(f"{path} is a directory, not a kernel image") from None
    except OSError as e:
        raise KernelError(f"cannot read kernel image {path}: {e.strerror}") from None
    if len(head) < 0x210 or head[0x202:0x206] != BZIMAGE_MAGIC or head[0x1FE:0x200] != b"\x55\xaa":
        raise KernelError(
            f"{path} is not an x86 kernel image (no bzImage boot header): give a vmlinuz or "
            "arch/x86/boot/bzImage, a kernel build directory, or a cached kernel name "
            "(`ringside kernel list`)"
        )
    offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[offset : offset + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    release = text.split(" ", 1)[0]
    if not release:
        raise KernelError(f"{path} has a boot header but no kernel version string")
    return release


# -- the cache ---------------------------------------------------------------------------
def cache_name(version: str) -> str:
    """`7.3` -> `7.3-amd64` (Debian's release name for the flavour); full names pass."""
    return version if version.endswith(f"-{FLAVOUR}") else f"{version}-{FLAVOUR}"


def cached(cache: Path = CACHE_DIR) -> list[Kernel]:
    if not cache.is_dir():
        return []
    out = []
    for entry in sorted(cache.iterdir()):
        if (entry / "kernel.json").exists():
            out.append(_cached_kernel(entry))
    return out


def _cached_kernel(root: Path) -> Kernel:
    meta = json.loads((root / "kernel.json").read_text())
    moddir = root / "usr/lib/modules" / meta["release"]
    return Kernel(
        name=root.name,
        image=moddir / "vmlinuz",
        release=meta["release"],
        config=moddir / "config",
        uapi_header=root / "usr/include/linux/fuse.h",
        package_version=meta.get("version"),
    )


def fetch_command(name: str) -> str:
    return f"ringside kernel fetch {name.removesuffix('-' + FLAVOUR)}"


def resolve(spec: str, cache: Path = CACHE_DIR) -> Kernel:
    """A cached kernel's name (`7.3`, `7.3-amd64`), a kernel build directory, or a path to
    a kernel image (with its build tree's config, header and modules when it is in one)."""
    path = Path(spec)
    looks_like_path = os.sep in spec or spec.startswith(".") or path.exists()
    if not looks_like_path:
        root = cache / cache_name(spec)
        if (root / "kernel.json").exists():
            return _cached_kernel(root)
        have = ", ".join(k.name for k in cached(cache)) or "none"
        raise KernelError(
            f"no cached kernel {spec!r} (cached: {have}): fetch it with "
            f"`{fetch_command(cache_name(spec))}`, or give a path to a kernel image"
        )
    if not path.exists():
        raise KernelError(f"kernel image {spec} does not exist")
    build_tree = None
    if path.is_dir():
        image = path / "arch/x86/boot/bzImage"
        if not image.exists():
            raise KernelError(
                f"{spec} is a directory without arch/x86/boot/bzImage: give a built kernel "
                "tree or the image itself"
            )
        build_tree, path = path.resolve(), image
    else:
        build_tree = _build_tree_of(path.resolve())
    release = image_release(path)
    if build_tree is not None:
        config, header = build_tree / ".config", build_tree / "include/uapi/linux/fuse.h"
    else:
        moddir = path.resolve().parent  # a packaged kernel: usr/lib/modules/RELEASE/vmlinuz
        config = next(
            (p for p in (moddir / "config", Path(f"/boot/config-{release}")) if p.exists()),
            None,
        )
        header = None
    return Kernel(
        name=spec,
        image=path.resolve(),
        release=release,
        config=config,
        uapi_header=header,
        build_tree=build_tree,
    )


def _build_tree_of(image: Path) -> Path | None:
    """The kernel build directory an image sits in (…/arch/x86/boot/bzImage), if any."""
    for parent in image.parents:
        if (parent / "Makefile").exists() and (parent / ".config").exists():
            return parent
    return None


# -- fetching ----------------------------------------------------------------------------
def packages(name: str) -> list[str]:
    return [f"linux-binary-{name}", f"linux-base-{name}", f"linux-modules-{name}"]


def fetch(
    version: str, cache: Path = CACHE_DIR, log=print, mirror: str | None = None,
    suite: str = SUITE,
) -> Kernel:
    """Download and unpack Debian's packages of kernel `version` (e.g. 7.3) into the cache,
    from `mirror` or else the Debian archive the machine's apt sources use."""
    try:
        return _fetch(version, cache, log, mirror, suite)
    except AptError as e:
        raise KernelError(str(e)) from None


def _fetch(version: str, cache: Path, log, mirror: str | None, suite: str) -> Kernel:
    name = cache_name(version)
    root = cache / name
    archive, chosen = archive_uri(mirror)
    apt = PrivateApt(cache / ".apt", [f"deb [signed-by={KEYRING}] {archive} {suite} main"])
    log(f"ringside: reading the package list of Debian {suite} ({archive}, from {chosen})")
    apt.update(f"Debian {suite} from {archive}")
    wanted = packages(name)
    versions = {p: apt.candidate(p) for p in wanted}
    missing = [p for p, v in versions.items() if v is None]
    if missing:
        raise KernelError(
            f"Debian {suite} has no {', '.join(missing)}: kernel {version} is not packaged "
            f"there (see https://packages.debian.org/{suite}/kernel/)"
        )
    pkg_version = versions[wanted[0]]
    wanted.append(f"linux-libc-dev={pkg_version}")  # the uapi headers of the same kernel
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
    try:
        log(f"ringside: downloading {', '.join(wanted)} ({pkg_version})")
        apt.get(["download", *wanted], cwd=work)
        unpacked = work / "root"
        for deb in sorted(work.glob("*.deb")):
            _unpack(deb, unpacked)
        release = image_release(unpacked / "usr/lib/modules" / name / "vmlinuz")
        _depmod(unpacked / "usr", release, log)
        (unpacked / "kernel.json").write_text(
            json.dumps(
                {
                    "release": release,
                    "version": pkg_version,
                    "packages": wanted,
                    "archive": f"{archive} {suite}",
                    "fetched": datetime.now(UTC).isoformat(timespec="seconds"),
                },
                indent=1,
            )
            + "\n"
        )
        if root.exists():
            shutil.rmtree(root)
        unpacked.rename(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kernel = _cached_kernel(root)
    log(f"ringside: kernel {name} ({release}) cached in {root}")
    return kernel


def _unpack(deb: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    if deb.name.startswith("linux-libc-dev"):
        # Only the FUSE uapi header is needed of the ~1000 headers.
        with tempfile.TemporaryDirectory(dir=deb.parent) as tmp:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            dest = into / "usr/include/linux"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(tmp) / "usr/include/linux/fuse.h", dest / "fuse.h")
        return
    proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelError(f"cannot unpack {deb.name}: {proc.stderr.strip()}")


def _depmod(usr: Path, release: str, log) -> None:
    """modules.dep for the unpacked modules (Debian's packages leave it to postinst)."""
    depmod = shutil.which("depmod") or "/usr/sbin/depmod"
    if not os.path.exists(depmod):
        raise KernelError("depmod is missing: `apt-get install kmod` (or `make setup`)")
    proc = subprocess.run([depmod, "-a", "-b", str(usr), release], capture_output=True, text=True)
    if proc.returncode != 0:
        raise KernelError(f"depmod failed for {release}: {proc.stderr.strip()}")
