"""One tarball with everything needed to reproduce a cell on another machine.

    aufs-repro-<slug>/
        manifest.json          kernel source (package, version, pocket, .deb URL and
                               sha256; or tarball URL and sha256; or git URL and commit),
                               aufs repository, branch and commit, build key,
                               .config sha256, image recipe key and suite, the
                               scenario (suite or docker), checks
        reproduce.sh           `aufs-harness repro` of the checks, from these files
        recorded/report.json   the cell's report, trimmed: what repro compares with
        fixups/*.patch         the user's fix-ups, as the build applied them
        config-fragment.config the user's --config-fragment, if any
        fragment.config        the rendered guest fragment; config: the final .config
        image-recipe.json      the image's recipe (packages, mirror, rendered hooks);
                               manifest "image": its store key, suite and scenario
        provisioning/          the seed files a VM gets, with placeholder keys
        failed-checks.txt      the check ids to rerun, one a line

No private key and no absolute path of this machine goes in: text is checked
before it is written, and a path of this machine is replaced by a placeholder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shlex
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness import __version__
from harness.bootspec import image_recipe
from harness.core.errors import InfraError, UserError
from harness.core.paths import cache_dir, state_dir
from harness.repro import Cell
from harness.results import CheckResult, Stage, TargetReport, to_json
from harness.resultsdir import REPORT_JSON, slug
from kmod.pipeline import artifact_store
from vm.image import images_store
from vm.seed import SeedInput, render_files

log = logging.getLogger(__name__)

PLACEHOLDER = "<local path>"
PRIVATE_MARKERS = ("PRIVATE KEY",)
KEY_PLACEHOLDERS = SeedInput(
    name="aufs-vm",
    authorized_key="ssh-ed25519 <a client key generated for each VM> aufs-harness@aufs-vm",
    host_private="<a host key generated for each VM>",
    host_public="ssh-ed25519 <its public half> root@aufs-vm",
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_roots(cell: Cell) -> list[str]:
    """Absolute paths of this machine that must not leave it, longest first:
    the cache, state and results directories, the working directory, the home
    directory's harness folders, and the cell's local sources."""
    roots = {str(cache_dir()), str(state_dir()), str(cell.results), str(cell.results.parent)}
    roots.add(os.getcwd())
    build = cell.build or {}
    src = str((build.get("aufs") or {}).get("url") or "")
    if src.startswith("/"):
        roots.add(src)
        roots.add(str(Path(src).parent))
    spec = cell.build_spec() if cell.build else None
    for path in (spec.fixup_dir, spec.config_fragment) if spec else ():
        if path is not None:
            roots.update({str(path), str(path.parent)})
    # and their ancestors down to two levels (/work/shared, /tmp/pytest-of-x):
    # a local path may be written relative to any of them
    for root in list(roots):
        roots.update(str(p) for p in Path(root).parents if len(p.parts) > 2)
    return sorted((r for r in roots if len(Path(r).parts) > 2), key=len, reverse=True)


class Files:
    """The tarball's members as they are collected: name -> bytes."""

    def __init__(self, roots: list[str]) -> None:
        self.roots = roots
        self.members: dict[str, bytes] = {}
        self.replaced = 0

    def add(self, name: str, data: bytes | str) -> None:
        """Add a member; its text is cleaned of this machine's paths. Raises
        InfraError if it holds a private key."""
        raw = data.encode() if isinstance(data, str) else data
        text = raw.decode(errors="surrogateescape")
        if any(m in text for m in PRIVATE_MARKERS):
            raise InfraError(f"refusing to bundle {name}: it holds a private key")
        for root in self.roots:
            if root in text:
                self.replaced += text.count(root)
                text = text.replace(root, PLACEHOLDER)
        self.members[name] = text.encode(errors="surrogateescape")


