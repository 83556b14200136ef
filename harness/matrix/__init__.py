"""The kernel matrix: many cells (kernel x aufs x userland x drivers x branch
filesystems x options) in one run, one results directory, known failures from a
baseline. spec.py reads a matrix file, baseline.py a baseline, run.py runs it."""
