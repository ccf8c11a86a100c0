"""The support page: server-rendered pages over the same service functions as the CLI.

Starlette with Jinja2 (autoescaped) and htmx, vendored in static/ (no CDN, no build step).
`reskontro web` serves it; see security.py for who may use it and what a request must carry.
"""
