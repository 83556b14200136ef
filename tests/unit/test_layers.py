"""The import rule between layers (docs/architecture.md), checked on the real
import graph with grimp.

- The floor, harness.core, imports nothing of harness, kmod or vm outside itself.
- kmod and vm import of harness only the floor, and not each other.
- Host code imports of the guest package (harness.guest) only the modules the
  two sides share: harness.guest.kmsg and harness.guest.records.
- The guest package imports nothing of the host's.
"""

from __future__ import annotations

import grimp
import pytest

FLOOR = "harness.core"
GUEST = "harness.guest"
SHARED = ("harness.guest.kmsg", "harness.guest.records")
PIPELINE = ("kmod", "vm")


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _ours(module: str) -> bool:
    return any(_under(module, top) for top in ("harness", *PIPELINE))


def _rule_broken(importer: str, imported: str) -> str:
    """Which rule an import breaks, or "" when it is allowed."""
    if not _ours(imported):
        return ""
    if _under(importer, FLOOR) and not _under(imported, FLOOR):
        return "the floor imports upward"
    if _under(importer, GUEST):
        return "" if _under(imported, GUEST) else "guest code imports host code"
    if _under(imported, GUEST) and not any(_under(imported, m) for m in SHARED):
        return "host code imports guest code other than the shared modules"
    for package in PIPELINE:
        if not _under(importer, package):
            continue
        if _under(imported, "harness") and not _under(imported, FLOOR):
            return f"{package} imports harness beyond the floor"
        if any(_under(imported, other) for other in PIPELINE if other != package):
            return f"{package} imports {imported.split('.', maxsplit=1)[0]}"
    return ""


def violations(graph: grimp.ImportGraph) -> list[str]:
    """Every import in `graph` that breaks a rule, as "importer -> imported: rule"."""
    found = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            rule = _rule_broken(importer, imported)
            if rule:
                found.append(f"{importer} -> {imported}: {rule}")
    return found


def test_the_project_keeps_the_import_rule() -> None:
    graph = grimp.build_graph("harness", "kmod", "vm")
    assert FLOOR in graph.modules and "harness.guest.modload" in graph.modules
    assert violations(graph) == []


@pytest.mark.parametrize(
    ("importer", "imported", "rule"),
    [
        ("kmod.build", "harness.progress", "kmod imports harness beyond the floor"),
        ("vm.machine", "harness.runner", "vm imports harness beyond the floor"),
        ("vm.image", "kmod.source", "vm imports kmod"),
        ("harness.core.store", "harness.results", "the floor imports upward"),
        ("harness.core.procs", "vm.qemu", "the floor imports upward"),
        ("harness.runner", "harness.guest.modload", "host code imports guest code other"),
        ("kmod.pipeline", "harness.guest.modload", "host code imports guest code other"),
        ("harness.guest.modload", "harness.core.procs", "guest code imports host code"),
    ],
)
def test_a_broken_rule_is_found(importer: str, imported: str, rule: str) -> None:
    graph = grimp.ImportGraph()
    for module in (importer, imported):
        graph.add_module(module)
    graph.add_import(importer=importer, imported=imported)
    (found,) = violations(graph)
    assert found.startswith(f"{importer} -> {imported}: {rule}")


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("kmod.build", "harness.core.logtail"),
        ("harness.runner", "kmod.pipeline"),
        ("harness.guestsuite", "harness.guest.kmsg"),
        ("harness.guestload", "harness.guest.records"),
        ("harness.guest.modload", "harness.guest.kmsg"),
        ("vm.machine", "vm.ssh"),
    ],
)
def test_allowed_imports_pass(importer: str, imported: str) -> None:
    graph = grimp.ImportGraph()
    graph.add_import(importer=importer, imported=imported)
    assert violations(graph) == []
