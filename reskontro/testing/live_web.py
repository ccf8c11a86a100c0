"""The support page served on 127.0.0.1 in a thread of this process (tests, benchmarks, the
screenshots in docs/): a real uvicorn server on a free port."""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LiveWeb:
    url: str
    server: object          # uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_web(site_dir: Path, *, timeout: float = 60.0, **options) -> LiveWeb:
    """Serve the site's page until stop(); returns once it accepts connections."""
    import uvicorn

    from reskontro.web.app import create_app
    port = free_port()
    config = uvicorn.Config(create_app(site_dir, **options), host="127.0.0.1", port=port, lifespan="on",
                            log_level="warning", proxy_headers=False, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="live-web")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the support page did not start on 127.0.0.1:{port}")
        time.sleep(0.01)    # polling for start-up, not a wait for a result
    return LiveWeb(f"http://127.0.0.1:{port}", server, thread)
