"""The floor: what every layer may use and what imports nothing above it.

errors (taxonomy and exit codes), deadline (one clock passed down), procs
(argv lists in their own process group), store (content-addressed entries),
render (jinja2 per package), paths (XDG directories), logtail (growing logs).
Nothing here imports kmod, vm or the rest of harness (tests/unit/test_layers.py).
"""
