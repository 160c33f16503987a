"""Fetching one web page for import, safely: the URL comes from a chat message, so it is hostile.

Guards, each with a short message a user can act on (ArticleError):
- http and https only, no credentials in the URL;
- a time limit for the whole fetch, a size cap (Content-Length first, then counted while
  streaming), HTML or plain text only, a redirect limit;
- SSRF: private, loopback, link-local, multicast, reserved and unspecified addresses are
  refused unless the policy allows them. The check runs on the addresses aiohttp is about to
  connect to (a resolver that filters what DNS returned, and a socket factory that sees the
  final address), so a public name resolving to 127.0.0.1 is refused and DNS rebinding between
  a "check" and the connect does not help. Redirects are followed by hand, so every hop goes
  through the same checks.
"""
from __future__ import annotations

import asyncio
import codecs
import ipaddress
import logging
import socket
import weakref
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .articles import ArticleError

log = logging.getLogger(__name__)

ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TEXT_TYPES = frozenset({"text/plain"})
# RSS and Atom as servers label them (many say plain XML).
FEED_TYPES = frozenset(
    {"application/rss+xml", "application/atom+xml", "application/rdf+xml", "application/xml", "text/xml"}
)
_FEED_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8"
_CHUNK = 64 * 1024
USER_AGENT = "quotebot/0.1 (article import; +https://github.com/)"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float = 10.0
    max_bytes: int = 2_000_000
    max_redirects: int = 3
    allow_private: bool = False


@dataclass(frozen=True)
class FetchedPage:
    data: bytes
    content_type: str
    final_url: str
    # A file-like name so the importer picks the right reader ("page.html" or "page.txt").
    name: str
    # Validators for the next conditional request, and whether the server said "not modified"
    # to this one (then `data` is empty).
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False


class BlockedAddress(OSError):
    """Raised inside aiohttp's connect path; an OSError so aiohttp wraps it and we can unwrap it."""


# --- address policy --------------------------------------------------------------------------


