"""Adapters: one module per outside system or format, each turning it into domain types.

Installed as ``reskontro.adapters`` (see setup.cfg ``package_dir``)."""
