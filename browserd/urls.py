"""Which URLs a session may open (pure).

``http``, ``https`` and ``about:blank`` are allowed; ``file:``, ``chrome:``, ``data:``,
``javascript:``, ``view-source:`` and every other scheme are refused unless the scheme
is in ``allow_schemes``. With an ``allowed_origins`` list, an http(s) URL must match one
entry: ``scheme://host[:port]`` exactly, or ``*.example.com`` for a domain and its
subdomains. Fails closed: a URL that does not parse is refused.
"""

from urllib.parse import urlsplit

from browserd.errors import UrlRefused

WEB_SCHEMES = frozenset({"http", "https"})


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _origin_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    origin = origin_of(url)
    for entry in allowed:
        entry = entry.lower().rstrip("/")
        if entry.startswith("*."):
            domain = entry[2:]
            if host == domain or host.endswith("." + domain):
                return True
        elif entry == origin:
            return True
    return False


def check_url(url: str, allow_schemes: frozenset[str] = frozenset(),
              allowed_origins: tuple[str, ...] = ()) -> None:
    if url == "about:blank":
        return
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise UrlRefused(f"unparsable URL {url!r:.200}") from e
    scheme = parts.scheme.lower()
    if scheme in WEB_SCHEMES:
        if not parts.hostname:
            raise UrlRefused(f"URL {url!r:.200} has no host")
        if allowed_origins and not _origin_allowed(url, allowed_origins):
            raise UrlRefused(f"origin {origin_of(url)} is not in the allow-list",
                             {"origin": origin_of(url)})
        return
    if scheme in allow_schemes:
        return
    raise UrlRefused(f"scheme {scheme or '(none)'}: is refused (browserd --allow-scheme)",
                     {"scheme": scheme})
