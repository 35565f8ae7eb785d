"""fetch(): idempotent, atomic per group, failures reported (no network: a locally built .deb)."""
import shutil
import subprocess

import pytest

from sycam.data import fetch as fetch_mod
from sycam.data.cache import MARKER, group_path, is_complete
from sycam.errors import DataError, UnknownNameError


def _fake_darknet_deb(tmp_path):
    """A tiny .deb holding the files the 'darknet' group expects."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not available")
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: darknet\nVersion: 9.9-test\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n")
    for member in fetch_mod.GROUPS["darknet"].members():
        f = root / member
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(member.encode())
    (root / "usr/share/darknet/data/unused.txt").write_text("not wanted")
    deb = tmp_path / "darknet_9.9-test_all.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_fetch_unpacks_only_wanted_files_and_skips_finished_groups(tmp_path, monkeypatch):
    deb = _fake_darknet_deb(tmp_path)
    calls = []

    def download(self, package, downloads):
        calls.append(package)
        out = downloads / deb.name
        shutil.copy(deb, out)
        return out

    monkeypatch.setattr(fetch_mod._Apt, "download", download)
    cache = tmp_path / "cache"
    log = []
    report = fetch_mod.fetch(cache, ["darknet"], log=log.append)
    assert report.ok and report.fetched == {"darknet": 8} and calls == ["darknet"]
    assert (cache / "darknet" / "dog.jpg").read_bytes() == b"usr/share/darknet/data/dog.jpg"
    assert not (cache / "darknet" / "unused.txt").exists()
    assert not list((cache / "downloads").glob("*.deb"))          # deleted after unpacking
    assert is_complete("darknet", cache)
    again = fetch_mod.fetch(cache, ["darknet"], log=log.append)
    assert again.present == ["darknet"] and calls == ["darknet"]   # nothing downloaded twice
    assert any("already" in line for line in log)


def test_a_group_folder_without_its_marker_is_not_done(tmp_path, monkeypatch):
    deb = _fake_darknet_deb(tmp_path)
    monkeypatch.setattr(fetch_mod._Apt, "download", lambda self, p, d: shutil.copy(deb, d / deb.name) and d / deb.name)
    cache = tmp_path / "cache"
    (cache / "darknet").mkdir(parents=True)
    (cache / "darknet" / "dog.jpg").write_bytes(b"half written")     # an interrupted run
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = cache / f".darknet-{dead.pid}-abcd1234"                   # its temporary folder
    (stale / "usr").mkdir(parents=True)
    assert not is_complete("darknet", cache)
    with pytest.raises(DataError, match="sycam data fetch"):
        group_path("darknet", cache)
    report = fetch_mod.fetch(cache, ["darknet"], log=lambda s: None)
    assert report.fetched == {"darknet": 8}
    assert (cache / "darknet" / "dog.jpg").read_bytes() != b"half written"
    assert not stale.exists() and not list(cache.glob(".darknet-*"))
    (cache / "darknet" / MARKER).unlink()
    assert not is_complete("darknet", cache)


def test_missing_apt_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda name: None)
    report = fetch_mod.fetch(tmp_path, ["darknet", "palapeli"], log=lambda s: None)
    assert not report.ok and set(report.failed) == {"darknet", "palapeli"}
    assert "apt-get" in report.failed["darknet"]
    assert not (tmp_path / "darknet").exists()
    assert "FAILED" in str(report)


def test_unknown_group_name():
    with pytest.raises(UnknownNameError, match="darknet"):
        fetch_mod.fetch("/nonexistent", ["darknt"])