def make_bundle(cell: Cell, out: Path) -> tuple[Path, list[str]]:
    """Write the cell's tarball to `out` (a .tar.gz path, or a directory to put
    aufs-repro-<slug>.tar.gz in). Returns its path and the member names.
    Raises UserError for a stock-kernel cell or missing fix-ups, InfraError when
    something private would go in."""
    build = cell.build
    if build is None:
        raise UserError(f"cell {cell.label!r} booted a stock kernel: there is no build to bundle")
    spec = cell.build_spec()
    top = f"aufs-repro-{slug(cell.label)}".replace("=", "-")
    files = Files(local_roots(cell))
    key = str(build.get("key") or "")
    entry = artifact_store().lookup(key) if key else None
    config_sha = ""
    if entry is not None:
        for name in ("fragment.config", "config"):
            if (entry.path / name).is_file():
                files.add(name, (entry.path / name).read_bytes())
        config_sha = _sha256((entry.path / "config").read_bytes())
    else:
        log.warning("kernel build %s is no longer in the store: no .config in the bundle", key)
    fixups = _fixups(cell, files)
    if spec.config_fragment is not None:
        if not spec.config_fragment.is_file():
            raise UserError(f"the cell's --config-fragment {spec.config_fragment} is gone")
        files.add("config-fragment.config", spec.config_fragment.read_bytes())
    image = _image(cell, files)
    for rel, text in render_files(KEY_PLACEHOLDERS).items():
        if not rel.endswith("ssh_host_ed25519_key"):
            files.add(f"provisioning/{rel}", text)
    red = cell.red_checks()
    files.add("failed-checks.txt", "".join(f"{c.nodeid}\n" for c in red))
    aufs = dict(build.get("aufs") or {})
    local_src = str(aufs.get("url", "")).startswith("/")
    if local_src:
        aufs["url"] = f"(a local clone on the machine that ran it: {Path(aufs['url']).name})"
    manifest = {
        "harness_version": __version__,
        "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cell": cell.label,
        "verdict": cell.report.verdict,
        "kernel": build.get("kernel"),
        "kernel_release": build.get("kernel_release"),
        "aufs": aufs,
        "build_key": key,
        "config_sha256": config_sha,
        "fixups": fixups,
        "image": image,
        "scenario": cell.scenario,
        "suite_args": cell.suite_args(),
        "failed_checks": [c.nodeid for c in red],
    }
    files.add("manifest.json", json.dumps(manifest, indent=2) + "\n")
    files.add(f"recorded/{REPORT_JSON}", _recorded(cell, spec.kernel, config_sha, image, red))
    files.add("reproduce.sh", _script(cell, aufs, str(build.get("aufs", {}).get("url", "")), red))
    if files.replaced:
        log.info("bundle: %d mention(s) of this machine's paths replaced", files.replaced)
    return _write(out, top, files), sorted(files.members)


def _fixups(cell: Cell, files: Files) -> list[dict[str, str]]:
    """Copy the user's fix-ups, checked against the sha256 the build recorded."""
    spec = cell.build_spec()
    if spec.fixup_dir is None:
        return []
    if not spec.fixup_dir.is_dir():
        raise UserError(f"the cell's --fixup-dir {spec.fixup_dir} is gone: it cannot be bundled")
    recorded = {str(p.get("name")): p.get("sha256") for p in (cell.build or {}).get("patches", [])}
    out = []
    for patch in sorted(spec.fixup_dir.glob("*.patch")):
        data = patch.read_bytes()
        digest = _sha256(data)
        if recorded.get(patch.name) not in (None, digest):
            log.warning("fix-up %s changed since the cell was built", patch.name)
        files.add(f"fixups/{patch.name}", data)
        out.append({"name": patch.name, "sha256": digest})
    return out


def _image(cell: Cell, files: Files) -> dict[str, Any]:
    """The image recipe: as stored with the image, else the current recipe of its suite."""
    key = cell.image_key
    meta = images_store().path(key) / "meta.json" if key else None
    if meta is not None and meta.is_file():
        inputs = json.loads(meta.read_text()).get("inputs", {})
    else:
        inputs = image_recipe(cell.target()).inputs()
    files.add("image-recipe.json", json.dumps(inputs, indent=2, sort_keys=True) + "\n")
    return {"key": key, "suite": inputs.get("suite", cell.distro), "scenario": cell.scenario}


