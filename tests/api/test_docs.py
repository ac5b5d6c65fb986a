"""The docs pages load nothing from other hosts: every asset is served by the api itself."""

from __future__ import annotations

import re

import httpx

ATTRIBUTE_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


async def test_docs_pages_reference_no_external_host_and_their_assets_answer(
    client: httpx.AsyncClient,
) -> None:
    anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://api")
    assets: set[str] = set()
    for page in ("/docs", "/redoc"):
        r = await anonymous.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        # No absolute URL at all: not in attributes, not in inline scripts (CDN loaders,
        # web fonts), so the page works offline and behind filters that block CDNs.
        assert not re.search(r"(https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", r.text), r.text
        urls = ATTRIBUTE_URL.findall(r.text)
        assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
        assets |= set(urls)
    assert {
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/docs/assets/redoc.standalone.js",
    } <= assets
    for url in sorted(assets):
        r = await anonymous.get(url)
        assert r.status_code == 200, url
        assert len(r.content) > 1000, url
    assert "openapi.json" in (await anonymous.get("/docs")).text
    assert (await anonymous.get("/docs/assets/nothing.js")).status_code == 404
    await anonymous.aclose()
