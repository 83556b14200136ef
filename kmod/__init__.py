"""Kernel and aufs module: sources, patch series, config, build, load."""
