"""A pytest plugin for the HOST side of an xdist run: every test start and
report is appended to a JSON-lines file as it happens.

If the guest hangs and the run is killed, everything reported so far is
kept, and the test that started but never finished is known. Loaded through
PYTEST_PLUGINS on the controller only (workers in the guest never see it).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

ENV = "AUFS_HARNESS_RESULTLOG"


def _write(record: dict[str, Any]) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    record["t"] = time.time()
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# The worker that is starting a check: xdist's pytest_runtest_logstart does not
# say (DSession.worker_logstart knows the node but drops it), so that method is
# wrapped to note the node's gateway id first (harness.multivm needs it to tell
# the VMs of one run apart).
_starting = {"worker": ""}


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    dsession = config.pluginmanager.getplugin("dsession")
    original = getattr(dsession, "worker_logstart", None)
    if original is None:
        return

    def worker_logstart(node: Any, nodeid: str, location: object) -> None:
        _starting["worker"] = str(node.gateway.id)
        try:
            original(node=node, nodeid=nodeid, location=location)
        finally:
            _starting["worker"] = ""

    dsession.worker_logstart = worker_logstart


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _write({"event": "start", "nodeid": nodeid, "worker": _starting["worker"]})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    longrepr = ""
    if report.failed or report.skipped:
        if report.skipped and isinstance(report.longrepr, tuple):
            longrepr = str(report.longrepr[2])  # the skip reason
        else:
            longrepr = str(report.longrepr)
    _write(
        {
            "event": "report",
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "duration": report.duration,
            "longrepr": longrepr,
            "sections": [[title, text] for title, text in report.sections],
            "worker": _worker_id(report),
            # what the guest recorded as data (harness.guest.kmsg.FACTS: kernel facts)
            "properties": {str(k): v for k, v in report.user_properties},
        }
    )


def _worker_id(report: pytest.TestReport) -> str:
    node = getattr(report, "node", None)  # set by xdist on the controller
    gateway = getattr(node, "gateway", None)
    return str(getattr(gateway, "id", ""))


def pytest_testnodedown(node: Any, error: object) -> None:
    _write({"event": "worker-down", "worker": node.gateway.id, "error": str(error or "")})
