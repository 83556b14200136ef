"""Everything shipped into a VM: the union-filesystem suite (suite/), the
module loader (modload.py), and the two modules host and guest share:
kmsg.py (kernel log, taint, what a kernel line means, per-check kernel facts)
and records.py (the loader's results as data).

Guest code runs with the guest's python3 (3.9 on bullseye): standard
library, pytest and pyudev only, and nothing from the host packages. The host
imports only kmsg and records from here (tests/unit/test_layers.py).
"""
