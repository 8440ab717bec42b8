"""Pages served on loopback for browserd's tests, demo and benchmarks.

A ``ThreadingHTTPServer`` on 127.0.0.1 (an ephemeral port) in a daemon thread:
``/form`` (a field, a select, a submit button → ``/done``), ``/counter`` (a button that
changes one element), ``/cookie`` (sets a cookie) and ``/whoami`` (shows it), ``/hog``
(allocates memory until stopped), ``/hang`` (a script that never ends), ``/rows?n=N``
(a table of N rows), ``/download`` (a file download), ``/console`` (logs and throws),
``/shop`` (a field, and a button that turns the heading "Checkout" into "Order placed"),
``/vanish`` (a field whose input removes the button beside it),
``/busy`` (its main thread busy for 20 s from just after the load event), ``/untitled``
(a page without a title).
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

FORM = """<!doctype html><title>Form</title><h1>Sign up</h1>
<form action="/done" method="get">
<label>Name <input name="name"></label>
<label>Colour <select name="colour"><option>red</option><option>green</option>
<option>blue</option></select></label>
<button type="submit">Send</button></form>"""

COUNTER = """<!doctype html><title>Counter</title><h1>Counter</h1>
<p id="n">count 0</p><button onclick="let p=document.getElementById('n');
p.textContent='count '+(parseInt(p.textContent.slice(6))+1)">Add</button>
<ul>""" + "".join(f"<li>item {i}</li>" for i in range(40)) + "</ul>"

HOG = """<!doctype html><title>Hog</title><p>eating memory</p><script>
window.keep = [];
function eat() { for (let i = 0; i < 8; i++) { const a = new Uint8Array(16 << 20);
  a.fill(1); keep.push(a); } setTimeout(eat, 20); }
eat();</script>"""

SHOP = """<!doctype html><title>Shop</title><h1>Checkout</h1>
<label>Note <input aria-label="note"></label>
<button onclick="document.querySelector('h1').textContent='Order placed'">Place order</button>"""

HANG = """<!doctype html><title>Hang</title><p>looping</p>
<button onclick="while (true) {}">Loop</button>"""

VANISH = """<!doctype html><title>Vanish</title>
<input aria-label="note" oninput="document.getElementById('b').remove()">
<button id=b>Gone soon</button>"""

BUSY = """<!doctype html><title>Busy</title><p>busy after load</p><script>
addEventListener('load', () => setTimeout(() => {
  const t = Date.now(); while (Date.now() - t < 20000) {} }, 0));</script>"""

CONSOLE = """<!doctype html><title>Console</title><script>
console.log('hello from the page'); console.warn('careful');
setTimeout(() => { throw new Error('boom in a timer'); }, 0);</script><p>logged</p>"""


def rows_page(n: int) -> str:
    body = "".join(f"<tr><td>{i}</td><td><a href='#r{i}'>row {i}</a></td>"
                   f"<td><input aria-label='note {i}' value='v{i}'></td>"
                   f"<td><button>edit {i}</button></td></tr>" for i in range(n))
    return (f"<!doctype html><title>Rows</title><h1>{n} rows</h1><input aria-label='search'>"
            f"<button id=go onclick=\"document.title='clicked'\">Go</button>"
            f"<table>{body}</table>")


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _send(self, body: str | bytes, ctype: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        pages = {"/form": FORM, "/counter": COUNTER, "/hog": HOG, "/hang": HANG,
                 "/console": CONSOLE, "/shop": SHOP, "/busy": BUSY, "/vanish": VANISH,
                 "/untitled": "<!doctype html><p>no title here</p>"}
        if url.path in pages:
            self._send(pages[url.path])
        elif url.path == "/done":
            self._send(f"<!doctype html><title>Done</title><h1>Hello {q.get('name', '?')}"
                       f"</h1><p>colour {q.get('colour', '?')}</p>")
        elif url.path == "/cookie":
            value = q.get("v", "1")
            self._send(f"<!doctype html><title>Cookie</title><p>set {value}</p>",
                       headers={"Set-Cookie": f"flavour={value}; Max-Age=86400; Path=/"})
        elif url.path == "/whoami":
            self._send(f"<!doctype html><title>Whoami</title><p id=c>"
                       f"{self.headers.get('Cookie', '')}</p>")
        elif url.path == "/rows":
            self._send(rows_page(min(int(q.get("n", "300")), 5000)))
        elif url.path == "/download":
            self._send(b"x" * 1000, "application/octet-stream",
                       {"Content-Disposition": 'attachment; filename="../../evil.txt"'})
        else:
            self.send_error(404)


class PageServer:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "PageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
