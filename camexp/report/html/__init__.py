"""`camexp report html`: a static, self-contained site of a results folder (camexp/report/html/site.py)."""
