"""The status page on the hub host's HTTP port (issue 13, part 5).

``/status`` is one HTML page with its CSS, script and SVG plot inline (no CDN: the
network may be closed); it reads ``/status/data.json`` every two seconds and redraws, so
the numbers move without a reload. ``collect.py`` builds the snapshot from the
control process's view and store (the same sources as the Control API's listings)
and keeps the throughput samples; ``routes.py`` is the aiohttp adapter and its
authentication; ``page.py`` the page.
"""
