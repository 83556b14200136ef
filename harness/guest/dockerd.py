"""Docker's aufs storage driver in a test guest: start dockerd, measure copy-up, stop it.

A program of the guest package (Python 3.9, standard library only; it imports
nothing of ours, so the host uploads this one file and runs it):

    python3 dockerd.py start     # prints a JSON object: ok, reason, driver, ...
    python3 dockerd.py bench     # prints a JSON object: the copy-up table
    python3 dockerd.py stop

`start` prepares what dockerd needs on the harness's bare init (cgroup v1
hierarchies, /dev/shm as tmpfs, devpts), starts dockerd with
--storage-driver=aufs and no network, and makes the local base image (a
busybox-static root filesystem, `docker import`ed: no registry is reachable).
When dockerd refuses aufs or falls back to another driver, `ok` is false and
`reason` is one line naming why. The suite's docker checks
(suite/test_docker_engine.py) use the dockerd this leaves running.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

DOCKERD_ARGS = (
    "--storage-driver=aufs",
    "--iptables=false",
    "--bridge=none",
    "--exec-opt",
    "native.cgroupdriver=cgroupfs",
)
ROOT = Path("/var/lib/docker")
AUFS_ROOT = ROOT / "aufs"
LOG = Path("/var/log/aufs-harness-dockerd.log")
PIDFILE = Path("/var/run/docker.pid")
SOCKET = Path("/var/run/docker.sock")
BASE_IMAGE = "aufs-harness/busybox:base"
BENCH_IMAGE = "aufs-harness/copyup-bench:local"
BENCH_SIZES_MIB = (1, 64, 512)
REPEAT = 200  # writes averaged for the second write and the volume write
BUSYBOX = Path("/bin/busybox")
START_TIMEOUT = 120.0
CGROUP_ROOT = Path("/sys/fs/cgroup")


def sh(argv: list[str], timeout: float = 600.0, check: bool = True, **kw: Any) -> str:
    """Run argv, return its stdout; a failure raises RuntimeError with stderr's last line."""
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    r = subprocess.run(
        argv, check=False, capture_output=True, text=True,
        timeout=timeout, env=env, **kw,
    )  # fmt: skip
    if check and r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {last}")
    return str(r.stdout)


def mounted() -> dict[str, str]:
    """Mount point -> filesystem type, from /proc/mounts."""
    out = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out[parts[1]] = parts[2]
    return out


def prepare_host() -> list[str]:
    """What dockerd needs that the harness's init does not set up; returns what was done."""
    done = []
    mounts = mounted()
    if mounts.get("/dev/shm") != "tmpfs":
        Path("/dev/shm").mkdir(parents=True, exist_ok=True)
        sh(["mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm", "/dev/shm"])
        done.append("/dev/shm mounted as tmpfs")
    if "/dev/pts" not in mounts:
        Path("/dev/pts").mkdir(parents=True, exist_ok=True)
        sh(["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts", "/dev/pts"])
        done.append("/dev/pts mounted")
    if str(CGROUP_ROOT) not in mounts:
        sh(["mount", "-t", "tmpfs", "-o", "mode=755", "cgroup", str(CGROUP_ROOT)])
        done.append("cgroup v1 hierarchies mounted")
    mounts = mounted()
    for line in Path("/proc/cgroups").read_text().splitlines()[1:]:
        name, _hier, _num, enabled = line.split()[:4]
        where = CGROUP_ROOT / name
        if enabled != "1" or str(where) in mounts:
            continue
        where.mkdir(exist_ok=True)
        sh(["mount", "-t", "cgroup", "-o", name, "cgroup", str(where)])
    apparmor = Path("/sys/module/apparmor/parameters/enabled")
    if apparmor.exists() and apparmor.read_text().strip() == "Y":
        done.append("warning: AppArmor is on (boot with apparmor=0)")
    return done


def filesystems() -> list[str]:
    return [ln.split()[-1] for ln in Path("/proc/filesystems").read_text().splitlines() if ln]


