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
    system = shutil.which("meson")
    if system and _enough(v := _version(system), required):
        return system, f"meson {v} ({system})"
    return private_meson(required, venv, log, "too old" if system else "missing")


def _enough(version: str | None, required: str | None) -> bool:
    return version is not None and (required is None
                                    or version_key(version) >= version_key(required))


def private_meson(required: str | None, venv: Path, log=print,
                  why: str = "a private one is needed") -> tuple[str, str]:
    """Meson from PyPI in `venv` (installed or upgraded when it does not satisfy
    `required`), and what it is."""
    private = venv / "bin" / "meson"
    if not _enough(_version(str(private)), required):
        spec = f"meson>={required}" if required else "meson"
        log(f"ringside: installing {spec} from PyPI into {venv} (the system's meson is "
            f"{why})")
        if not (venv / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", str(venv)], "creating the meson venv")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--upgrade", spec],
             f"installing {spec} from PyPI (no network?)")
    v = _version(str(private))
    if not _enough(v, required):
        raise BuildError(f"meson in {venv} is {v}, the project needs >= {required}")
    return str(private), f"meson {v} (PyPI, {venv})"


def ensure_packages(venv: Path, minimums: dict[str, str], log=print) -> None:
    """Install each package (name -> minimum version) from PyPI into the venv find_meson
    made, unless it is there, new enough (no network then)."""
    python = str(venv / "bin" / "python")
    missing = []
    for name, minimum in minimums.items():
        proc = subprocess.run([python, "-c", "import importlib.metadata as m, sys; "
                               "print(m.version(sys.argv[1]))", name],
                              capture_output=True, text=True)
        have = proc.stdout.strip() if proc.returncode == 0 else None
        if have is None or version_key(have) < version_key(minimum):
            missing.append(f"{name}>={minimum}")
    if missing:
        log(f"ringside: installing {' '.join(missing)} from PyPI into {venv}")
        _run([python, "-m", "pip", "install", "-q", *missing],
             f"installing {' '.join(missing)} from PyPI (no network?)")


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")


def build(meson: str, source: Path, build_dir: Path, options: list[str], log_path: Path,
          target: str | None = None) -> None:
    """`meson setup` and `ninja`, all output in `log_path`; BuildError with the log's last
    lines and its path when a step fails."""
    check_tools()
    steps = [
        [meson, "setup", str(build_dir), str(source), *options],
        ["ninja", "-C", str(build_dir), *([target] if target else [])],
    ]
    with open(log_path, "w") as log:
        run_logged(steps, log, log_path)


def check_tools(tools=(("ninja", "ninja-build"), ("cc", "gcc"), ("c++", "g++"))) -> None:
    for tool, fix in tools:
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is missing: `apt-get install {fix}` (`make setup` does it)")


def run_logged(steps: list[list[str]], log, log_path: Path, cwd: Path | None = None) -> None:
    """Run each step with its output appended to the open `log`; BuildError with the log's
    last lines and its path when one fails."""
    for argv in steps:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, cwd=cwd)
        if proc.returncode != 0:
            log.flush()
            tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            raise BuildError(
                f"`{' '.join(argv[:2])}` failed (exit {proc.returncode}); the last lines "
                f"of its log:\n" + "\n".join(tail) + f"\nfull log: {log_path}"
            )
