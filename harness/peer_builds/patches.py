"""A patch series for a peer build: read from mbox files or .patch files, applied in order.

The way `b4 am MSGID` or `git format-patch` gives a series: one mbox holding every
message, or one file per message, or plain diffs. Each message is parsed as mail
(quoted-printable and base64 bodies are decoded, as `git am` would), messages without a
diff (a cover letter) are left out and said so, and each diff is applied with GNU patch
(`-p1`, no fuzz, as strict about context as `git am`), checked with --dry-run first so a
patch that does not apply names its file, the file it patches and the hunk (its number
and `@@` line) that failed, and leaves the tree as the previous patch left it.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import hashlib
import mailbox
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.peer_builds import BuildError

_DIFF = re.compile(rb"^(?:diff --git |--- (?:a/|/dev/null|\S))", re.M)
_HUNK = re.compile(rb"^@@ ", re.M)
_HEADER_LINE = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*: ")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PATCH_OPTIONS = ["-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch",
                 "--reject-file=-"]


class PatchError(BuildError):
    """A patch does not apply (or cannot be read); the message names it and the hunk."""


@dataclass(frozen=True)
class Patch:
    file: Path  # the file it came from
    index: int  # its position among the messages of that file (1-based)
    of: int  # how many messages that file holds
    subject: str
    body: bytes  # the message's text, diff included, decoded
    sha256: str  # of `body`

    @property
    def where(self) -> str:
        return f"{self.file}" + (f" (message {self.index} of {self.of})" if self.of > 1 else "")

    def record(self) -> dict[str, Any]:
        return {"file": self.file.name, "message": self.index, "subject": self.subject,
                "sha256": self.sha256}


@dataclass(frozen=True)
class Series:
    patches: list[Patch]
    files: dict[str, str]  # file name -> sha256 of the whole file, in the order given
    skipped: list[str]  # messages without a diff (cover letters), said where

    def default_name(self) -> str:
        """A name for the set when none is given: a hash of the patches' contents."""
        joined = "".join(p.sha256 for p in self.patches)
        return "p" + hashlib.sha256(joined.encode()).hexdigest()[:10]

    def record(self) -> list[dict[str, Any]]:
        return [p.record() for p in self.patches]


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BuildError(f"--name {name!r} cannot name a build directory: use letters, digits, "
                         "'.', '_' and '-' (up to 64, starting with a letter or digit)")
    return name


def read_series(paths: list[Path]) -> Series:
    """Every patch of the files, in the order given (messages in their file's order)."""
    patches: list[Patch] = []
    files: dict[str, str] = {}
    skipped: list[str] = []
    for path in paths:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise PatchError(f"cannot read patch file {path}: {e.strerror}") from None
        files[str(path)] = hashlib.sha256(raw).hexdigest()
        messages = _messages(path, raw)
        found = 0
        for index, (subject, body) in enumerate(messages, 1):
            if not (_DIFF.search(body) and (_HUNK.search(body) or b"GIT binary patch" in body)):
                skipped.append(f"{path} message {index} ({subject or 'no subject'}): no diff")
                continue
            found += 1
            patches.append(Patch(path, index, len(messages), subject or path.name, body,
                                 hashlib.sha256(body).hexdigest()))
        if not found:
            raise PatchError(f"{path} holds no diff (neither an mbox of patches, a patch mail "
                             "nor a unified diff): give the series' patches, e.g. the .mbx "
                             "`b4 am MSGID` writes")
    return Series(patches, files, skipped)


def _messages(path: Path, raw: bytes) -> list[tuple[str, bytes]]:
    """(subject, decoded body) of each message; a plain diff is one message."""
    if raw.startswith(b"From "):
        box = mailbox.mbox(str(path), factory=None, create=False)
        try:
            return [_parsed(email.message_from_bytes(m.as_bytes(), policy=email.policy.compat32))
                    for m in box]
        finally:
            box.close()
    first = raw.split(b"\n", 1)[0]
    if _HEADER_LINE.match(first) and not first.startswith((b"diff", b"Index:")):
        return [_parsed(email.message_from_bytes(raw, policy=email.policy.compat32))]
    return [("", raw)]


def _parsed(message: email.message.Message) -> tuple[str, bytes]:
    subject = message.get("Subject", "")
    if subject:
        subject = str(email.header.make_header(email.header.decode_header(subject)))
        subject = " ".join(subject.split())
    parts = [p for p in message.walk() if not p.is_multipart()
             and p.get_content_type() in ("text/plain", "text/x-patch", "text/x-diff")]
    body = b"".join(p.get_payload(decode=True) or b"" for p in parts)
    return subject, body


def hunk_headers(body: bytes) -> dict[str, list[str]]:
    """Each patched file (as patch -p1 names it) and its hunks' `@@` lines, in order."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("+++ "):
            target = line[4:].split("\t")[0].strip()
            name = target.split("/", 1)[1] if "/" in target else target
            current = files.setdefault(name, [])
        elif line.startswith("@@ ") and current is not None:
            current.append(line)
    return files


def apply(patch: Patch, source: Path, log) -> None:
    """Apply one patch to the tree in `source`; PatchError naming the patch file, the
    file it patches and the failing hunks when it does not apply (tree unchanged)."""
    if shutil.which("patch") is None:
        raise PatchError("GNU patch is missing: `apt-get install patch`")
    with tempfile.NamedTemporaryFile(prefix="ringside-patch-", suffix=".diff") as diff:
        diff.write(patch.body)
        diff.flush()
        argv = ["patch", *PATCH_OPTIONS, "-d", str(source), "-i", diff.name]
        check = subprocess.run([*argv, "--dry-run"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL)
        log.write(f"$ patch {' '.join(PATCH_OPTIONS)} --dry-run  # {patch.where}: "
                  f"{patch.subject}\n{check.stdout}{check.stderr}")
        if check.returncode != 0:
            raise PatchError(_failure(patch, check.stdout + check.stderr))
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        log.write(f"$ patch {' '.join(PATCH_OPTIONS)}\n{done.stdout}{done.stderr}")
        if done.returncode != 0:  # applied in the dry run: only a full disk gets here
            raise PatchError(f"{patch.where} ({patch.subject}) failed to apply after its dry "
                             f"run: {(done.stdout + done.stderr).strip()[-1000:]}")


def _failure(patch: Patch, output: str) -> str:
    """What patch said, as: which file of the tree, which hunk, at which line."""
    headers = hunk_headers(patch.body)
    problems: list[str] = []
    current = None
    for line in output.splitlines():
        if m := re.match(r"^(?:checking|patching) file '?(.+?)'?$", line):
            current = m.group(1)
        elif m := re.match(r"^Hunk #(\d+) FAILED at (\d+)", line):
            number = int(m.group(1))
            hunks = headers.get(current or "", [])
            at = f" ({hunks[number - 1]})" if 0 < number <= len(hunks) else ""
            problems.append(f"{current}: hunk #{number}{at} does not apply at line "
                            f"{m.group(2)}")
        elif "can't find file to patch" in line:
            problems.append(f"a file it patches does not exist in the tree: {line.strip()}")
        elif "Reversed (or previously applied) patch detected" in line:
            problems.append(f"{current}: already applied (or reversed) in this tree")
        elif line.startswith("patch: **** "):
            problems.append(line[len("patch: **** "):])
    if not problems:
        problems.append(output.strip()[-1500:] or "patch failed without saying why")
    return (f"patch {patch.where} ({patch.subject}) does not apply: " + "; ".join(problems)
            + ". The patches must apply to the upstream source as released (Debian's own "
            "changes are not applied); rebase them onto that version")
