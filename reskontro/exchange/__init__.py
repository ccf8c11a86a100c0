"""The exchange with Lowell: SFTP send and fetch, and the nightly cycle.

Holds sending the outbox and fetching the remote outbound folder, with the outbox's
reconciliation with the journal (remote), and the cycle that `run` and `serve` drive: fetch,
inbox, post, outbox, export, send, at send_time in the configured zone (cycle).
May use: reskontro.payments, reskontro.transfer, reskontro.rules, reskontro.ledger,
reskontro.adapters and below.
"""
