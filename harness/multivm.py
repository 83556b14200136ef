"""One cell's suite over several VMs of the same kernel, through pytest-xdist:
one `--tx` per VM. `--dist load` shares the checks out among the VMs;
`--dist each` runs every check on every VM (one kernel booted with different
memory or CPU counts, say).

First step of issue 12's second half: the controller, its result log and the
watchdog's check timeout are guestsuite's own; what is not yet per VM is the
console watch (the watchdog reads VM 1's console for FATAL lines) and the
fresh-VM loop of harness.runner, which still drives one VM at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from harness import guestenv, guestsuite
from harness.core.deadline import Deadline
from harness.core.errors import InfraError, UserError
from harness.core.leftovers import owned_temp
from vm.machine import Machine

log = logging.getLogger(__name__)

DISTS = ("load", "each")


def tx_specs(machines: Sequence[Machine], workers: int) -> list[str]:
    """xdist's --tx values: `workers` gateways per VM, each over the VM's own ssh_config."""
    return [
        f"{workers}*ssh=-F {m.workdir / 'ssh_config'} {m.name}"
        f"//python=python3//chdir={guestenv.GUEST_ROOT}"
        for m in machines
    ]


def controller_argv(dist: str, txs: Sequence[str], suite_args: Sequence[str]) -> list[str]:
    """The controller's pytest argv (as guestsuite.run_in_vm's, with several --tx)."""
    if dist not in DISTS:
        raise UserError(f"--dist {dist}: use one of {', '.join(DISTS)}")
    if not txs:
        raise UserError("--dist over VMs needs at least one VM")
    tx_args = [arg for tx in txs for arg in ("--tx", tx)]
    return guestsuite.pytest_argv(
        "-p", "unionfs.options", "--dist", dist, *tx_args, "--max-worker-restart=0",
        "suite", *suite_args,
    )  # fmt: skip


def run_in_vms(
    machines: Sequence[Machine],
    results_dir: Path,
    suite_args: Sequence[str],
    deadline: Deadline,
    dist: str = "load",
    workers: int = 1,
    check_timeout: float = guestsuite.CHECK_TIMEOUT,
) -> guestsuite.SuiteOutcome:
    """Ship the suite into every VM and run one controller over all of them."""
    for m in machines:
        if m.guest is None:
            raise InfraError(f"VM {m.name} is not reachable over SSH")
        guestsuite.ship(m.guest, deadline.sub(300.0, f"installing the suite in {m.name}"))
    results_dir.mkdir(parents=True, exist_ok=True)
    argv = controller_argv(dist, tx_specs(machines, workers), suite_args)
    log.info("suite: --dist %s over %d VMs", dist, len(machines))
    with owned_temp("ctl") as tmp:
        Path(tmp, "pytest.ini").write_text("[pytest]\n")
        env = {"PYTHONPATH": str(guestsuite.suite_dir())}
        return guestsuite.run_controller(
            argv, env, Path(tmp), results_dir, deadline, check_timeout,
            machines[0].console_log(),
        )  # fmt: skip
