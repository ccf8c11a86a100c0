"""The rules: what goes to Lowell tonight, and why.

Holds the rule file's loader (rulefile), its lint (lint), the vocabulary of facts the rules
read (facts), the durable_rules engine (engine), deciding the ledger one match group at a
time (decide), and what the decisions sum up to: plan, explain, the data-quality report
(reports).
May use: reskontro.ledger and below. Never writes a file or sends anything.
"""
