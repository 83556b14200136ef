"""aufs-harness: prove whether aufs builds, loads and behaves on a kernel."""

__version__ = "0.1.0"
