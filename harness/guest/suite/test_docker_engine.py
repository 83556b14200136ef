"""I. Docker's aufs storage driver itself (docker.io 20.10.5), as a client of the kernel's aufs.

Runs only where dockerd runs with --storage-driver=aufs (`aufs-harness run
--scenario docker`, which starts it through harness/guest/dockerd.py); anywhere
else the module is skipped. Images are built locally from the imported busybox
base (no registry is reachable) with the legacy builder, --network=none.
Layout under /var/lib/docker/aufs: diff/<id> per layer, layers/<id> the
parents top-down, mnt/<id> a running container's union.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from unionfs import aufs

DOCKER = shutil.which("docker")
SOCKET = Path("/var/run/docker.sock")
ROOT = Path("/var/lib/docker")
AUFS_ROOT = ROOT / "aufs"
BASE = "aufs-harness/busybox:base"
WH_PFX, OPQ = ".wh.", ".wh..wh..opq"
XINO = "/dev/shm/aufs.xino"  # what Docker's aufs driver mounts with
BIG = 8 * 1024 * 1024
MANY_LAYERS = 45  # more than the 42 branches that once fit one mount's options page

if DOCKER is None or not SOCKET.exists():
    pytest.skip(
        "no dockerd with the aufs storage driver here (aufs-harness run --scenario docker)",
        allow_module_level=True,
    )


def docker(*args: str, timeout: float = 600.0, check: bool = True) -> str:
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    r = subprocess.run(
        ["docker", *args], check=False, capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
    if check and r.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])} exited {r.returncode}: {r.stderr[-500:]}"
        )
    return r.stdout


def build(tag: str, dockerfile: str) -> str:
    """Build `tag` from a context with only this Dockerfile; returns the image id."""
    with tempfile.TemporaryDirectory(prefix="docker-ctx-") as ctx:
        Path(ctx, "Dockerfile").write_text(dockerfile)
        docker("build", "--network=none", "-q", "-t", tag, ctx, timeout=1800)
    return docker("image", "inspect", "--format", "{{.Id}}", tag).strip()


def layer_ids(image: str) -> list[str]:
    """The aufs layer ids (diff/<id>) of an image's layers, base first."""
    diff_ids = json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", image))
    chain: list[str] = []
    for d in diff_ids:
        if not chain:
            chain.append(d)
        else:
            chain.append("sha256:" + hashlib.sha256(f"{chain[-1]} {d}".encode()).hexdigest())
    db = ROOT / "image/aufs/layerdb/sha256"
    return [(db / c.split(":", 1)[1] / "cache-id").read_text().strip() for c in chain]


def run_detached(image: str, *cmd: str) -> str:
    return docker("run", "-d", "--network=none", image, *(cmd or ("sleep", "3600"))).strip()


def container_layer(cid: str) -> str:
    full = docker("inspect", "--format", "{{.Id}}", cid).strip()
    return (ROOT / "image/aufs/layerdb/mounts" / full / "mount-id").read_text().strip()


def exec_sh(cid: str, script: str) -> str:
    return docker("exec", cid, "sh", "-c", script)


def mount_line(point: Path) -> str | None:
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split(" ")
        if len(fields) > 3 and fields[1] == str(point):
            return line
    return None


def walk(root: Path) -> set[str]:
    """Every path below root, relative, without aufs' own .wh..wh.* entries."""
    out = set()
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirs + files:
            if not name.startswith(".wh..wh."):
                out.add(os.path.normpath(os.path.join(rel, name)))
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """Three layers on the base: /data with a directory and a file to delete,
    an 8 MiB file, and a top file."""
    tag = "aufs-harness/engine-check:local"
    build(
        tag,
        f"FROM {BASE}\n"
        "RUN mkdir -p /data/dir && echo a > /data/dir/a && echo gone > /data/gone\n"
        f"RUN head -c {BIG} /dev/urandom > /data/big\n"
        "RUN echo top > /data/top\n",
    )
    yield tag
    docker("image", "rm", "-f", tag, check=False)


@pytest.fixture
def container(image: str) -> Iterator[str]:
    cid = run_detached(image)
    yield cid
    docker("rm", "-f", cid, check=False)


def test_docker_info_reports_aufs_driver() -> None:
    info = json.loads(docker("info", "--format", "{{json .}}"))
    status = dict(info.get("DriverStatus") or [])
    assert info.get("Driver") == "aufs", (
        f"expected: Storage Driver aufs; observed: {info.get('Driver')}"
    )
    for key in ("Root Dir", "Backing Filesystem", "Dirs", "Dirperm1 Supported"):
        assert key in status, (
            f"expected: {key!r} in docker info's driver status; observed: {status}"
        )
    assert status["Root Dir"] == str(AUFS_ROOT)
    assert int(status["Dirs"]) >= 1
    want = "true" if kernel_has_dirperm1() else "false"
    assert status["Dirperm1 Supported"] == want, (
        f"expected: Dirperm1 Supported: {want} (a test mount with dirperm1 "
        f"{'kept' if want == 'true' else 'lost'} it); observed: {status['Dirperm1 Supported']}"
    )


