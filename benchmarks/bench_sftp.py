"""SFTP throughput: reskontro's SftpClient against OpenSSH's sftp, on one loopback sshd.

    .venv/bin/python benchmarks/bench_sftp.py [--mb 200] [--reps 3]

MB = 10^6 bytes. Every figure includes connecting and authenticating, for both tools, and is
the best of --reps runs. Downloads are fsynced by both (adapter always, sftp with -f).
Target: adapter >= 0.8x OpenSSH both ways.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reskontro.adapters.sftp import SftpClient
from reskontro.testing.loopback_sshd import LoopbackSshd

NAME = "bench.bin"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=200, help="file size in MB (10^6 bytes)")
    ap.add_argument("--reps", type=int, default=3, help="runs per method; the best counts")
    ap.add_argument("--request-size", type=int, default=None,
                    help="force the adapter's SFTP READ/WRITE size (default: ask the server)")
    args = ap.parse_args()
    sftp_bin = shutil.which("sftp")
    if sftp_bin is None:
        print("OpenSSH sftp client not found (apt-get install -y openssh-client)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench_sftp_") as tmp:
        work = Path(tmp)
        src = work / NAME
        size = args.mb * 10**6
        digest = make_random_file(src, size)
        with LoopbackSshd.start(work / "sshd") as sshd:
            # the file is bigger than the 64 MiB fetch limit of a site's default settings
            settings = sshd.settings(request_size=args.request_size, max_fetch_size=size)
            with SftpClient(settings) as probe:  # report what was negotiated
                transport = probe._ssh.get_transport() if probe._ssh else None
                cipher = transport.local_cipher if transport else "?"
                req = probe._request_size
            print(f"sshd 127.0.0.1:{sshd.port}, file {args.mb} MB, best of {args.reps}; "
                  f"adapter cipher {cipher}, SFTP request {req} B")

            def adapter_up() -> None:
                with SftpClient(settings) as c:
                    c.upload(src, expected_sha256=digest)   # as `send` does: hashed on the way

            def adapter_down() -> None:
                with SftpClient(settings) as c:
                    c.download_all(work / "dl")

            def openssh(batch: str, *flags: str) -> Callable[[], None]:
                batch_file = work / "batch"
                base = [sftp_bin, "-q", *flags, "-F", "/dev/null", "-b", str(batch_file),
                        "-i", str(sshd.client_key), "-o", "IdentitiesOnly=yes",
                        "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                        "-o", "GlobalKnownHostsFile=/dev/null",
                        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                        "-P", str(sshd.port)]

                def run() -> None:
                    batch_file.write_text(batch)
                    subprocess.run([*base, f"{sshd.user}@127.0.0.1"], check=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                return run

            def reset_inbound() -> None:
                for p in sshd.inbound.iterdir():
                    p.unlink()

            def stage_outbound() -> None:
                shutil.rmtree(work / "dl", ignore_errors=True)
                (work / "dl").mkdir()
                (sshd.outbound / NAME).unlink(missing_ok=True)
                os.link(src, sshd.outbound / NAME)  # a new name for the same bytes: no copy

            def check_up() -> None:
                assert sha256(sshd.inbound / NAME) == digest, "uploaded bytes differ"

            def check_down() -> None:
                assert sha256(work / "dl" / NAME) == digest, "downloaded bytes differ"
                assert not (sshd.outbound / NAME).exists(), "remote file not removed"

            get_batch = (f"get outbound/{NAME} {work / 'dl' / NAME}\n"
                         f"rm outbound/{NAME}\n")
            up_batch = f"put {src} inbound/{NAME}\n"
            # (run, untimed setup, untimed check) per method
            methods: dict[str, tuple[Callable[[], None], Callable[[], None], Callable[[], None]]]
            methods = {
                "adapter upload": (adapter_up, reset_inbound, check_up),
                "openssh upload": (openssh(up_batch), reset_inbound, check_up),
                "adapter download": (adapter_down, stage_outbound, check_down),
                "openssh download": (openssh(get_batch, "-f"), stage_outbound, check_down),
                # Reference only: OpenSSH forced to the adapter's cipher (its default is chacha20).
                f"openssh upload ({cipher})": (openssh(up_batch, "-c", cipher), reset_inbound,
                                               check_up),
                f"openssh download ({cipher})": (openssh(get_batch, "-f", "-c", cipher),
                                                 stage_outbound, check_down),
            }
            results = best_of(methods, args.reps)

    mbs = {k: args.mb / v for k, v in results.items()}
    for k, v in mbs.items():
        print(f"{k:<42} {v:8.1f} MB/s  ({results[k]:.2f} s)")
    up = mbs["adapter upload"] / mbs["openssh upload"]
    down = mbs["adapter download"] / mbs["openssh download"]
    print(f"ratio adapter/OpenSSH: upload {up:.2f}x, download {down:.2f}x (target >= 0.80x)"
          f"{'' if min(up, down) >= 0.8 else '  -- below target'}")
    up_same = mbs["adapter upload"] / mbs[f"openssh upload ({cipher})"]
    down_same = mbs["adapter download"] / mbs[f"openssh download ({cipher})"]
    print(f"ratio adapter/OpenSSH with the same cipher: upload {up_same:.2f}x, "
          f"download {down_same:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MiB")
    return 0


def best_of(methods: dict[str, tuple[Callable[[], None], Callable[[], None], Callable[[], None]]],
            reps: int) -> dict[str, float]:
    """Best wall time per method. Rounds interleave the methods so that load from other
    processes on the machine hits them alike; setup and check are not timed."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(reps):
        for name, (run, before, after) in methods.items():
            before()
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
            after()
    return {name: min(t) for name, t in times.items()}


def make_random_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


if __name__ == "__main__":
    sys.exit(main())
