"""apt with a private sources list and state directory below the checkout's cache.

The host's apt configuration never sees the suites fetched here (experimental, sid):
only its choice of Debian mirror is read (harness.debian.sources).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from harness.debian import sources

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class AptError(RuntimeError):
    """apt failed or cannot run; the message has its own words and the fix."""


def archive_uri(mirror: str | None) -> tuple[str, str]:
    """The Debian archive to fetch from and where that choice came from: `mirror` when
    given, else the machine's own apt sources (AptError when they name none)."""
    if mirror:
        return mirror.rstrip("/"), "--mirror"
    try:
        entry = sources.debian_archive()
    except sources.NoDebianArchive as e:
        raise AptError(str(e)) from None
    return entry.uri, f"the machine's apt sources ({entry.origin})"


class PrivateApt:
    """apt-get and apt-cache reading only `lines` as sources, keeping state in `state`."""

    def __init__(self, state: Path, lines: list[str]):
        self.state = state
        for sub in ("lists/partial", "cache/archives/partial"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "sources.list").write_text("".join(f"{line}\n" for line in lines))

    def options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::sourcelist={self.state / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={self.state / 'lists'}",
            "-o", f"Dir::Cache={self.state / 'cache'}",
            # The private directories belong to us: no download sandbox user to fail on them.
            "-o", "APT::Sandbox::User=root" if os.geteuid() == 0 else "APT::Sandbox::User=",
            "-q",
        ]  # fmt: skip

    def get(self, args: list[str], cwd: Path | None = None) -> str:
        """`apt-get ARGS`; AptError with apt's last words when it fails."""
        return self._run("apt-get", args, cwd)

    def cache(self, args: list[str]) -> str:
        return self._run("apt-cache", args, None)

    def update(self, what: str) -> None:
        """Read the package lists; `what` names them in the error (no network, bad mirror)."""
        fix = f"(no network, or the mirror does not carry it: {sources.MIRROR_FIX})"
        try:
            out = self.get(["update"])
        except AptError as e:
            raise AptError(f"cannot read {what}: {e}\n{fix}") from None
        # apt-get update exits 0 when a list cannot be fetched at all (it only warns).
        failed = re.findall(r"^(?:W|E): (Failed to fetch .*)$", out, re.M)
        if failed:
            raise AptError(f"cannot read {what}: {failed[0]} {fix}")

    def candidate(self, pkg: str) -> str | None:
        out = subprocess.run(
            ["apt-cache", *self.options(), "policy", pkg], capture_output=True, text=True
        ).stdout
        m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.M)
        return None if m is None or m.group(1) == "(none)" else m.group(1)

    def _run(self, tool: str, args: list[str], cwd: Path | None) -> str:
        if shutil.which(tool) is None:
            raise AptError(f"{tool} is missing: this is fetched with Debian's apt")
        proc = subprocess.run([tool, *self.options(), *args], cwd=cwd, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise AptError(
                f"`{tool} {' '.join(args)}` failed (exit {proc.returncode}):\n"
                + (proc.stderr or proc.stdout).strip()[-2000:]
            )
        return proc.stdout + proc.stderr
