"""Local files and folders, safely: exclusive temporary files that never follow a link,
setting a file aside with its reason (folders), private modes (private), the run lock (lock)
and the log file (logfile).
May use: the standard library and reskontro.errors only.
"""
