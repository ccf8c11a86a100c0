"""Test and demo support, not the product: the stand-in receiver (receiver_model), the
loopback OpenSSH server (loopback_sshd) and the fault points crash tests drive (faults; the
product calls faults.point(), which does nothing unless a test arms it).
May use: anything in reskontro; only reskontro.transfer and reskontro.payments import faults.
"""
