"""The ledger store's tables (SQLAlchemy Core): ledger, transfer journal, bank payments.

Amounts are kept as integer øre (exact on SQLite and PostgreSQL alike); the domain sees Decimal.
"""
from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, Date, DateTime, Engine, Index, Integer, MetaData,
                        String, Table, Text, func, inspect, text)

metadata = MetaData()

customers = Table(
    "customers", metadata,
    Column("id", String(35), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("type", String(16)),
    Column("org_no", String(20)),
    Column("line1", String(100)), Column("line2", String(100)), Column("line3", String(100)),
    Column("post_code", String(16)), Column("city", String(64)), Column("country", String(2)),
    Column("email", String(200)), Column("phone", String(40)),
    Column("factoring_default", Boolean, nullable=False, default=False),
    Column("tags", Text),                               # the rules' tags: lower-case words, sorted, blank-separated
    Column("version", String(16), nullable=False),      # what the transfer file carries
    Column("stamp", String(16), nullable=False),        # every field (a change re-decides)
)

entries = Table(
    "entries", metadata,
    Column("id", String(35), primary_key=True),
    Column("customer_id", String(35), nullable=False, index=True),
    Column("type", String(16), nullable=False),
    Column("document_no", String(35), nullable=False),
    Column("document_date", Date, nullable=False),
    Column("due_date", Date),
    Column("amount_ore", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("kid", String(25), index=True),
    Column("kid_check", String(8), nullable=False, default="absent"),   # facts.kid_state, kept at import
    Column("status", String(16)),
    Column("factoring", Boolean),
    Column("opt_out", Boolean, nullable=False, default=False),
    Column("reverses", String(35)),
    Column("source", String(35)),
    Column("dunning_level", Integer, nullable=False, default=0),
    Column("text", String(200)),
    Column("match_id", String(35), index=True),
    # the match this entry left after Lowell got it with this entry in it (a removal: held)
    Column("left_match", String(35)),
    # the archive reference of the bank payment this entry is (bank_payments.archive_ref)
    Column("bank_ref", String(120), index=True),
    # who booked it: NULL = the ERP (imported); bank = this service, from a bank file;
    # correction = this service, by correct-payment. The service's own entries are never
    # overwritten by an import, and an import never takes them out of their match.
    Column("origin", String(12)),
    # why the ERP's copy of this bank payment disagrees with it (held: rule bank-ref-conflict)
    Column("bank_ref_conflict", String(200)),
    # the last decision the export journaled, where the journal does not imply it: NULL means
    # transfer when Lowell has a version of the entry (sent), exclude in a match settled before
    # the service (settled_history) that Lowell has not, else never decided yet (rules.history)
    Column("decision", String(8)),
    Column("version", String(16), nullable=False),      # what the transfer file carries
    Column("stamp", String(16), nullable=False),        # every field (a change re-decides)
)
Index("ix_entries_reverses", entries.c.reverses)
Index("ix_entries_document_no", entries.c.document_no)
# `find`: case-insensitive prefix search by id and document number (a range scan over
# lower(...); SQLite's lower() folds ASCII only, so ledger.search also tries the other case of
# other letters). KID is digits: the plain index on kid serves its prefixes.
Index("ix_entries_id_lower", func.lower(entries.c.id))
Index("ix_entries_document_no_lower", func.lower(entries.c.document_no))
Index("ix_customers_id_lower", func.lower(customers.c.id))
Index("ix_customers_name_lower", func.lower(customers.c.name))

# The ERP's ids for entries and matches this service already has under its own id: the ERP's
# copy of a payment the service booked (same bank_ref), and the ERP's match for an invoice
# whose match the service made or grew. Imports and matches naming the ERP id resolve here.
aliases = Table(
    "aliases", metadata,
    Column("kind", String(8), primary_key=True),           # entry | match
    Column("erp_id", String(35), primary_key=True),
    Column("target_id", String(35), nullable=False, index=True),
)

matches = Table(
    "matches", metadata,
    Column("id", String(35), primary_key=True),
    Column("version", String(16), nullable=False),
)

# Items (customer | entry | match) whose current version is not delivered yet: the nightly export
# reads this instead of the whole ledger, so its cost follows the day's changes.
pending = Table(
    "pending", metadata,
    Column("kind", String(8), primary_key=True),
    Column("id", String(35), primary_key=True),
    sqlite_with_rowid=False,
)

# --- transfer journal ---------------------------------------------------------------------------
files = Table(
    "files", metadata,
    Column("file_id", String(64), primary_key=True),
    Column("sequence", Integer, nullable=False, unique=True),
    Column("kind", String(8), nullable=False),            # daily | backlog | manual
    Column("state", String(12), nullable=False),          # writing | written | uploading | uploaded | accepted | rejected | invalid | abandoned
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("cut_off", DateTime(timezone=True)),
    Column("entry_count", Integer, nullable=False, default=0),
    Column("detail", Text),
    # SHA-256 of the bytes that passed the pre-send check: the upload sends exactly these or nothing
    Column("sha256", String(64)),
)

# Which version of which item went in which file. Delivered = a row whose file is accepted;
# in flight = a row whose file is written or uploaded.
file_items = Table(
    "file_items", metadata,
    Column("file_id", String(64), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("id", String(35), primary_key=True),
    Column("version", String(16), nullable=False),
    Column("members", Text),                              # matches: the member ids sent, space-separated
    sqlite_with_rowid=False,
)
Index("ix_file_items_item", file_items.c.kind, file_items.c.id)

# The receiver's receipt of each file, as read (the errors as JSON: [{code, ref, text}]);
# files.detail keeps the one-line summary, this what explain shows per entry.
receipts = Table(
    "receipts", metadata,
    Column("file_id", String(64), primary_key=True),
    Column("status", String(12), nullable=False),          # accepted | rejected
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("read_at", DateTime(timezone=True), nullable=False),
    Column("name", String(255), nullable=False),           # the receipt file's name
    Column("errors", Text, nullable=False),
)

# The last version of each item the receiver has (or will have, once in flight is accepted).
sent = Table(
    "sent", metadata,
    Column("kind", String(8), primary_key=True),
    Column("id", String(35), primary_key=True),
    Column("version", String(16), nullable=False),
    Column("file_id", String(64), nullable=False),
    Column("state", String(12), nullable=False),          # in_flight | delivered
    Column("members", Text),
    sqlite_with_rowid=False,
)

# Match groups that were settled when the backlog was sent: history, not Lowell's business
# unless the group reopens (then it goes like any other).
settled_history = Table(
    "settled_history", metadata,
    Column("match_id", String(35), primary_key=True),
    sqlite_with_rowid=False,
)

# Decision changes, journaled at export: only changes (an entry's first decision is not one),
# so it stays small. rules_digest: the rule file in force (rules.history.rules_digest).
decision_history = Table(
    "decision_history", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", String(35), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("from_decision", String(8), nullable=False),
    Column("to_decision", String(8), nullable=False),
    Column("rule_id", Text, nullable=False),           # the rule that decided `to_decision`
    Column("rules_digest", String(16), nullable=False),
    Column("file_id", String(64)),                     # the export that journaled it
)

meta = Table(
    "meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# --- incoming payment files and bank payments -------------------------------------------------
inbox_files = Table(
    "inbox_files", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("format", String(16), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    Column("payment_count", Integer, nullable=False, default=0),
)

bank_payments = Table(
    "bank_payments", metadata,
    Column("id", String(35), primary_key=True),           # also the ledger entry id once booked
    Column("archive_ref", String(120), nullable=False, unique=True),
    Column("format", String(16), nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("amount_ore", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_date", Date),
    Column("booking_date", Date),
    Column("kid", String(35)),            # the payment's reference (Max35Text): a KID when it matches one
    Column("invoice_no", String(35)),
    Column("payer_name", String(200)),
    Column("payer_account", String(40)),
    Column("bank_code", String(35)),      # camt.054 BkTxCd/Prtry/Cd is Max35Text
    Column("text", String(200)),
    Column("source", String(35), nullable=False),
    Column("status", String(16), nullable=False),          # unposted | matched | unmatched | booked_in_erp | dismissed
    Column("invoice_id", String(35)),
    Column("note", String(200)),
)
# the payments page (unmatched first, counts by status), explain of an invoice (its payments),
# and `find` by a payment's KID
Index("ix_bank_payments_status", bank_payments.c.status, bank_payments.c.booking_date, bank_payments.c.id)
Index("ix_bank_payments_invoice", bank_payments.c.invoice_id)
Index("ix_bank_payments_kid", bank_payments.c.kid)

# What a person did by hand (match-payment, dismiss-payment, correct-payment): who (the OS user,
# or the web page's login), when, what, why. Never changed, never deleted: `explain` shows it.
actions = Table(
    "actions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),   # UTC
    Column("who", String(100), nullable=False),
    Column("action", String(24), nullable=False),           # match-payment | dismiss-payment | correct-payment
    Column("payment", String(35), nullable=False, index=True),   # the bank payment or ledger payment
    Column("invoice", String(35), index=True),
    Column("reason", Text),
    Column("detail", Text),                                  # what it did, in one line
)

# The content (the transfer file's fields, as JSON) of a version of an entry Lowell has, kept
# when the ledger's entry changes away from it (an import) or when a hand-dropped file carried
# other content than the ledger's: `explain` shows sent value and current value side by side.
# The journal itself keeps only a digest of what was sent (the version).
sent_content = Table(
    "sent_content", metadata,
    Column("kind", String(8), primary_key=True),
    Column("id", String(35), primary_key=True),
    Column("version", String(16), primary_key=True),
    Column("content", Text, nullable=False),
    sqlite_with_rowid=False,
)


# --- the nightly cycle's history --------------------------------------------------------------
# One row per `run`/`serve` cycle: when it started and ended (NULL: still running, or killed),
# what each step did, what needs a person, the files and counts; `status` shows the last, and
# a scheduled run asks whether today's cycle has completed. JSON in text columns (any store).
runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(12), nullable=False),             # run | scheduled | serve
    Column("sftp", Boolean, nullable=False, default=True),  # fetch and send were part of it
    Column("started_at", DateTime(timezone=True), nullable=False, index=True),
    Column("finished_at", DateTime(timezone=True)),
    Column("result", String(16), nullable=False),           # running | ok | needs_person | failed
    Column("steps", Text),                                  # [{name, ok, summary, attention}]
    Column("needs_person", Text),                           # [text]
    Column("files", Text),                                  # {fetched, inbox, exported, sent}
    Column("counts", Text),                                 # {name: number}
)

# The entries the rules keep back now (hold, wait, exclude: as the plan counts them, of the
# entries not delivered or in flight as they are), one row each: `held` and `excluded` (and the
# web page's lists) page through it instead of deciding the ledger. rules.lists brings it up to
# date before it is read: the groups of what was marked (kept_dirty) since, or the whole ledger
# when the rules or the mode changed (meta `kept_basis`).
kept = Table(
    "kept", metadata,
    Column("entry_id", String(35), primary_key=True),
    Column("decision", String(8), nullable=False),          # hold | wait | exclude
    Column("rule_id", String(120), nullable=False),         # `<rule>:not-sendable`: decided transfer, cannot go
    Column("reason", Text, nullable=False),
    Column("customer_id", String(35), nullable=False),
)
Index("ix_kept_decision", kept.c.decision, kept.c.entry_id)
Index("ix_kept_decision_rule", kept.c.decision, kept.c.rule_id)     # the counts per rule, from the index alone
Index("ix_kept_rule", kept.c.rule_id, kept.c.entry_id)
Index("ix_kept_customer", kept.c.customer_id, kept.c.entry_id)

# Items marked pending since `kept` was brought up to date (written beside `pending`, which the
# export empties as it decides): their groups are decided again at the next read of the lists.
kept_dirty = Table(
    "kept_dirty", metadata,
    Column("kind", String(8), primary_key=True),            # entry | match
    Column("id", String(35), primary_key=True),
    sqlite_with_rowid=False,
)

# The entries the rules hold now, as the last cycle saw them (and since when, by which rule):
# a hold that is new tonight (not here, or held by another rule) is told to a person once.
held_items = Table(
    "held_items", metadata,
    Column("entry_id", String(35), primary_key=True),
    Column("rule_id", Text, nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)
