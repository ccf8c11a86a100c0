"""The transfer file: exactly once, to the receiver's contract.

Holds the export's five exactly-once steps (export) with its helper processes (decide and
check: decide_worker, check_worker, helper_process), the Jinja2 rendering (render), the
pre-send check of the spec's rules (contract), the journal of what went in which file
(journal), the receiver's receipts (receipts) and files support drops by hand (manual_files).
May use: reskontro.rules, reskontro.ledger and below (and reskontro.testing.faults, the fault
points crash tests drive). Never talks to a server.
"""
