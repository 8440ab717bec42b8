"""browserd: one Chromium service per node host, reached by the node agent on a Unix socket.

Modules: ``config`` (frozen settings), ``errors`` (the closed error registry), ``wire``
(length-prefixed msgpack frames), ``shm`` (the /dev/shm handoff of large payloads),
``urls`` (which URLs a session may open), ``snapshot`` (snapshot diffs), ``chromium``
(launch arguments and the renderer processes in /proc), ``session`` (one live browser
session), ``actions`` (perception and action on a session's page), ``pool`` (warm
browsers), ``table`` (the session table: limits, idle TTL, memory cap), ``server`` (the
socket server), ``client`` (the async client the node agent and the tests use), ``cli``.
"""
