"""Unmodified programs on the overlay: curl through the daemon's SOCKS5 and
HTTP proxy and through a forward, to an HTTP server another daemon exposes."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from overlay.daemon.errors import ApiError
from tests.apps.helpers import curl, http_server, network

BIG = 50 * 1024 * 1024


def _site(root: Path) -> str:
    """index.html and a 50 MB file of random bytes; returns its sha256."""
    root.mkdir()
    (root / "index.html").write_text("<h1>bob's page</h1>\n")
    digest = hashlib.sha256()
    with open(root / "big.bin", "wb") as out:
        for _ in range(BIG // (1 << 20)):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


async def test_curl_through_socks5_http_proxy_and_forward(short_tmp: Path) -> None:
    digest = _site(short_tmp / "site")
    with http_server(short_tmp / "site") as port:
        async with asyncio.timeout(240), network(short_tmp) as (a, b):
            exposed = await b.call("expose_add", {"service": "http", "port": port})
            assert exposed["published"] == []  # b owns no name yet
            # A name registered after the exposure carries it.
            reg = await b.call("name_register", {"name": "bob.ovl"})
            assert [(s["protocol"], s["port"]) for s in reg["record"]["services"]] == \
                [("http", port)]
            # An explicit service of the same name wins over the exposure.
            reg = await b.call("name_register", {"name": "www.ovl",
                                                 "services": ["http:9", "ssh:22"]})
            assert [(s["protocol"], s["port"]) for s in reg["record"]["services"]] == \
                [("http", 9), ("ssh", 22)]
            # Exposing again publishes into every owned name that lacks it.
            exposed = await b.call("expose_add", {"service": "http", "port": port})
            assert exposed["published"] == ["www.ovl"]
            got = await a.call("name_resolve", {"name": "bob.ovl", "no_cache": True})
            assert [(s["protocol"], s["port"]) for s in got["record"]["services"]] == \
                [("http", port)]

            # SOCKS5 with remote names (socks5h) and the HTTP proxy: the page.
            for via in (["--socks5-hostname", a.proxy], ["-x", f"http://{a.proxy}"]):
                status, out, err = await curl(*via, "http://bob.ovl/index.html")
                assert (status, out) == (0, b"<h1>bob's page</h1>\n"), err
            # NAME:PORT reaches the service published with that port.
            status, out, err = await curl("--socks5-hostname", a.proxy,
                                          f"http://bob.ovl:{port}/index.html")
            assert (status, out) == (0, b"<h1>bob's page</h1>\n"), err

            # Outside the zone the proxy connects directly (only ever to loopback here).
            for via in (["--socks5-hostname", a.proxy], ["-x", f"http://{a.proxy}"]):
                status, out, err = await curl(*via, f"http://127.0.0.1:{port}/index.html")
                assert (status, out) == (0, b"<h1>bob's page</h1>\n"), err

            # 50 MB through each proxy, checked.
            for via in (["--socks5-hostname", a.proxy], ["-x", f"http://{a.proxy}"]):
                status, out, err = await curl(*via, "http://bob.ovl/big.bin", timeout=180)
                assert status == 0, err
                assert len(out) == BIG and hashlib.sha256(out).hexdigest() == digest

            # A forward: a local port on a that reaches bob.ovl's http.
            fwd = await a.call("forward_add", {"listen": "127.0.0.1:0",
                                               "target": "bob.ovl:http"})
            status, out, err = await curl(f"http://{fwd['listen']}/index.html")
            assert (status, out) == (0, b"<h1>bob's page</h1>\n"), err
            listed = await a.call("forward_list")
            assert [f["listen"] for f in listed["forwards"]] == [fwd["listen"]]
            assert listed["forwards"][0]["bytes_in"] > 0
            await a.call("forward_close", {"listen": fwd["listen"]})
            assert (await a.call("forward_list"))["forwards"] == []
            status, _, _ = await curl(f"http://{fwd['listen']}/index.html")
            assert status == 7  # connection refused: the listener is gone

            # Readable errors: unknown name, service not exposed.
            status, out, err = await curl("-x", f"http://{a.proxy}", "-w", "%{http_code}",
                                          "http://nobody.ovl/")
            assert out.endswith(b"502") and b"no such name: nobody.ovl" in out
            status, out, err = await curl("-x", f"http://{a.proxy}", "-w", "%{http_code}",
                                          "http://bob.ovl:4444/")
            assert out.endswith(b"502") and b"exposes no service on port 4444" in out
            status, _, err = await curl("--socks5-hostname", a.proxy, "http://nobody.ovl/")
            assert (status, err.rstrip()[-3:]) == (97, b"(4)"), err  # host unreachable
            status, _, err = await curl("--socks5-hostname", a.proxy, "http://bob.ovl:4444/")
            assert (status, err.rstrip()[-3:]) == (97, b"(5)"), err  # connection refused

            # The proxy's own address is refused rather than looped through.
            status, out, _ = await curl("-x", f"http://{a.proxy}", "-w", "%{http_code}",
                                        f"http://{a.proxy}/x")
            assert out.endswith(b"400") and b"this proxy's own address" in out

            # A forward to a service bob does not expose: the client is reset.
            fwd = await a.call("forward_add", {"listen": "127.0.0.1:0",
                                               "target": "bob.ovl:ssh"})
            status, _, _ = await curl(f"http://{fwd['listen']}/")
            assert status in (52, 56)  # empty reply / reset
            listed = await a.call("forward_list")
            assert "does not expose a service called 'ssh'" in listed["forwards"][0]["last_error"]

            # The PAC file routes only the zone through the proxy.
            status, pac, err = await curl(f"http://{a.proxy}/proxy.pac")
            assert status == 0, err
            text = pac.decode()
            assert 'dnsDomainIs(host, ".ovl")' in text and f"SOCKS5 {a.proxy}" in text
            assert text.rstrip().endswith('return "DIRECT";\n}'.rstrip())

            # Removing the exposure takes it out of the name and the exposer.
            removed = await b.call("expose_remove", {"service": "http"})
            assert removed["published"] == ["bob.ovl", "www.ovl"]
            with pytest.raises(ApiError) as missing:
                await b.call("expose_remove", {"service": "http"})
            assert missing.value.code == "not_found"
            # SOCKS5 answered at once while bob.ovl's http was known to work
            # (Pipelining.WARM): the refusal after that answer is a reset ...
            status, _, err = await curl("--socks5-hostname", a.proxy, "http://bob.ovl/")
            assert status in (52, 56), err
            # ... and made the service cold, so the next client gets the reason.
            status, _, err = await curl("--socks5-hostname", a.proxy, "http://bob.ovl/")
            assert (status, err.rstrip()[-3:]) == (97, b"(5)"), err
            status, out, _ = await curl("-x", f"http://{a.proxy}", "-w", "%{http_code}",
                                        "--max-time", "20", "http://bob.ovl/")
            assert out.endswith(b"502") and b"not_exposed" in out
