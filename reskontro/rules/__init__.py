"""The rules: what goes to Lowell tonight, and why.

Holds the rule file's loader (rulefile), its lint (lint), the vocabulary of facts the rules
read (facts), the durable_rules engine (engine), deciding the ledger one match group at a
time (decide), and what the decisions sum up to: plan, explain, the data-quality report
(reports), what a candidate rule file would decide differently (diff), how much each rule
decides and is tested (coverage), and the history of decision changes the export journals
(history).
May use: reskontro.ledger and below. Never writes a file or sends anything (history writes
the export's decision changes into its transaction).
"""