def kernel_has_dirperm1() -> bool:
    """Whether this kernel's aufs keeps dirperm1 on a mount, tried as Docker does."""
    with tempfile.TemporaryDirectory(prefix="dirperm1-") as tmp:
        base, union = Path(tmp, "base"), Path(tmp, "union")
        base.mkdir()
        union.mkdir()
        r = subprocess.run(["mount", "-t", "aufs", "-o", f"br:{base}=rw,dirperm1", "none",
                            str(union)], check=False, stderr=subprocess.PIPE)  # fmt: skip
        if r.returncode != 0:
            return False
        try:
            return "dirperm1" in aufs.mount_options(union)
        finally:
            subprocess.run(["umount", str(union)], check=True)


def test_layers_lists_parents_top_down(image: str) -> None:
    ids = layer_ids(image)
    assert len(ids) == 4
    base_file = AUFS_ROOT / "layers" / ids[0]
    assert base_file.read_text().split() == [], "expected: layers/<base> empty"
    for i, lid in enumerate(ids[1:], start=1):
        listed = (AUFS_ROOT / "layers" / lid).read_text().split()
        assert listed == list(reversed(ids[:i])), (
            f"expected: layers/{lid} lists {list(reversed(ids[:i]))} (top-down); observed: {listed}"
        )


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def load_image(tag: str, layers: list[bytes]) -> None:
    """`docker load` an image made here, one layer per tarball in `layers`
    (docker save's format): a 45-step `docker build` takes ~6 min under TCG."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"aufs-harness layer {i}"} for i in range(len(layers))],
    }).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{d.split(':')[1]}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    files = {"manifest.json": manifest, config_name: config, **dict(zip(names, layers))}
    archive = layer_tar(files)
    r = subprocess.run(["docker", "load"], input=archive, capture_output=True, check=False)
    assert r.returncode == 0, f"docker load: {r.stderr.decode(errors='replace')[-300:]}"


def test_image_of_more_than_42_layers_runs() -> None:
    tag = "aufs-harness/many-layers:local"
    base = subprocess.run(
        ["docker", "save", BASE], capture_output=True, check=True
    ).stdout  # the base image's one layer, as dockerd holds it
    with tarfile.open(fileobj=io.BytesIO(base)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        base_layer = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    layers = [base_layer]
    layers += [layer_tar({f"layer{n}": f"{n}\n".encode()}) for n in range(1, MANY_LAYERS)]
    try:
        load_image(tag, layers)
        ids = layer_ids(tag)
        assert len(ids) == MANY_LAYERS
        cid = run_detached(tag)
        try:
            union = AUFS_ROOT / "mnt" / container_layer(cid)
            seen = {n for n in range(1, MANY_LAYERS) if (union / f"layer{n}").is_file()}
            missing = sorted(set(range(1, MANY_LAYERS)) - seen)
            assert not missing, f"expected: every layer's file in the union; missing: {missing}"
            assert (union / "bin" / "busybox").is_file(), "expected: the base layer in the union"
            inside = exec_sh(cid, "cat /layer*").split()
            assert sorted(map(int, inside)) == list(range(1, MANY_LAYERS))
            branches = aufs.branches(union)
            assert len(branches) == MANY_LAYERS + 2, (  # + the init layer and the container's
                f"expected: {MANY_LAYERS + 2} branches; observed: {len(branches)}"
            )
        finally:
            docker("rm", "-f", cid, check=False)
    finally:
        docker("image", "rm", "-f", tag, check=False)


def xino_path(union: Path) -> str | None:
    """The union's xino file: /proc/mounts' xino= where shown, else (aufs with
    sysfs shows xino, like the branches, only there) si_<id>/xi_path."""
    for opt in aufs.mount_options(union):
        if opt.startswith("xino="):
            return opt[len("xino=") :]
    path = aufs.si_dir(union) / "xi_path"
    return path.read_text().strip() if path.exists() else None


def test_running_container_union_is_mounted_at_mnt(container: str) -> None:
    layer = container_layer(container)
    union = AUFS_ROOT / "mnt" / layer
    line = mount_line(union)
    assert line is not None and line.split(" ")[2] == "aufs", f"expected: aufs at {union}: {line}"
    opts = aufs.mount_options(union)
    assert "dio" in opts, f"expected: dio in /proc/mounts for {union}; observed: {opts}"
    assert xino_path(union) == XINO, f"expected: xino {XINO}; observed: {xino_path(union)}"
    if kernel_has_dirperm1():
        assert "dirperm1" in opts, f"expected: dirperm1 in {opts}"
    branches = aufs.branches(union)
    assert branches and branches[0] == f"{AUFS_ROOT / 'diff' / layer}=rw", branches
    assert all(b.endswith("=ro+wh") for b in branches[1:]), branches
    docker("stop", "-t", "1", container)
    assert mount_line(union) is None, f"expected: {union} unmounted once the container stopped"


def test_write_copies_up_the_whole_file_once(image: str, container: str) -> None:
    lower = AUFS_ROOT / "diff" / layer_ids(image)[2] / "data" / "big"
    before = sha(lower)
    diff = AUFS_ROOT / "diff" / container_layer(container)
    exec_sh(container, "printf x | dd of=/data/big bs=1 count=1 conv=notrunc 2>/dev/null")
    up = diff / "data" / "big"
    assert up.is_file(), f"expected: {up} after a one-byte write"
    st = up.stat()
    assert st.st_size == BIG and st.st_blocks * 512 >= BIG, (
        f"expected: the whole {BIG}-byte file copied up; observed: size {st.st_size}, "
        f"{st.st_blocks * 512} bytes allocated"
    )
    exec_sh(container, "printf y | dd of=/data/big bs=1 count=1 seek=1 conv=notrunc 2>/dev/null")
    again = up.stat()
    assert (again.st_ino, again.st_blocks) == (st.st_ino, st.st_blocks), (
        "expected: a second write copies nothing more"
    )
    assert up.read_bytes()[:2] == b"xy"
    assert sha(lower) == before, "expected: the lower layer's file untouched"


def test_deleting_a_lower_file_leaves_a_whiteout(image: str, container: str) -> None:
    lower = AUFS_ROOT / "diff" / layer_ids(image)[1] / "data" / "gone"
    exec_sh(container, "rm /data/gone")
    wh = AUFS_ROOT / "diff" / container_layer(container) / "data" / f"{WH_PFX}gone"
    assert wh.is_file(), f"expected: whiteout {wh}"
    assert lower.read_text() == "gone\n", "expected: the lower layer's file untouched"
    assert (
        exec_sh(container, "test -e /data/gone && echo present || echo absent").strip() == "absent"
    )


def test_recreated_directory_is_opaque(container: str) -> None:
    exec_sh(container, "rm -rf /data/dir && mkdir /data/dir && echo b > /data/dir/b")
    d = AUFS_ROOT / "diff" / container_layer(container) / "data" / "dir"
    assert (d / OPQ).is_file(), f"expected: opaque marker {d / OPQ}; observed: {os.listdir(d)}"
    assert exec_sh(container, "ls /data/dir").split() == ["b"]


def test_changes_survive_stop_start_and_vanish_with_rm(container: str) -> None:
    layer = container_layer(container)
    exec_sh(container, "echo kept > /data/new")
    docker("stop", "-t", "1", container)
    docker("start", container)
    assert exec_sh(container, "cat /data/new").strip() == "kept"
    docker("rm", "-f", container)
    for sub in ("diff", "mnt", "layers"):
        assert not (AUFS_ROOT / sub / layer).exists(), f"expected: {sub}/{layer} gone after rm"


def test_diff_and_export_agree_with_the_branches(image: str, container: str) -> None:
    exec_sh(container, "echo new > /data/new && rm /data/gone && echo more >> /data/top")
    layer = container_layer(container)
    rw = AUFS_ROOT / "diff" / layer
    changes = {}
    for line in docker("diff", container).splitlines():
        kind, path = line.split(" ", 1)
        changes[path] = kind
    assert changes.get("/data/new") == "A", changes
    assert changes.get("/data/gone") == "D", changes
    assert changes.get("/data/top") == "C", changes
    in_branch = walk(rw)
    for path, kind in changes.items():
        rel = path.lstrip("/")
        if kind == "D":
            parent, name = os.path.split(rel)
            assert os.path.join(parent, WH_PFX + name) in in_branch, f"no whiteout for {path}"
        else:
            assert rel in in_branch, f"expected: {path} ({kind}) in diff/{layer}"
    raw = subprocess.run(["docker", "export", container], stdout=subprocess.PIPE, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        exported = {os.path.normpath(m.name) for m in tar.getmembers()} - {"."}
    union = walk(AUFS_ROOT / "mnt" / layer)
    assert "data/gone" not in exported and "data/new" in exported
    assert exported == union, (
        f"expected: docker export == the union; only exported: {sorted(exported - union)[:10]}, "
        f"only in the union: {sorted(union - exported)[:10]}"
    )


def test_commit_keeps_deleted_files_deleted(container: str) -> None:
    exec_sh(container, "rm /data/gone && rm -rf /data/dir")
    tag = "aufs-harness/committed:local"
    try:
        docker("commit", container, tag)
        top = layer_ids(tag)[-1]
        names = set(os.listdir(AUFS_ROOT / "diff" / top / "data"))
        assert {f"{WH_PFX}gone", f"{WH_PFX}dir"} <= names, f"expected whiteouts; observed {names}"
        script = "ls -a /data; test ! -e /data/gone && test ! -e /data/dir && echo deleted"
        out = docker("run", "--rm", "--network=none", tag, "sh", "-c", script)
        assert out.strip().endswith("deleted"), f"expected: deleted files stay deleted; {out}"
    finally:
        docker("image", "rm", "-f", tag, check=False)