def _recorded(
    cell: Cell, kernel: str, config_sha: str, image: dict[str, Any], red: list[CheckResult]
) -> str:
    """The cell's report as repro needs it elsewhere: its build by key, pinned,
    from relative paths (reproduce.sh runs in the bundle), and its red checks."""
    build = dict(cell.build or {})
    spec = replace(
        cell.build_spec(),
        kernel=kernel,
        aufs_src="AUFS_SRC",
        fixup_dir=Path("fixups") if cell.build_spec().fixup_dir else None,
        config_fragment=Path("config-fragment.config") if cell.build_spec().config_fragment
        else None,
    )  # fmt: skip
    kept = {k: build.get(k) for k in ("key", "kernel", "aufs", "kernel_release", "vermagic")}
    kept["patches"] = [
        {k: p.get(k) for k in ("name", "sha256", "status")} for p in build.get("patches", [])
    ]
    kept["reproducer"] = spec.reproducer(str((build.get("aufs") or {}).get("commit") or ""))
    kept["config_sha256"] = config_sha
    report = TargetReport(
        target=cell.label,
        verdict=cell.report.verdict,
        reason=cell.report.reason,
        kernel_release=cell.report.kernel_release,
        accel=cell.report.accel,
        started=cell.report.started,
        stages=[Stage("image", "ok", 0.0, f"image {image['key']} reused from the cache")],
        checks=list(red),
        extra={"build": kept, "image": image, "cell": cell.axes, "scenario": cell.scenario},
    )
    return to_json([report])


def _script(cell: Cell, aufs: dict[str, Any], src: str, red: list[CheckResult]) -> str:
    """reproduce.sh: repro of the red checks from the bundle's own files."""
    default_src = "" if src.startswith("/") else src
    kernel = (cell.build or {}).get("kernel") or {}
    what = f"{kernel.get('package')} {kernel.get('package_version')} ({kernel.get('pocket')})"
    fixup = "--fixup-dir fixups " if cell.build_spec().fixup_dir else ""
    cmd = "aufs-harness repro recorded " + shlex.quote(cell.label)
    lines = [
        "#!/bin/sh",
        f"# Reproduce {cell.label}: {len(red)} failed check(s) (failed-checks.txt).",
        f"# Needs aufs-harness and the sources: kernel {what};",
        f"#   {kernel.get('url') or kernel.get('identity')} sha256 {kernel.get('sha256') or '-'};",
        f"# aufs {aufs.get('branch')} at {aufs.get('commit')} from {aufs.get('url')}.",
        "# usage: ./reproduce.sh [AUFS_SRC] [CHECK] [repro options, e.g. --shell]",
        "#   AUFS_SRC: a clone or bundle of aufs-standalone holding that commit, or its URL",
        "# Exit 0: every check ended as recorded; 1: one ended differently; 2: error.",
        "set -eu",
        'cd "$(dirname "$0")"',
        f"AUFS_SRC=${{AUFS_SRC:-{shlex.quote(default_src) if default_src else ''}}}",
        'if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then AUFS_SRC=$1; shift; fi',
        'if [ -z "$AUFS_SRC" ]; then',
        '    echo "reproduce.sh: give the aufs-standalone source (AUFS_SRC or first argument)" >&2',
        "    exit 2",
        "fi",
        f'exec {cmd} "$@" --aufs-src "$AUFS_SRC" {fixup}--results results',
        "",
    ]
    return "\n".join(lines)


def _write(out: Path, top: str, files: Files) -> Path:
    """The members as a gzipped tarball under `top/`, written atomically."""
    path = out / f"{top}.tar.gz" if out.is_dir() else out
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in sorted(files.members.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)
    return path
