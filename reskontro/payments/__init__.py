"""Incoming payments: bank files into the ledger.

Holds the inbox (inbox: one completeness test, one owner of processing/, receipts and
payment files set aside with their reason), the watchdog watcher (watcher), and booking bank
payments against invoices by KID (booking).
May use: reskontro.transfer (the journal, for receipts), reskontro.ledger, reskontro.adapters
(the bank formats) and below.
"""
