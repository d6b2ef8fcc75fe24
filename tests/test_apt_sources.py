"""The Debian archive is read from the machine's apt sources (harness.debian.sources):
one-line and deb822 files, options, comments, disabled entries, third parties, none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.debian import sources
from harness.debian.private_apt import AptError, PrivateApt, archive_uri
from harness.guests import kernels

KEY = "/usr/share/keyrings/debian-archive-keyring.gpg"
ONE_LINE = f"""\
# deb http://disabled.example/debian bookworm main
deb [arch=amd64 signed-by={KEY}] http://mirror.example/debian/ bookworm main contrib # a note
deb-src http://mirror.example/debian bookworm main
deb http://security.debian.org/debian-security bookworm-security main
deb [ arch=amd64 ] https://download.docker.com/linux/debian bookworm stable
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
deb [signed-by=/usr/share/keyrings/ms.gpg] https://packages.microsoft.com/debian/12 bookworm main
deb
"""

DEB822 = """\
# a comment before the first stanza
Types: deb
URIs: http://snapshot.debian.org/archive/debian/20250520T000000Z
Suites: bookworm
Components: main

Types: deb deb-src
# a comment inside a stanza
URIs: http://proxy.example:3142/debian http://second.example/debian
Suites: trixie trixie-updates
Components: main non-free-firmware
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF...
 -----END PGP PUBLIC KEY BLOCK-----

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: sid
Components: main

Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_one_line_entries_options_and_comments():
    entries = sources.parse_one_line(ONE_LINE, "s.list")
    first = entries[0]
    assert (first.type, first.uri, first.suite, first.components) == (
        "deb", "http://mirror.example/debian", "bookworm", ("main", "contrib"))
    assert first.options == {"arch": "amd64", "signed-by": KEY}
    assert first.origin == "s.list:2"
    assert [e.uri for e in entries if e.is_debian_archive()] == [
        "http://mirror.example/debian", "http://mirror.example/debian"]
    # security, docker ("stable" component), google (its suite), microsoft (its key): not Debian
    assert len(entries) == 6 and not any("disabled" in e.uri for e in entries)


def test_a_hash_inside_options_is_no_comment():
    line = "deb [signed-by=/k#ey.gpg] http://m.example/debian sid main\n"
    assert sources.parse_one_line(line)[0].options["signed-by"] == "/k#ey.gpg"


def test_deb822_stanzas_disabled_and_multiline_fields():
    entries = sources.parse_deb822(DEB822, "d.sources")
    assert not any("disabled" in e.uri for e in entries)
    proxy = [e for e in entries if "proxy" in e.uri]
    assert {(e.type, e.suite) for e in proxy} == {
        ("deb", "trixie"), ("deb", "trixie-updates"), ("deb-src", "trixie"),
        ("deb-src", "trixie-updates")}
    assert proxy[0].options["signed-by"].startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----\n.")
    assert proxy[0].origin == "d.sources:7" and proxy[0].is_debian_archive()
    assert len([e for e in entries if "second" in e.uri]) == 4
    assert not next(e for e in entries if "nodesource" in e.uri).is_debian_archive()


def test_the_archive_prefers_a_live_mirror_to_a_snapshot(tmp_path):
    files = [tmp_path / "sources.list", write(tmp_path, "debian.sources", DEB822)]
    chosen = sources.debian_archive(files)
    assert chosen.uri == "http://proxy.example:3142/debian" and chosen.type == "deb"
    only_snapshot = DEB822.split("\n\n")[0] + "\n"
    files = [write(tmp_path, "snap.sources", only_snapshot)]
    assert sources.debian_archive(files).is_snapshot()


def test_the_first_debian_entry_in_apts_order(tmp_path):
    files = [write(tmp_path, "sources.list", ONE_LINE), write(tmp_path, "d.sources", DEB822)]
    assert sources.debian_archive(files).uri == "http://mirror.example/debian"


def test_no_debian_source_names_the_files_and_the_fix(tmp_path):
    third = write(tmp_path, "third.list",
                  "deb https://download.docker.com/linux/debian bookworm stable\n"
                  "deb http://security.debian.org/debian-security bookworm-security main\n"
                  "deb http://security.debian.org/ buster/updates main\n"
                  "deb http://local.example/repo ./\n")
    files = [tmp_path / "sources.list", third]
    with pytest.raises(sources.NoDebianArchive) as e:
        sources.debian_archive(files)
    message = str(e.value)
    assert f"{tmp_path / 'sources.list'} (absent)" in message and str(third) in message
    assert "--mirror URL" in message


def test_files_are_the_ones_apt_reads(tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    parts.mkdir()
    for name in ("b.sources", "a.list", "c.list.disabled", "d.save", ".hidden.list"):
        (parts / name).write_text("")
    conf = write(tmp_path, "apt.conf", f'Dir::Etc::sourcelist "{tmp_path}/main.list";\n'
                 f'Dir::Etc::sourceparts "{parts}";\n')
    monkeypatch.setenv("APT_CONFIG", str(conf))
    assert [p.name for p in sources.source_files()] == ["main.list", "a.list", "b.sources"]


def test_fetches_refuse_a_machine_without_debian_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "source_files", lambda: [tmp_path / "sources.list"])
    with pytest.raises(AptError, match="no Debian archive.*--mirror URL"):
        archive_uri(None)
    assert archive_uri("http://m.example/debian/") == ("http://m.example/debian", "--mirror")
    with pytest.raises(kernels.KernelError, match="no Debian archive.*--mirror URL"):
        kernels.fetch("7.3", cache=tmp_path / "kernels", log=lambda _: None)


def test_an_unreachable_archive_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "apt.conf").write_text('Acquire::Retries "0";\n')  # no 7 s of retries
    monkeypatch.setenv("APT_CONFIG", str(tmp_path / "apt.conf"))
    apt = PrivateApt(tmp_path / "state", [f"deb-src [signed-by={KEY}] http://127.0.0.1:9/debian "
                                          "sid main"])
    with pytest.raises(AptError, match=r"cannot read Debian sid.*127\.0\.0\.1:9.*no network"):
        apt.update("Debian sid")


def test_kernel_and_peers_fetch_take_a_mirror():
    for command in (["kernel", "fetch", "--help"], ["peers", "fetch", "--help"]):
        out = subprocess.run([sys.executable, "-m", "harness", *command],
                             capture_output=True, text=True).stdout
        assert "--mirror URL" in out
