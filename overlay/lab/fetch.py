"""One HTTP GET from inside a lab namespace, without curl:

    python -m overlay.lab.fetch URL [--host NAME] [--timeout 10]

prints one JSON line ``{"url", "status", "bytes", "ms", "body"}`` (the
body's first 200 characters) and exits 0, or prints the error on stderr
and exits 1; 2 on a bad argument.  ``--host`` sets the Host header, for a
URL that names an address a name resolved to.

The demo fetches a page from a named peer through the virtual IPv4
address the name resolved to: a TCP connection through ``ovl0``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.parse
from collections.abc import Sequence

__all__ = ["get", "main"]

MAX_BODY = 1 << 20


def get(url: str, host: str | None, timeout: float) -> tuple[int, bytes, float]:
    """(status, body up to 1 MiB, milliseconds) of ``GET url``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url!r}")
    started = time.monotonic()
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        headers = {"Host": host} if host else {}
        conn.request("GET", parts.path or "/", headers=headers)
        response = conn.getresponse()
        body = response.read(MAX_BODY)
        return response.status, body, round((time.monotonic() - started) * 1000, 1)
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m overlay.lab.fetch",
                                     description="One HTTP GET, one JSON line of results.")
    parser.add_argument("url")
    parser.add_argument("--host", default=None, help="the Host header")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds for the connection and each read (default 10)")
    args = parser.parse_args(argv)
    if not 0 < args.timeout <= 120:
        parser.error("--timeout must be in (0, 120]")
    try:
        status, body, ms = get(args.url, args.host, args.timeout)
    except ValueError as exc:
        parser.error(str(exc))
    except (OSError, http.client.HTTPException) as exc:
        print(f"fetch {args.url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"url": args.url, "status": status, "bytes": len(body), "ms": ms,
                      "body": body[:200].decode(errors="replace")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
