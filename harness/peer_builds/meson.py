"""Meson and ninja for a build: the system's meson when new enough for the project, else
meson from PyPI in a private venv below the cache (Debian 12's meson is 1.0)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from harness.peer_builds import BuildError
from transports.peers.builds import version_key

LOG_TAIL_LINES = 25


def required_version(source: Path) -> str | None:
    """The `meson_version: '>= X'` of a project's meson.build (None: no minimum)."""
    try:
        text = (source / "meson.build").read_text()
    except OSError:
        raise BuildError(f"{source} has no meson.build: not a meson project") from None
    m = re.search(r"meson_version\s*:\s*'>=\s*([\d.]+)'", text)
    return m.group(1) if m else None


def _version(meson: str) -> str | None:
    try:
        proc = subprocess.run([meson, "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def find_meson(required: str | None, venv: Path, log=print) -> tuple[str, str]:
    """A meson satisfying `required`, and what it is (version, where from)."""
    def enough(v: str | None) -> bool:
        return v is not None and (required is None or version_key(v) >= version_key(required))

    system = shutil.which("meson")
    if system and enough(v := _version(system)):
        return system, f"meson {v} ({system})"
    private = venv / "bin" / "meson"
    if not enough(_version(str(private))):
        spec = f"meson>={required}" if required else "meson"
        log(f"ringside: installing {spec} from PyPI into {venv} (the system's meson is "
            f"{'too old' if system else 'missing'})")
        if not (venv / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", str(venv)], "creating the meson venv")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--upgrade", spec],
             f"installing {spec} from PyPI (no network?)")
    v = _version(str(private))
    if not enough(v):
        raise BuildError(f"meson in {venv} is {v}, the project needs >= {required}")
    return str(private), f"meson {v} (PyPI, {venv})"


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")


def build(meson: str, source: Path, build_dir: Path, options: list[str], log_path: Path,
          target: str | None = None) -> None:
    """`meson setup` and `ninja`, all output in `log_path`; BuildError with the log's last
    lines and its path when a step fails."""
    for tool, fix in (("ninja", "ninja-build"), ("cc", "gcc"), ("c++", "g++")):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is missing: `apt-get install {fix}` (`make setup` does it)")
    steps = [
        [meson, "setup", str(build_dir), str(source), *options],
        ["ninja", "-C", str(build_dir), *([target] if target else [])],
    ]
    with open(log_path, "w") as log:
        for argv in steps:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                log.close()
                tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                raise BuildError(
                    f"`{' '.join(argv[:2])}` failed (exit {proc.returncode}); the last lines "
                    f"of its log:\n" + "\n".join(tail) + f"\nfull log: {log_path}"
                )
