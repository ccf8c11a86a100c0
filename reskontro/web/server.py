"""`reskontro web`: the support page under uvicorn, bound where the config allows."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from reskontro.config import load_config
from reskontro.web.security import check_bind


def serve(site_dir: Path, host: str | None = None, port: int | None = None,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve the page until SIGINT/SIGTERM. A host other than the loopback address without
    users or trusted proxies in `[web]` is refused (security.Refused) before anything listens."""
    import uvicorn

    from reskontro.web.app import create_app

    web = load_config(site_dir).web
    host = host or web.host
    port = port or web.port
    check_bind(web, host)
    config = uvicorn.Config(
        create_app(site_dir), host=host, port=port, lifespan="on", log_level="warning",
        # The client's address is the socket's: only [web] trusted_proxies may name a login, and
        # uvicorn must not rewrite the address from X-Forwarded-For on its own.
        proxy_headers=False, server_header=False, date_header=True, access_log=False)
    server = uvicorn.Server(config)
    if on_ready is not None:
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{port}/")
    logging.getLogger("reskontro.web").info("support page on %s:%s (logins: %s)", host, port,
                                            "required" if web.authenticated else "none, loopback only")
    server.run()
