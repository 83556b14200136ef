"""What people read in the morning: the HTML report of a results directory
(model.py shapes it, html.py renders it), the run history in SQLite
(history.py) and what changed between two runs (diff.py)."""