def is_forbidden_address(address: IPAddress) -> bool:
    """True for anything that is not a plain public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # ::ffff:a.b.c.d is a.b.c.d on the wire.
            return is_forbidden_address(address.ipv4_mapped)
        # 6to4 and Teredo addresses carry an IPv4 one that is routed to: judge that too.
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None and is_forbidden_address(embedded):
            return True
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class _GuardedResolver(AbstractResolver):
    """The default resolver, minus the addresses we may not connect to."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if (ip := _parse_ip(r["host"])) is not None and not is_forbidden_address(ip)]
        if not allowed:
            raise BlockedAddress(f"{host} resolves to a private or local address, which is not allowed.")
        if len(allowed) < len(results):
            # Mixed answers are a classic rebinding trick: connect only to the public ones.
            log.info("Dropped private addresses resolved for %s", host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _guarded_socket(addr_info: tuple) -> socket.socket:
    """Last gate, on the exact address the socket is about to connect to (IP literals skip DNS)."""
    family, type_, proto, _, sockaddr = addr_info
    ip = _parse_ip(str(sockaddr[0]))
    if ip is None or is_forbidden_address(ip):
        raise BlockedAddress(f"{sockaddr[0]} is a private or local address, which is not allowed.")
    return socket.socket(family=family, type=type_, proto=proto)


# Sessions built here, and whether they may reach private addresses; a session of unknown origin
# has no guard, so it is refused rather than silently used.
_SESSIONS: weakref.WeakKeyDictionary[aiohttp.ClientSession, bool] = weakref.WeakKeyDictionary()


def fetch_session(policy: FetchPolicy) -> aiohttp.ClientSession:
    """A session for fetch_page. Must be created inside a running event loop; close it when done."""
    if policy.allow_private:
        connector = aiohttp.TCPConnector(limit=8)
    else:
        connector = aiohttp.TCPConnector(
            limit=8, resolver=_GuardedResolver(), socket_factory=_guarded_socket, use_dns_cache=False
        )
    # trust_env=False: an HTTP(S)_PROXY from the environment would move the connect (and so
    # the address check) to the proxy.
    session = aiohttp.ClientSession(
        connector=connector,
        trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept": "text/html, application/xhtml+xml, text/plain;q=0.9"},
        timeout=aiohttp.ClientTimeout(total=policy.timeout, sock_connect=policy.timeout),
    )
    _SESSIONS[session] = policy.allow_private
    return session


# --- fetching ---------------------------------------------------------------------------------


def check_url(url: str | URL, policy: FetchPolicy) -> URL:
    """Refuse what no request should be made for; returns the parsed URL."""
    try:
        parsed = url if isinstance(url, URL) else URL(url.strip())
    except (ValueError, TypeError):
        raise ArticleError("That is not a valid URL.") from None
    scheme = (parsed.scheme or "").lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = f"{scheme}:" if scheme else "a URL without http:// or https://"
        raise ArticleError(f"Only http and https pages can be imported, not {shown}.")
    if parsed.user is not None or parsed.password is not None:
        raise ArticleError("URLs with a user name or password are not accepted.")
    if not parsed.host:
        raise ArticleError("That URL has no host name.")
    ip = _parse_ip(parsed.host)
    if ip is not None and not policy.allow_private and is_forbidden_address(ip):
        raise ArticleError(f"{parsed.host} is a private or local address, which is not allowed.")
    return parsed


async def fetch_page(
    url: str,
    policy: FetchPolicy,
    session: aiohttp.ClientSession | None = None,
    *,
    feed: bool = False,
    etag: str | None = None,
    last_modified: str | None = None,
) -> FetchedPage:
    """Fetch one HTML or plain-text page, or with `feed` an RSS or Atom feed (its bytes as
    sent: the feed parser reads the XML's own encoding). `etag` / `last_modified` make the
    request conditional. Raises ArticleError with a message for the user."""
    start = check_url(url, policy)
    headers: dict[str, str] = {"Accept": _FEED_ACCEPT} if feed else {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    if session is not None:
        allows_private = _SESSIONS.get(session)
        if allows_private is None or (allows_private and not policy.allow_private):
            raise ValueError("fetch_page needs a session from fetch_session() with the same policy")
        return await _fetch_with_deadline(start, policy, session, headers, feed)
    async with fetch_session(policy) as own:
        return await _fetch_with_deadline(start, policy, own, headers, feed)


async def _fetch_with_deadline(
    url: URL, policy: FetchPolicy, session: aiohttp.ClientSession, headers: dict[str, str], feed: bool
) -> FetchedPage:
    # One deadline for the whole fetch, redirects included, on top of aiohttp's per-request one.
    try:
        return await asyncio.wait_for(_follow(url, policy, session, headers, feed), timeout=policy.timeout)
    except asyncio.TimeoutError:
        raise ArticleError(f"{url.host} did not answer within {policy.timeout:g} seconds.") from None


async def _follow(
    url: URL, policy: FetchPolicy, session: aiohttp.ClientSession, headers: dict[str, str], feed: bool
) -> FetchedPage:
    for _hop in range(policy.max_redirects + 1):
        try:
            async with session.get(url, allow_redirects=False, headers=headers) as response:
                if response.status in REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise ArticleError(f"{url.host} sent a redirect without a destination.")
                    try:
                        target = url.join(URL(location))
                    except ValueError:
                        raise ArticleError(f"{url.host} redirected to an invalid URL.") from None
                    url = check_url(target, policy)
                    continue
                if feed:
                    return await _read_feed(response, policy)
                return await _read(response, policy)
        except ArticleError:
            raise
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, BlockedAddress):
                raise ArticleError(str(exc.os_error)) from None
            raise ArticleError(f"Could not connect to {url.host}.") from None
        except aiohttp.TooManyRedirects:  # not raised with allow_redirects=False, kept for safety
            raise ArticleError("The page redirected too many times.") from None
        except aiohttp.InvalidURL:
            raise ArticleError("That is not a valid URL.") from None
        except asyncio.TimeoutError:
            raise ArticleError(f"{url.host} did not answer within {policy.timeout:g} seconds.") from None
        except aiohttp.ClientError as exc:
            log.info("Fetching %s failed: %r", url, exc)
            raise ArticleError(f"Could not fetch the page from {url.host}.") from None
    raise ArticleError(f"The page redirected more than {policy.max_redirects} times.")


async def _read(response: aiohttp.ClientResponse, policy: FetchPolicy) -> FetchedPage:
    host = response.url.host
    if response.status >= 400:
        raise ArticleError(f"{host} answered with HTTP {response.status}.")
    if response.status != 200:
        raise ArticleError(f"{host} answered with HTTP {response.status}, not a page.")
    content_type = response.content_type.lower()
    if content_type in _HTML_TYPES:
        name = "page.html"
    elif content_type in _TEXT_TYPES:
        name = "page.txt"
    else:
        raise ArticleError(f"That page is {content_type or 'of an unknown type'}; only HTML and plain text can be imported.")
    data = await _body(response, policy)
    codec = _codec(response.charset)
    if codec not in _PASS_THROUGH:
        # Off the loop: 2 MB through a C codec still takes milliseconds.
        data = await asyncio.to_thread(_as_utf8, data, codec)
    return FetchedPage(data, content_type, str(response.url), name)


async def _read_feed(response: aiohttp.ClientResponse, policy: FetchPolicy) -> FetchedPage:
    etag, last_modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    if response.status == 304:
        return FetchedPage(b"", "", str(response.url), "feed.xml", etag, last_modified, not_modified=True)
    if response.status != 200:
        raise ArticleError(f"{response.url.host} answered with HTTP {response.status}.")
    content_type = response.content_type.lower()
    if content_type not in FEED_TYPES:
        raise ArticleError(f"That address is {content_type or 'of an unknown type'}, not an RSS or Atom feed.")
    data = await _body(response, policy)
    return FetchedPage(data, content_type, str(response.url), "feed.xml", etag, last_modified)


async def _body(response: aiohttp.ClientResponse, policy: FetchPolicy) -> bytes:
    too_big = ArticleError(f"That page is larger than the limit of {policy.max_bytes:,} bytes.")
    if response.content_length is not None and response.content_length > policy.max_bytes:
        raise too_big
    # Counted after decompression, so a small gzip bomb is stopped too.
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > policy.max_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


# Charsets a page may declare: the web's common ones, all decoded by C codecs in linear time.
# Python also knows pure-Python or quadratic codecs (punycode, idna, utf-7, rot13, the
# *_codec byte transforms...): a declared charset is untrusted, so anything else is refused.
_PASS_THROUGH = frozenset({"utf-8", "ascii"})
_CHARSETS = _PASS_THROUGH | frozenset(
    {
        "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "iso8859-1", "iso8859-2", "iso8859-3", "iso8859-4",
        "iso8859-5", "iso8859-6", "iso8859-7", "iso8859-8", "iso8859-9", "iso8859-10", "iso8859-11",
        "iso8859-13", "iso8859-14", "iso8859-15", "iso8859-16", "cp1250", "cp1251", "cp1252", "cp1253",
        "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "cp874", "koi8-r", "koi8-u", "mac-roman",
        "shift_jis", "cp932", "euc_jp", "iso2022_jp", "euc_kr", "cp949", "gb2312", "gbk", "gb18030",
        "big5", "big5hkscs", "cp950",
    }
)


def _codec(charset: str | None) -> str:
    """The codec for a declared charset (UTF-8 when none is declared); ArticleError if refused."""
    if not charset:
        return "utf-8"
    try:
        codec = codecs.lookup(charset.strip()[:40]).name
    except LookupError:
        codec = ""
    if codec not in _CHARSETS:
        raise ArticleError(f"That page declares the charset {charset[:40]!r}, which is not accepted.")
    return codec


def _as_utf8(data: bytes, codec: str) -> bytes:
    """The importer reads UTF-8; a page in another (accepted) charset is converted."""
    try:
        return data.decode(codec).encode("utf-8")
    except UnicodeDecodeError:
        return data  # let the importer report it as not UTF-8
