"""Redis URLs as the contract admits them (DESIGN §3), parsed once, here.

`redis://`, `rediss://` (TLS) and `unix://` name one server;
`redis+sentinel://` and `rediss+sentinel://` name Sentinels and a master:
`redis+sentinel://[[user]:password@]host:port[,host:port...]/<master-name>[/<db>]`.
The same credentials are used for the Sentinels and the master.

Errors say what is wrong without repeating the URL or its password (they go
into conditions, Events and logs); the parsed URL's repr leaves the password out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

SINGLE = ("redis", "rediss", "unix")
SENTINEL = ("redis+sentinel", "rediss+sentinel")
SCHEMES = SINGLE + SENTINEL
DEFAULT_PORT = 6379


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message never contains the URL or a password."""


@dataclass(frozen=True)
class RedisUrl:
    scheme: str
    tls: bool
    sentinels: tuple[tuple[str, int], ...] = ()  # empty: a single server
    master: str | None = None
    db: int = 0
    host: str = ""  # a single server's (empty for unix:// and Sentinel)
    port: int = DEFAULT_PORT
    path: str = ""  # unix:// only: the socket
    username: str | None = field(default=None, compare=False)
    password: str | None = field(default=None, compare=False, repr=False)

    @property
    def sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def server(self) -> tuple[object, ...]:
        """The server (or Sentinel-watched primary) the URL reaches, whatever its database, scheme
        or credentials: pub/sub channels are server-wide, so all URLs of one server hear alike.
        (Two host names of one server are not known to be one.)"""
        return (self.sentinels, self.master, self.host, self.port, self.path)


def parse_redis_url(url: str) -> RedisUrl:
    """The URL's shape; raises RedisUrlError naming what is wrong."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise RedisUrlError("not a URL (expected scheme://...)")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise RedisUrlError(f"unknown scheme {scheme[:20]!r}:// (expected one of {known})")
    if scheme == "unix":
        return _unix(text)
    if scheme in SINGLE:
        return _single(scheme, text)
    return _sentinel(scheme, rest)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    """`user:password`, `:password` or `user` -> (user or None, password or None), percent-decoded."""
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, (unquote(password) if colon else None) or None


def _unix(text: str) -> RedisUrl:
    parts = urlsplit(text)
    if not parts.path:
        raise RedisUrlError("no socket path (unix:///path/to/redis.sock)")
    user, password = _credentials(parts.netloc.rpartition("@")[0])
    db = parse_qs(parts.query).get("db", ["0"])[0]
    return RedisUrl("unix", tls=False, db=_db(db), path=parts.path, username=user, password=password)


def _single(scheme: str, text: str) -> RedisUrl:
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        raise RedisUrlError("the port is not a number") from None
    if not parts.hostname:
        raise RedisUrlError("no host")
    user, password = _credentials(parts.netloc.rpartition("@")[0])
    return RedisUrl(
        scheme,
        tls=scheme == "rediss",
        db=_db(parts.path.strip("/") or "0"),
        host=parts.hostname,
        port=port or DEFAULT_PORT,
        username=user,
        password=password,
    )


def _sentinel(scheme: str, rest: str) -> RedisUrl:
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")  # the user info is the part before the last '@'
    if not hosts:
        raise RedisUrlError("no Sentinel host")
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisUrlError("each Sentinel must be host:port")
        sentinels.append((host.strip("[]"), int(port)))
    segments = [unquote(s) for s in path.split("?")[0].split("/") if s]
    if not segments:
        raise RedisUrlError("no master name (redis+sentinel://host:port,.../<master-name>[/<db>])")
    if len(segments) > 2:
        raise RedisUrlError("too many path segments (expected /<master-name>[/<db>])")
    db = _db(segments[1]) if len(segments) == 2 else 0
    user, password = _credentials(userinfo)
    return RedisUrl(
        scheme,
        tls=scheme.startswith("rediss"),
        sentinels=tuple(sentinels),
        master=segments[0],
        db=db,
        username=user,
        password=password,
    )


def _db(text: str) -> int:
    if not text.isdigit():
        raise RedisUrlError("the database is not a number")
    return int(text)
