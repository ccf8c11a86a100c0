"""The ledger: the store of customers, entries and matches as the ERP has them, and what this
service booked itself.

Holds the tables (schema), the store that maps rows to and from the domain types (store,
with its in-place upgrades: migrate), the import of ERP exports (importer, reading them
through reskontro.adapters.ledger_import), the bank-reference bookkeeping that keeps one bank
payment one entry (bankref), and the sample ledger generator (sample).
May use: reskontro.domain, reskontro.config, reskontro.errors, reskontro.files and
reskontro.adapters. Knows nothing of rules, files sent or bank files.
"""
