"""Kernel and aufs module: sources, patch series, config, build, load."""

from harness.core.render import Templates

templates = Templates(__name__)
