"""Transport security for the node port and the Control port.

TLS is configured with a server certificate and key and, optionally, a CA
whose client certificates are then required. Plaintext is allowed only on a
loopback address and only when asked for explicitly (``insecure_loopback``).
"""

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cortex.errors import ConfigError

if TYPE_CHECKING:
    import grpc


@dataclass(frozen=True, slots=True)
class ServerTLS:
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True, slots=True)
class ClientTLS:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    enabled: bool = False
    server_name: str = ""  # check the certificate for this name, not the dialled host


def channel_name_options(tls: ClientTLS) -> list[tuple[str, str]]:
    """gRPC channel options for ``--tls-server-name``: the name the certificate must have
    (and the :authority sent), for a hub reached by an address its certificate lacks."""
    if not tls.enabled or not tls.server_name:
        return []
    return [("grpc.ssl_target_name_override", tls.server_name),
            ("grpc.default_authority", tls.server_name)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"address {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def check_plaintext(address: str, tls_enabled: bool, insecure_loopback: bool, what: str) -> None:
    if tls_enabled:
        return
    host, _ = split_host_port(address)
    if not insecure_loopback:
        raise ConfigError(f"{what} {address} has no TLS configured; set a certificate, or allow "
                          "plaintext on loopback explicitly with --insecure-loopback")
    if not is_loopback(host):
        raise ConfigError(f"{what} {address}: plaintext is allowed only on loopback, "
                          "configure TLS for other addresses")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e


def server_credentials(tls: ServerTLS) -> "grpc.ServerCredentials":
    import grpc  # not at module level: the supervisor imports this and must not load grpc

    assert tls.cert_file is not None
    if tls.key_file is None:
        raise ConfigError("tls_cert_file is set but tls_key_file is not")
    chain = _read(tls.cert_file, "TLS certificate")
    key = _read(tls.key_file, "TLS key")
    ca = _read(tls.client_ca_file, "client CA") if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )


def channel_credentials(tls: ClientTLS) -> "grpc.ChannelCredentials":
    import grpc

    ca = _read(tls.ca_file, "CA certificate") if tls.ca_file else None
    key = _read(tls.key_file, "client key") if tls.key_file else None
    cert = _read(tls.cert_file, "client certificate") if tls.cert_file else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)
