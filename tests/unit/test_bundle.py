"""bundle: everything to reproduce a cell elsewhere, and nothing private."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from harness.bundle import make_bundle
from harness.repro import Cell, find_cell
from harness.results import FAILED, CheckResult, Stage, TargetReport
from harness.resultsdir import ResultsDir
from kmod.pipeline import artifact_store


def _cell(tmp_path: Path) -> Cell:
    fixups = tmp_path / "src" / "fixups"
    fixups.mkdir(parents=True)
    (fixups / "0001-fix.patch").write_text(f"--- a/x\n+++ b/x\n# made in {tmp_path}/wt\n")
    store = artifact_store()

    def produce(out: Path) -> dict[str, str]:
        (out / "config").write_text("CONFIG_AUFS_FS=m\n")
        (out / "fragment.config").write_text("CONFIG_AUFS_FS=m\n")
        return {"kernel_release": "5.10.223"}

    entry = store.get_or_build({"test": 1}, produce)
    report = TargetReport("debian:bullseye aufs", verdict=FAILED, console_log=str(tmp_path))
    report.stages = [Stage("image", "ok", 1.0, f"built {tmp_path}/images/{'a' * 24}/rootfs.img")]
    report.checks = [CheckResult("suite/test_a.py::test_x[aufs-ext4]", FAILED, message="no")]
    report.extra["build"] = {
        "key": entry.key,
        "kernel": {
            "package": "linux-source-5.10",
            "package_version": "5.10.223-1",
            "pocket": "bullseye",
            "url": "http://deb.debian.org/debian/pool/main/l/linux/linux-source-5.10_5.10.223-1_all.deb",
            "sha256": "f733d27d239d65598d96d7a72f71ac50f49f2380192a1b3b4ca2f5ad5144dd63",
        },
        "aufs": {
            "url": str(tmp_path / "src" / "aufs.bundle"),
            "branch": "aufs5.10.140",
            "commit": "0c55dd9dcf13d5de98218aca4b1a6ad1181acb33",
        },
        "artifacts": {"bzImage": str(entry.path / "bzImage")},
        "reproducer": f"aufs-harness kmod build --kernel debian:bullseye --aufs-src "
        f"{tmp_path}/src/aufs.bundle --aufs-ref 0c55dd9dcf13 --fixup-dir {fixups}",
    }
    results = ResultsDir.new(tmp_path / "results")
    results.write([report])
    return find_cell(results.root, "debian-bullseye-aufs")


def test_a_bundle_holds_the_sources_and_nothing_of_this_machine(tmp_path: Path) -> None:
    cell = _cell(tmp_path)
    path, members = make_bundle(cell, tmp_path)
    for want in ("reproduce.sh", "manifest.json", "fixups/0001-fix.patch", "config",
                 "fragment.config", "image-recipe.json", "provisioning/user-data",
                 "failed-checks.txt", "recorded/report.json"):  # fmt: skip
        assert want in members
    with tarfile.open(path) as tar:
        texts = {
            m.name.split("/", 1)[1]: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }
        tar.extractall(tmp_path / "unpacked", filter="data")
    for name, text in texts.items():
        assert "PRIVATE KEY" not in text, name
        assert str(tmp_path) not in text, name
    manifest = json.loads(texts["manifest.json"])
    assert manifest["aufs"]["commit"] == "0c55dd9dcf13d5de98218aca4b1a6ad1181acb33"
    assert manifest["failed_checks"] == ["suite/test_a.py::test_x[aufs-ext4]"]
    assert len(manifest["config_sha256"]) == 64
    kernel = manifest["kernel"]
    assert (kernel["package"], kernel["package_version"], kernel["pocket"]) == (
        "linux-source-5.10", "5.10.223-1", "bullseye")  # fmt: skip
    assert kernel["sha256"].startswith("f733d27d") and kernel["sha256"] in texts["reproduce.sh"]
    assert manifest["image"] == {"key": "a" * 24, "suite": "bookworm", "scenario": "suite"}
    assert "--fixup-dir fixups" in texts["reproduce.sh"]
    # the bundled report is a cell repro can read: pinned, from the bundle's own files
    top = next((tmp_path / "unpacked").iterdir())
    recorded = find_cell(top / "recorded", "debian:bullseye aufs")
    spec = recorded.build_spec()
    assert spec.kernel == "debian:bullseye=5.10.223-1" and spec.fixup_dir == Path("fixups")
    assert recorded.distro == "bookworm" and recorded.image_key == "a" * 24
    assert (
        recorded.build is not None and recorded.build["config_sha256"] == manifest["config_sha256"]
    )
