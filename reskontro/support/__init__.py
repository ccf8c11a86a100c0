"""Support's answers: one identifier in, everything about it out (`explain` of an entry or a
bank payment: the rules' decision, where it went, its match and what was done to it by hand,
and what to do next, in one line).

Holds the resolution of any identifier a person has at hand (resolve) and the explanation put
together from the stages below (explain).
May use: reskontro.exchange, reskontro.payments, reskontro.transfer, reskontro.rules,
reskontro.ledger and below. Reads only.
"""
