"""Kernel source providers behind one interface, chosen by a spec string.

Specs:
  debian:SUITE[=VERSION]  the linux-source package of a Debian suite, fetched
                          with apt-get through a private apt configuration
                          (its own sources.list, lists and cache under
                          cache_dir(); the host's apt sources are never touched)
  https://...tar.xz       a kernel.org-style tarball (also http:// and file://)
  git+URL@REF             a git repository at a branch, tag or commit
  path:/some/tree         a tree on disk (a plain directory works too)

Every provider returns a KernelSource: a tree that must be treated as
read-only (downloaded trees are cached under cache_dir() with write bits
removed), the exact version from its Makefile, and an identity string that
changes whenever the tree's content may have changed (cache key material).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from filelock import FileLock

from harness.core import paths, procs
from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.core.store import file_sha256
from kmod.version import KernelVersion, compare_debian, debian_kernel_version

log = logging.getLogger(__name__)

DEBIAN_SUITES = ("bullseye", "bookworm", "trixie", "sid")
UNSTABLE_SUITES = ("sid",)  # no -updates or -security pocket
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Lists younger than this are used as they are: a rebuild needs no network.
LISTS_MAX_AGE = 24 * 3600
_READY = ".aufs-harness-ready"


@dataclass(frozen=True)
class KernelSource:
    spec: str
    tree: Path
    version: KernelVersion
    identity: str
    origin: str
    package: str | None = None
    package_version: str | None = None
    pocket: str | None = None
    # Where the source came from, precisely (facts, not cache key material: the
    # identity is): the .deb's or tarball's URL and sha256, or the git commit.
    url: str | None = None
    sha256: str | None = None
    commit: str | None = None
    # True for trees the harness unpacked into its cache and keeps read-only:
    # work trees may hard-link their files instead of copying them.
    owned: bool = False

    @property
    def pinned_spec(self) -> str:
        """The spec that names exactly this source again (debian:SUITE=VERSION for Debian)."""
        if self.package and self.package_version and self.spec.startswith("debian:"):
            return f"{self.spec.partition('=')[0]}={self.package_version}"
        return self.spec

    def describe(self) -> str:
        if self.package:
            where = f" from {self.pocket}" if self.pocket else ""
            return f"Linux {self.version} ({self.package} {self.package_version}{where})"
        return f"Linux {self.version} from {self.origin}"


class Provider(Protocol):
    def fetch(self, deadline: Deadline) -> KernelSource: ...

    def expected_version(self, deadline: Deadline) -> KernelVersion | None:
        """The kernel version known before fetching (a package index, a file name), or None."""
        ...


def kmod_cache() -> Path:
    path = paths.cache_dir() / "kmod"
    path.mkdir(parents=True, exist_ok=True)
    return path


def provider_for(spec: str) -> Provider:
    """The provider a spec string names, or a UserError listing the forms."""
    if spec.startswith("debian:"):
        return DebianSource.from_spec(spec)
    if spec.startswith("git+"):
        return GitSource.from_spec(spec)
    if re.match(r"^(https?|file)://", spec):
        return TarballSource(spec)
    if spec.startswith("path:"):
        return PathSource(Path(spec[len("path:") :]), spec)
    if Path(spec).is_dir():
        return PathSource(Path(spec), spec)
    raise UserError(
        f"unknown kernel source {spec!r}: use debian:{'|'.join(DEBIAN_SUITES)}, "
        "https://.../linux-X.Y.Z.tar.xz, git+URL@REF or path:/a/kernel/tree"
    )


def local_problem(spec: str) -> str | None:
    """Why the local tree (path:, a bare directory) or tarball (file://) `spec`
    names cannot be read, None when it can or the source is not local: a cheap
    check before any work. UserError for a spec in no known form."""
    provider = provider_for(spec)
    if isinstance(provider, PathSource):
        tree = provider.path.expanduser()
        if not tree.exists():
            return f"{tree} does not exist: check the path"
        if not (tree / "Makefile").is_file():
            return f"{tree} has no Makefile: give a kernel tree"
    if isinstance(provider, TarballSource) and provider.url.startswith("file://"):
        local = Path(urllib.parse.urlparse(provider.url).path)
        if not local.is_file():
            return f"{local} does not exist: check the path"
    return None


def fetch(spec: str, deadline: Deadline) -> KernelSource:
    return provider_for(spec).fetch(deadline)


_TARBALL_NAME = re.compile(r"linux-(\d+\.\d+(?:\.\d+)?(?:-rc\d+)?)\.tar\b")


# --------------------------------------------------------------------------- helpers


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                mode = os.lstat(p).st_mode
                os.chmod(p, mode & ~0o222)
    os.chmod(root, os.stat(root).st_mode & ~0o222)


def _single_top(staging: Path) -> Path:
    """The one directory a tarball unpacked into (kernel tarballs have one)."""
    entries = [p for p in staging.iterdir() if p.name != _READY]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return staging


def _unpack_tarball(tarball: Path, dest: Path, deadline: Deadline) -> Path:
    """Unpack into dest (published by rename) and return the tree's top."""
    if (dest / _READY).is_file():
        return _single_top(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if (dest / _READY).is_file():  # another process unpacked it meanwhile
            return _single_top(dest)
        return _unpack_locked(tarball, dest, deadline)


def _unpack_locked(tarball: Path, dest: Path, deadline: Deadline) -> Path:
    tmp = dest.with_name(f".tmp-{dest.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        log.info("unpacking %s", tarball.name)
        procs.run(["tar", "-xf", tarball, "-C", tmp], deadline=deadline)
        top = _single_top(tmp)
        KernelVersion.from_makefile(top)  # refuse to cache something that is no kernel
        (tmp / _READY).write_text(tarball.name + "\n")
        _make_read_only(top)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _single_top(dest)


# --------------------------------------------------------------------------- debian


def host_mirror() -> str:
    """The Debian mirror this machine's apt uses (override: AUFS_HARNESS_DEBIAN_MIRROR)."""
    override = os.environ.get("AUFS_HARNESS_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    candidates: list[Path] = [Path("/etc/apt/sources.list")]
    parts = Path("/etc/apt/sources.list.d")
    if parts.is_dir():
        candidates += sorted(parts.glob("*.sources")) + sorted(parts.glob("*.list"))
    for file in candidates:
        try:
            text = file.read_text()
        except OSError:
            continue
        for url in re.findall(r"(?:^URIs:|^deb)\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M):
            if "debian" in url and "security" not in url and "debian-" not in url:
                return str(url).rstrip("/")
    return DEFAULT_MIRROR


def security_mirror(mirror: str) -> str:
    """The security archive beside a Debian mirror: http://HOST/debian -> http://HOST/debian-security.

    Override: AUFS_HARNESS_DEBIAN_SECURITY_MIRROR.
    """
    override = os.environ.get("AUFS_HARNESS_DEBIAN_SECURITY_MIRROR")
    if override:
        return override.rstrip("/")
    return mirror.rstrip("/") + "-security"


def pockets(suite: str) -> tuple[str, ...]:
    """The pockets an up-to-date system of `suite` installs from, main first (sid has one)."""
    if suite in UNSTABLE_SUITES:
        return (suite,)
    return (suite, f"{suite}-updates", f"{suite}-security")


def sources_lines(suite: str, mirror: str, keyring: Path | None) -> list[str]:
    """One-line-style sources.list entries for every pocket of `suite` (main component)."""
    signed = f"[signed-by={keyring}] " if keyring else ""
    lines = []
    for pocket in pockets(suite):
        url = security_mirror(mirror) if pocket.endswith("-security") else mirror.rstrip("/")
        lines.append(f"deb {signed}{url} {pocket} main")
    return lines


@dataclass(frozen=True)
class Offer:
    """One version of one kernel source package, and the pockets that serve it."""

    package: str
    version: str
    pockets: tuple[str, ...]

    @property
    def kernel(self) -> KernelVersion:
        return debian_kernel_version(self.version)

    def describe(self) -> str:
        """ "linux-source-5.10 5.10.262-1 from bullseye-security" """
        also = f" (also in {', '.join(self.pockets[1:])})" if len(self.pockets) > 1 else ""
        return f"{self.package} {self.version} from {self.pockets[0]}{also}"


_MADISON = re.compile(r"^\s*(\S+)\s*\|\s*(\S+)\s*\|\s*(\S+)\s+(\S+?)(?:/\S+)?\s+\S+\s+Packages\s*$")


def parse_madison(text: str, suite: str) -> list[Offer]:
    """Offers from `apt-cache madison` lines ("pkg | version | URL pocket/main amd64 Packages").

    A version served by several pockets is one Offer listing them in pocket
    order (main, updates, security); lines of other suites are ignored.
    """
    order = pockets(suite)
    found: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        m = _MADISON.match(line)
        if not m or m[4] not in order:
            continue
        served = found.setdefault((m[1], m[2]), [])
        if m[4] not in served:
            served.append(m[4])
    return [
        Offer(pkg, ver, tuple(sorted(served, key=order.index)))
        for (pkg, ver), served in found.items()
    ]


def _by_version(a: Offer, b: Offer) -> int:
    return compare_debian(a.version, b.version)


def newest(offers: list[Offer]) -> Offer:
    """The offer with the highest Debian version (offers must not be empty)."""
    return max(offers, key=functools.cmp_to_key(_by_version))


def sort_offers(offers: list[Offer]) -> list[Offer]:
    """Package name, then newest version first."""
    by_version = sorted(offers, key=functools.cmp_to_key(_by_version), reverse=True)
    return sorted(by_version, key=lambda o: o.package)


def choose_offer(offers: list[Offer], suite: str, pin: str | None) -> Offer:
    """The linux-source-X.Y package an up-to-date `suite` system gets, or the pinned version.

    Without a pin: the series of the newest `linux-source` metapackage (what
    linux-image-amd64 follows), then the newest linux-source-X.Y of that series
    over every pocket (a backported newer series, such as 6.12 in
    bookworm-security, is not the suite's kernel line). With a pin: that exact
    version of any linux-source-X.Y. UserError when the pin is not served;
    InfraError when the index holds no kernel source at all.
    """
    real = [o for o in offers if re.fullmatch(r"linux-source-\d+\.\d+", o.package)]
    if pin is not None:
        return _pinned(real, suite, pin)
    meta = [o for o in offers if o.package == "linux-source"]
    if meta:
        series = newest(meta).kernel.series
        line = [o for o in real if o.kernel.series == series]
        if line:
            return newest(line)
    if real:
        return newest(real)
    raise InfraError(
        f"the Debian {suite} index lists no linux-source package (mirror {host_mirror()}): "
        "check the mirror (AUFS_HARNESS_DEBIAN_MIRROR)"
    )


def _pinned(real: list[Offer], suite: str, pin: str) -> Offer:
    for offer in real:
        if offer.version == pin:
            return offer
    listed = ", ".join(o.version for o in sort_offers(real)[:6]) or "none"
    raise UserError(
        f"Debian {suite} serves no linux-source version {pin} (newest: {listed}): "
        f"pick one from `aufs-harness kmod versions debian:{suite}` or drop '={pin}'"
    )


@dataclass
class DebianSource:
    suite: str
    version: str | None = None
    mirror: str | None = None

    @classmethod
    def from_spec(cls, spec: str) -> DebianSource:
        rest = spec[len("debian:") :]
        suite, _, version = rest.partition("=")
        if suite not in DEBIAN_SUITES:
            raise UserError(
                f"unknown Debian suite {suite!r} in {spec!r}: use one of "
                f"{', '.join(DEBIAN_SUITES)} (e.g. debian:bullseye)"
            )
        if version:
            debian_kernel_version(version)  # reject "=latest" before any network
        return cls(suite, version or None)

    @property
    def spec(self) -> str:
        return f"debian:{self.suite}" + (f"={self.version}" if self.version else "")

    @property
    def root(self) -> Path:
        # Not kmod/apt/SUITE: that held main-only lists in earlier versions.
        return kmod_cache() / "debian" / self.suite

    def _apt_options(self) -> list[str]:
        root = self.root
        return [
            "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", "Dir::Etc::Preferences=/dev/null",
            "-o", "Dir::Etc::PreferencesParts=/dev/null",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::State::status={root / 'status'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Acquire::Languages=none",
            "-o", "APT::Architecture=amd64",
        ]  # fmt: skip

    def _prepare(self) -> None:
        root = self.root
        for sub in ("lists/partial", "cache/archives/partial", "debs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        mirror = self.mirror or host_mirror()
        keyring = DEBIAN_KEYRING if DEBIAN_KEYRING.is_file() else None
        text = "".join(f"{line}\n" for line in sources_lines(self.suite, mirror, keyring))
        sources = root / "sources.list"
        if not sources.is_file() or sources.read_text() != text:
            sources.write_text(text)
            for old in (root / "lists").glob("*_Packages*"):
                old.unlink()

    def _lists_fresh(self) -> bool:
        lists = list((self.root / "lists").glob("*_Packages*"))
        if not lists:
            return False
        return time.time() - min(p.stat().st_mtime for p in lists) < LISTS_MAX_AGE

    def _update(self, deadline: Deadline) -> None:
        log.info("apt-get update (private lists for %s)", ", ".join(pockets(self.suite)))
        try:
            procs.run(["apt-get", "-q", *self._apt_options(), "update"], deadline=deadline)
        except InfraError as exc:
            raise InfraError(f"cannot read the Debian archive for {self.suite}: {exc}") from exc

    def _madison(self, deadline: Deadline) -> str:
        """apt-cache madison of every linux-source* package the lists name."""
        names = procs.run(
            ["apt-cache", *self._apt_options(), "pkgnames", "linux-source"], deadline=deadline
        ).stdout.split()
        if not names:
            return ""
        return procs.run(
            ["apt-cache", *self._apt_options(), "madison", *sorted(names)], deadline=deadline
        ).stdout

    def offers(self, deadline: Deadline) -> list[Offer]:
        """Every linux-source* version the suite's pockets serve (lists refreshed daily).

        Remembered for as long as the private lists stay the same, so a rebuild
        asks neither the network nor apt-cache. Takes the suite's lock.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / ".lock")):
            return self._offers(deadline)

    def _offers(self, deadline: Deadline) -> list[Offer]:
        self._prepare()
        if not self._lists_fresh():
            self._update(deadline)
        memo = self.root / "offers.json"
        stamp = self._lists_stamp()
        try:
            known = json.loads(memo.read_text())
            if known["stamp"] == stamp:
                return [Offer(o[0], o[1], tuple(o[2])) for o in known["offers"]]
        except (OSError, ValueError, KeyError, IndexError):
            pass
        offers = parse_madison(self._madison(deadline), self.suite)
        rows = [[o.package, o.version, list(o.pockets)] for o in offers]
        memo.write_text(json.dumps({"stamp": stamp, "offers": rows}))
        return offers

    def resolve(self, deadline: Deadline) -> Offer:
        """The package, version and pockets `debian:SUITE[=VERSION]` names (see choose_offer)."""
        return choose_offer(self.offers(deadline), self.suite, self.version)

    def expected_version(self, deadline: Deadline) -> KernelVersion:
        """The kernel version, from the package index alone (nothing is downloaded)."""
        return self.resolve(deadline).kernel

    def _lists_stamp(self) -> str:
        lists = sorted((self.root / "lists").glob("*_Packages*"))
        return ";".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in lists)

    def fetch(self, deadline: Deadline) -> KernelSource:
        offer = self.resolve(deadline)
        # One run at a time per suite: apt-get refuses a second user of the lists.
        with FileLock(str(self.root / ".lock")):
            return self._fetch(offer, deadline)

    def _fetch(self, offer: Offer, deadline: Deadline) -> KernelSource:
        package, version = offer.package, offer.version
        tree_dir = kmod_cache() / "trees" / f"debian-{package}-{version}".replace(":", "_")
        url, sha256 = self._package_file(package, version, deadline)
        if not (tree_dir / _READY).is_file():
            log.info("downloading %s", offer.describe())
            tarball = self._download(package, version, sha256, deadline)
            top = _unpack_tarball(tarball, tree_dir, deadline)
            shutil.rmtree(self.root / f"deb-{package}-{version}", ignore_errors=True)
        else:
            top = _single_top(tree_dir)
        return KernelSource(
            spec=self.spec,
            tree=top,
            version=KernelVersion.from_makefile(top),
            identity=f"debian:{package}={version}",
            origin=f"Debian {offer.pockets[0]}",
            package=package,
            package_version=version,
            pocket=offer.pockets[0],
            url=url,
            sha256=sha256,
            owned=True,
        )

    def _package_file(self, package: str, version: str, deadline: Deadline) -> tuple[str, str]:
        """The .deb's URL and sha256 as the apt index gives them (`apt-get
        download --print-uris`: nothing is downloaded), remembered per version.
        InfraError when apt names no such file."""
        memo = self.root / "debs" / f"{package}_{version.replace(':', '%3a')}.uri.json"
        try:
            known = json.loads(memo.read_text())
            return str(known["url"]), str(known["sha256"])
        except (OSError, ValueError, KeyError):
            pass
        out = procs.run(
            ["apt-get", "-q", *self._apt_options(), "download", "--print-uris",
             f"{package}={version}"],
            deadline=deadline,
        ).stdout  # fmt: skip
        url, sha256 = parse_print_uris(out)
        memo.write_text(json.dumps({"url": url, "sha256": sha256}))
        return url, sha256

    def _download(self, package: str, version: str, sha256: str, deadline: Deadline) -> Path:
        debs = self.root / "debs"
        found = sorted(debs.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
        if not found:
            log.info("apt-get download %s=%s", package, version)
            procs.run(
                ["apt-get", "-q", *self._apt_options(), "download", f"{package}={version}"],
                deadline=deadline,
                cwd=debs,
            )
            found = sorted(debs.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
            if not found:
                raise InfraError(f"apt-get download {package} left no .deb in {debs}")
        deb = found[-1]
        got = file_sha256(deb)
        if got != sha256:
            deb.unlink()
            raise InfraError(
                f"{deb.name} has sha256 {got}, the apt index says {sha256}: a broken download "
                "or mirror; run again"
            )
        extract = self.root / f"deb-{package}-{version}"
        tarballs = sorted(extract.glob("usr/src/linux-source-*.tar.*"))
        if not tarballs:
            shutil.rmtree(extract, ignore_errors=True)
            procs.run(["dpkg-deb", "-x", deb, extract], deadline=deadline)
            tarballs = sorted(extract.glob("usr/src/linux-source-*.tar.*"))
        if not tarballs:
            raise InfraError(f"{deb.name} holds no usr/src/linux-source-*.tar.*")
        return tarballs[0]


_PRINT_URIS = re.compile(r"^'(?P<url>[^']+)'\s+\S+\s+\d+\s+SHA256:(?P<sha>[0-9a-f]{64})\s*$", re.M)


def parse_print_uris(text: str) -> tuple[str, str]:
    """(URL, sha256) of the one file `apt-get download --print-uris` names
    ("'URL' NAME SIZE SHA256:HEX"). InfraError when it names none."""
    m = _PRINT_URIS.search(text)
    if m is None:
        raise InfraError(f"apt-get --print-uris named no file with a SHA256: {text[:200]!r}")
    return m["url"], m["sha"]


# --------------------------------------------------------------------------- tarball


@dataclass
class TarballSource:
    url: str

    def expected_version(self, deadline: Deadline) -> KernelVersion | None:
        """From a kernel.org-style name (linux-6.1.192.tar.xz); None for other names."""
        m = _TARBALL_NAME.search(self.url.rstrip("/").rsplit("/", 1)[-1])
        return KernelVersion.parse(m[1]) if m else None

    def fetch(self, deadline: Deadline) -> KernelSource:
        downloads = kmod_cache() / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        name = self.url.rstrip("/").rsplit("/", 1)[-1] or "linux.tar"
        local = downloads / f"{_digest(self.url)}-{name}"
        if not local.is_file():
            self._download(local, deadline)
        digest = file_sha256(local)
        top = _unpack_tarball(local, kmod_cache() / "trees" / f"tarball-{digest[:24]}", deadline)
        return KernelSource(
            spec=self.url,
            tree=top,
            version=KernelVersion.from_makefile(top),
            identity=f"tarball:sha256={digest}",
            origin=self.url,
            url=self.url,
            sha256=digest,
            owned=True,
        )

    def _download(self, local: Path, deadline: Deadline) -> None:
        log.info("downloading %s", self.url)
        tmp = local.with_name(local.name + f".part{os.getpid()}")
        try:
            timeout = max(1.0, deadline.remaining())
            with urllib.request.urlopen(self.url, timeout=timeout) as resp, open(tmp, "wb") as f:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    deadline.check(f"downloading {self.url}")
            os.rename(tmp, local)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", None) or exc
            raise InfraError(f"cannot download {self.url}: {reason}") from exc


# --------------------------------------------------------------------------- git


@dataclass
class GitSource:
    url: str
    ref: str

    @classmethod
    def from_spec(cls, spec: str) -> GitSource:
        body = spec[len("git+") :]
        url, sep, ref = body.rpartition("@")
        if not sep or not url or not ref:
            raise UserError(f"{spec!r}: write a git kernel source as git+URL@REF")
        return cls(url, ref)

    def expected_version(self, deadline: Deadline) -> KernelVersion | None:
        return None  # known once the ref is checked out

    def fetch(self, deadline: Deadline) -> KernelSource:
        mirror = kmod_cache() / "git" / f"{_digest(self.url)}.git"
        mirror_fetch(self.url, mirror, deadline)
        commit = resolve_commit(mirror, self.ref, deadline)
        tree_dir = kmod_cache() / "trees" / f"git-{commit[:24]}"
        if not (tree_dir / _READY).is_file():
            archive = mirror / f"archive-{commit}.tar"
            procs.run(
                ["git", "-C", mirror, "archive", "--format=tar", "--prefix=linux/", "-o", archive,
                 commit],
                deadline=deadline,
            )  # fmt: skip
            try:
                top = _unpack_tarball(archive, tree_dir, deadline)
            finally:
                archive.unlink(missing_ok=True)
        else:
            top = _single_top(tree_dir)
        return KernelSource(
            spec=f"git+{self.url}@{self.ref}",
            tree=top,
            version=KernelVersion.from_makefile(top),
            identity=f"git:{commit}",
            origin=f"{self.url} at {self.ref} ({commit[:12]})",
            url=self.url,
            commit=commit,
            owned=True,
        )


def mirror_fetch(url: str, mirror: Path, deadline: Deadline) -> None:
    """Create or update a bare mirror of `url` (a URL or a local repository)."""
    mirror.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(mirror) + ".lock"):
        _mirror_fetch(url, mirror, deadline)


def _mirror_fetch(url: str, mirror: Path, deadline: Deadline) -> None:
    if (mirror / "HEAD").is_file():
        log.info("git fetch %s", url)
        procs.run(
            ["git", "-C", mirror, "fetch", "--prune", "--quiet", url, "+refs/*:refs/*"],
            deadline=deadline,
        )
        return
    mirror.parent.mkdir(parents=True, exist_ok=True)
    tmp = mirror.with_name(f".tmp-{mirror.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("git clone --mirror %s", url)
    try:
        procs.run(["git", "clone", "--mirror", "--quiet", url, tmp], deadline=deadline)
        os.rename(tmp, mirror)
    except InfraError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot clone {url}: {exc}; check the URL or path") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_commit(repo: Path, ref: str, deadline: Deadline) -> str:
    """The commit a branch, remote branch, tag or hash names in `repo`."""
    for candidate in (f"refs/heads/{ref}", f"refs/remotes/origin/{ref}", f"refs/tags/{ref}", ref):
        res = procs.run(
            ["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"],
            deadline=deadline,
            check=False,
        )
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip()
    raise UserError(f"{ref!r} names no branch, tag or commit in {repo}: check the ref")


# --------------------------------------------------------------------------- path


@dataclass
class PathSource:
    path: Path
    spec: str

    def expected_version(self, deadline: Deadline) -> KernelVersion | None:
        return None  # reading the Makefile is the fetch itself

    def fetch(self, deadline: Deadline) -> KernelSource:
        tree = self.path.expanduser().resolve()
        if not tree.is_dir():
            raise UserError(f"kernel source {self.path} is not a directory: give a kernel tree")
        version = KernelVersion.from_makefile(tree)
        return KernelSource(
            spec=self.spec,
            tree=tree,
            version=version,
            identity=f"path:{tree}:{tree_fingerprint(tree, deadline)}",
            origin=str(tree),
        )


def tree_fingerprint(tree: Path, deadline: Deadline) -> str:
    """A digest of every file's path, size and mtime: cheap, and changes on any edit."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            rel = os.path.relpath(p, tree)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        deadline.check(f"fingerprinting {tree}")
    return h.hexdigest()[:24]