def dockerd_pid() -> int | None:
    try:
        pid = int(PIDFILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def server_answers() -> bool:
    """True once the daemon (not just the client) answers `docker version`."""
    r = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return r.returncode == 0 and bool(r.stdout.strip())


def refusal(log_text: str) -> str:
    """dockerd's own line saying why it stopped, shortened to its message."""
    lines = [ln for ln in log_text.splitlines() if ln.strip()]
    for pattern in ("failed to start daemon", "error initializing graphdriver", "level=fatal"):
        for ln in reversed(lines):
            if pattern in ln:
                m = re.search(r'msg="((?:[^"\\]|\\.)*)"', ln)
                return (m.group(1) if m else ln).replace('\\"', '"')[:300]
    return (lines[-1] if lines else "no output")[:300]


def start() -> dict[str, Any]:
    result: dict[str, Any] = {"ok": False, "reason": "", "dockerd_args": list(DOCKERD_ARGS)}
    result["prepared"] = prepare_host()
    result["aufs_in_proc_filesystems"] = "aufs" in filesystems()
    if dockerd_pid() is None:
        log = LOG.open("w")
        proc = subprocess.Popen(
            ["dockerd", *DOCKERD_ARGS], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            if proc.poll() is not None:
                why = refusal(LOG.read_text(errors="replace"))
                missing = "" if result["aufs_in_proc_filesystems"] else "aufs is not in this kernel"
                missing += " (no aufs in /proc/filesystems); " if missing else ""
                result["reason"] = f"dockerd refused --storage-driver=aufs: {missing}{why}"
                result["exit"] = proc.returncode
                result["log_tail"] = LOG.read_text(errors="replace").splitlines()[-20:]
                return result
            if SOCKET.exists() and server_answers():
                break
            time.sleep(0.5)
        else:
            result["reason"] = f"dockerd did not answer within {START_TIMEOUT:.0f}s (see {LOG})"
            return result
        result["start_seconds"] = round(START_TIMEOUT - (end - time.monotonic()), 1)
    info = json.loads(sh(["docker", "info", "--format", "{{json .}}"], 60))
    result["driver"] = info.get("Driver")
    result["driver_status"] = info.get("DriverStatus")
    result["server_version"] = info.get("ServerVersion")
    result["cgroup_driver"] = info.get("CgroupDriver")
    result["warnings"] = info.get("Warnings") or []
    if info.get("Driver") != "aufs":
        result["reason"] = (
            f"dockerd fell back to the {info.get('Driver')} storage driver instead of aufs"
        )
        stop()
        return result
    make_base_image()
    result["ok"] = True
    return result


def busybox_rootfs_tar() -> bytes:
    """A tarball of a busybox-static root filesystem: /bin/busybox, an applet
    symlink for each applet it has, and the directories a container needs."""
    applets = sh([str(BUSYBOX), "--list"], 30).split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "root", "var", "data"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode = len(passwd), 0o644
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def image_exists(name: str) -> bool:
    r = subprocess.run(["docker", "image", "inspect", name], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # fmt: skip
    return r.returncode == 0


def make_base_image() -> None:
    """`docker import` the busybox root filesystem as BASE_IMAGE (once)."""
    if image_exists(BASE_IMAGE):
        return
    work = Path("/var/tmp/aufs-harness-docker")
    work.mkdir(parents=True, exist_ok=True)
    tarball = work / "busybox-rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    sh(["docker", "import", "--change", 'CMD ["/bin/sh"]', str(tarball), BASE_IMAGE], 300)


def build(tag: str, dockerfile: str, timeout: float = 1800.0) -> None:
    """DOCKER_BUILDKIT=0 docker build --network=none from a context holding only the Dockerfile."""
    ctx = Path("/var/tmp/aufs-harness-docker/ctx-" + re.sub(r"\W", "-", tag))
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    sh(["docker", "build", "--network=none", "-q", "-t", tag, str(ctx)], timeout)


def container_layer(cid: str) -> str:
    """The aufs layer id of a container (its diff/ and mnt/ directory name)."""
    full = sh(["docker", "inspect", "--format", "{{.Id}}", cid], 60).strip()
    return (ROOT / "image/aufs/layerdb/mounts" / full / "mount-id").read_text().strip()


def du_bytes(path: Path) -> int:
    """Bytes of the regular files below `path` (apparent sizes)."""
    total = 0
    for dirpath, _dirs, files in os.walk(str(path)):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.stat(p).st_blocks * 512
    return total


def timed_write(path: Path) -> float:
    """Seconds to open `path` for writing, write one byte at offset 0 and close it."""
    t0 = time.perf_counter()
    fd = os.open(str(path), os.O_WRONLY)
    try:
        os.pwrite(fd, b"x", 0)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def mean_write(path: Path, times: int = REPEAT) -> float:
    """Mean seconds of `times` one-byte writes (the guest's clock may tick in
    jiffies: 4 ms on the lean aufs kernel, longer than one such write)."""
    t0 = time.perf_counter()
    for _ in range(times):
        timed_write(path)
    return (time.perf_counter() - t0) / times


def bench() -> dict[str, Any]:
    """Copy-up cost: one byte written to a 1, 64 and 512 MiB file of a lower
    image layer through a running container's aufs union (first write, then a
    second), and the same write to a file of the same size in a data volume."""
    make_base_image()
    if not image_exists(BENCH_IMAGE):
        lines = [f"FROM {BASE_IMAGE}"]
        for mib in BENCH_SIZES_MIB:
            lines.append(f"RUN head -c {mib * 1024 * 1024} /dev/urandom > /f{mib}")
        build(BENCH_IMAGE, "\n".join(lines) + "\n")
    sh(["docker", "volume", "rm", "-f", "aufs-harness-bench"], 60, check=False)
    cid = sh(["docker", "run", "-d", "--network=none", "-v", "aufs-harness-bench:/vol",
              BENCH_IMAGE, "sleep", "3600"], 120).strip()  # fmt: skip
    rows = []
    try:
        layer = container_layer(cid)
        mnt, diff = AUFS_ROOT / "mnt" / layer, AUFS_ROOT / "diff" / layer
        vol = Path(sh(["docker", "volume", "inspect", "--format", "{{.Mountpoint}}",
                       "aufs-harness-bench"], 60).strip())  # fmt: skip
        for mib in BENCH_SIZES_MIB:
            sh(["docker", "exec", cid, "sh", "-c", f"cp /f{mib} /vol/f{mib}"], 600)
            sh(["sync"], 300)
            before = du_bytes(diff)
            first = timed_write(mnt / f"f{mib}")
            copied = du_bytes(diff) - before
            second = mean_write(mnt / f"f{mib}")
            copied_again = du_bytes(diff) - before - copied
            volume = mean_write(vol / f"f{mib}")
            rows.append({
                "size_mib": mib, "first_write_s": round(first, 6),
                "second_write_s": round(second, 6), "volume_write_s": round(volume, 6),
                "copied_bytes": copied, "copied_again_bytes": copied_again,
            })  # fmt: skip
    finally:
        sh(["docker", "rm", "-f", cid], 120, check=False)
        sh(["docker", "volume", "rm", "-f", "aufs-harness-bench"], 60, check=False)
    return {
        "rows": rows,
        "through": "the container's union at aufs/mnt/<id>, from the guest",
        "second_and_volume": f"mean of {REPEAT} writes",
    }


def stop() -> dict[str, Any]:
    pid = dockerd_pid()
    if pid is None:
        return {"stopped": False}
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 60
    while time.monotonic() < end and dockerd_pid() is not None:
        time.sleep(0.5)
    return {"stopped": dockerd_pid() is None}


ACTIONS = {"start": start, "bench": bench, "stop": stop}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ACTIONS:
        print(f"usage: dockerd.py {{{','.join(ACTIONS)}}}", file=sys.stderr)
        return 2
    try:
        result = ACTIONS[argv[0]]()
    except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as exc:
        result = {"ok": False, "error": f"{argv[0]}: {exc}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
