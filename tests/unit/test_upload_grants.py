"""UploadGrants (cortexd/artifacts/access.py): what a node may upload without a task."""

from cortexd.artifacts.access import UploadGrants

SHA = "ab" * 32


def test_a_grant_names_node_blob_and_size_and_expires() -> None:
    g = UploadGrants()
    g.grant("web-1", SHA, 10, "default", "browse/s-1/web-1/a.mjpeg")
    got = g.find("web-1", SHA, 10)
    assert got is not None and (got.owner, got.name) == ("default", "browse/s-1/web-1/a.mjpeg")
    assert g.find("web-2", SHA, 10) is None  # another node
    assert g.find("web-1", SHA, 11) is None  # another size
    g.revoke("web-1", SHA)
    assert g.find("web-1", SHA, 10) is None
    g.grant("web-1", SHA, 10, "default", "n", ttl_s=-1)
    assert g.find("web-1", SHA, 10) is None  # expired


def test_grants_are_bounded() -> None:
    g = UploadGrants()
    for i in range(5000):
        g.grant("web-1", f"{i:064x}", 1, "default", "n")
    assert g.find("web-1", f"{0:064x}", 1) is None and g.find("web-1", f"{4999:064x}", 1)
