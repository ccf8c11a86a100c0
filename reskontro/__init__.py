"""reskontro: the creditor's customer ledger, sent to Lowell every evening."""
import sys

if not ((3, 11) <= sys.version_info[:2] < (3, 13)):  # pragma: no cover - depends on interpreter
    raise ImportError(
        "reskontro needs Python 3.11 or 3.12: durable-rules 2.0.28, the newest release, does not "
        f"import on Python {sys.version_info[0]}.{sys.version_info[1]} "
        "(undefined symbol PyEval_CallObject on 3.13)."
    )

__version__ = "0.1.0"
