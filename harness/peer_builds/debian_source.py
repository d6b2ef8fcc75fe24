"""A Debian source package: its versions in the archive, its files, its upstream tarball."""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.debian.private_apt import PrivateApt
from harness.peer_builds import BuildError
from transports.peers.builds import version_key


def upstream_of(debian_version: str) -> str:
    """`1:3.18.3-1` -> `3.18.3` (no epoch, no Debian revision)."""
    version = re.sub(r"^\d+:", "", debian_version)
    return version.rsplit("-", 1)[0] if "-" in version else version


def _debian_key(debian_version: str) -> tuple:
    version = re.sub(r"^\d+:", "", debian_version)
    upstream, _, revision = version.rpartition("-") if "-" in version else (version, "", "")
    return (version_key(upstream), version_key(revision or "0"))


def available_versions(apt: PrivateApt, package: str) -> list[str]:
    """The Debian versions of source package `package` in the private lists, oldest first
    (none when the lists do not have it: apt-cache then exits 100)."""
    proc = subprocess.run(["apt-cache", *apt.options(), "showsrc", "--only-source", package],
                          capture_output=True, text=True)
    found = set(re.findall(r"^Version:\s*(\S+)", proc.stdout, re.M))
    return sorted(found, key=_debian_key)


def choose_version(requested: str | None, available: list[str], where: str) -> str:
    """The Debian version to build: the newest one of upstream version `requested`, or the
    newest of all when None; BuildError listing what `where` has otherwise."""
    if not available:
        raise BuildError(f"{where} has no such source package")
    if requested is None:
        return available[-1]
    matching = [v for v in available if upstream_of(v) == requested or v == requested]
    if not matching:
        have = ", ".join(f"{upstream_of(v)} (Debian {v})" for v in available)
        raise BuildError(f"{where} has no version {requested}; it has: {have}")
    return matching[-1]


@dataclass(frozen=True)
class SourceFiles:
    dsc: Path
    tarball: Path  # the upstream (orig) tarball
    sha256: str  # of the tarball, checked against the .dsc


def download(apt: PrivateApt, package: str, debian_version: str, into: Path) -> SourceFiles:
    """The package's files (apt checks them against the signed index), with the upstream
    tarball's hash checked once more against the .dsc."""
    into.mkdir(parents=True, exist_ok=True)
    apt.get(["source", "--download-only", f"{package}={debian_version}"], cwd=into)
    dscs = list(into.glob("*.dsc"))
    if len(dscs) != 1:
        raise BuildError(f"apt-get source left {len(dscs)} .dsc files in {into}, not one")
    listed = dict(
        (name, digest)
        for digest, _size, name in re.findall(
            r"^ ([0-9a-f]{64}) (\d+) (\S+)$", _field(dscs[0].read_text(), "Checksums-Sha256"),
            re.M,
        )
    )
    tarballs = [n for n in listed if re.search(r"\.orig\.tar\.[a-z0-9]+$", n)]
    if len(tarballs) != 1:
        raise BuildError(f"{dscs[0].name} lists {len(tarballs)} upstream tarballs, not one")
    tarball = into / tarballs[0]
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != listed[tarballs[0]]:
        raise BuildError(f"{tarball.name} has sha256 {digest}, its .dsc says "
                         f"{listed[tarballs[0]]}: a corrupt download; fetch again")
    return SourceFiles(dscs[0], tarball, digest)


def _field(dsc: str, name: str) -> str:
    m = re.search(rf"^{name}:[^\n]*\n((?:[ \t][^\n]*\n?)*)", dsc, re.M)
    return m.group(1) if m else ""


def unpack(tarball: Path, into: Path) -> None:
    """The upstream tree, without its top directory (Debian's own changes are not applied:
    this is the upstream program)."""
    into.mkdir(parents=True)
    proc = subprocess.run(["tar", "-xf", str(tarball), "-C", str(into), "--strip-components=1",
                           "--no-same-owner"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"cannot unpack {tarball.name}: {proc.stderr.strip()}")
