"""Say which TLS mistake made a hub unreachable (issue 13: every one read "cannot reach
hub").

gRPC reports a failed handshake as UNAVAILABLE with little detail. After such a failure
the client probes the address itself, with Python's ``ssl`` and the same files, and
names the first of these that holds:

- **plaintext against TLS**: the client spoke plaintext (``--insecure-loopback``) and
  the port answers a TLS handshake;
- **TLS against plaintext**: the client spoke TLS and the port does not answer one;
- **hostname mismatch**: the certificate does not name the host dialled (it lists the
  names it has; ``--tls-server-name`` checks another);
- **unknown CA**: the certificate's issuer is not the CA given (``--ca-file``), or not a
  system CA;
- **expired** (or not yet valid) certificate;
- **client certificate required**, or the one given refused by the hub's client CA.

The probe is one TCP connection and one handshake with a short timeout; None means it
found nothing to add (the port is closed, or the failure is not TLS).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from cortex.tls import ClientTLS, split_host_port

PROBE_TIMEOUT_S = 3.0
# X509_V_ERR_* verify codes (OpenSSL include/openssl/x509_vfy.h)
_UNKNOWN_CA = {2, 7, 18, 19, 20, 21}  # 7: signed by another CA of the same name
_EXPIRED = {9, 10}
_NAME_MISMATCH = {62, 64}
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_CERT_REQUIRED = ("the hub requires a client certificate: give --cert-file and --key-file "
                  "(signed by the hub's --tls-client-ca-file CA)")
_CERT_REFUSED = ("the hub refused this client certificate: it is not signed by the hub's "
                 "--tls-client-ca-file CA")


@dataclass(frozen=True, slots=True)
class Probe:
    address: str
    tls: ClientTLS
    insecure: bool  # the client spoke plaintext


def _connect(address: str) -> socket.socket:
    host, port = split_host_port(address)
    return socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S)


def _peer_names(address: str, server_name: str) -> tuple[list[str], str]:
    """The certificate's subject alternative names and issuer, fetched unverified."""
    from cryptography import x509

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with _connect(address) as raw, ctx.wrap_socket(raw, server_hostname=server_name) as s:
        der = s.getpeercert(binary_form=True)
    if der is None:
        return [], ""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        names += [str(n) for n in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    return names, cert.issuer.rfc4514_string()


def _speaks_tls(address: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with _connect(address) as raw, ctx.wrap_socket(raw, server_hostname="probe"):
            return True
    except ssl.SSLError as e:  # a TLS server that refused us (no client cert) still is one
        return "ALERT" in (e.reason or "").upper()
    except OSError:
        return False


def explain(probe: Probe) -> str | None:
    """What is wrong with TLS between this client and ``probe.address``, or None."""
    try:
        _connect(probe.address).close()
    except OSError:
        return None  # nothing listens, or no route: grpc's own words say it
    if probe.insecure or not probe.tls.enabled:
        if _speaks_tls(probe.address):
            return ("the hub speaks TLS there and this client plaintext: give the CA "
                    "(--ca-file, or --tls for the system's CAs) instead of --insecure-loopback")
        return None
    host, _ = split_host_port(probe.address)
    name = probe.tls.server_name or host
    ctx = ssl.create_default_context(cafile=str(probe.tls.ca_file) if probe.tls.ca_file
                                     else None)
    if probe.tls.cert_file and probe.tls.key_file:
        try:
            ctx.load_cert_chain(str(probe.tls.cert_file), str(probe.tls.key_file))
        except (OSError, ssl.SSLError) as e:
            return f"the client certificate or key cannot be used: {e}"
    ctx.set_alpn_protocols(["h2"])
    try:
        with _connect(probe.address) as raw, ctx.wrap_socket(raw, server_hostname=name) as s:
            s.sendall(_HTTP2_PREFACE)  # TLS 1.3 says "certificate required" only now
            s.settimeout(PROBE_TIMEOUT_S)
            answered = s.recv(1)
    except ssl.SSLCertVerificationError as e:
        return _verify_failure(probe.address, name, e)
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
        answered = b""
    except ssl.SSLError as e:
        return _handshake_failure(probe, e)
    except OSError:
        return None
    if answered:
        return None  # TLS is fine: the failure is something else
    # The server ended the connection right after the handshake, before HTTP/2: under
    # TLS 1.3 that is how a server that wants (another) client certificate says no.
    if not probe.tls.cert_file:
        return _CERT_REQUIRED
    return _CERT_REFUSED


def _verify_failure(address: str, name: str, e: ssl.SSLCertVerificationError) -> str:
    code = e.verify_code
    try:
        names, issuer = _peer_names(address, name)
    except (OSError, ValueError):
        names, issuer = [], ""
    if code in _NAME_MISMATCH:
        has = ", ".join(names) or "no subject alternative name"
        return (f"hostname mismatch: the hub's certificate is for {has}, not {name}; dial "
                "one of those names, or check another with --tls-server-name NAME")
    if code in _UNKNOWN_CA:
        by = f" (issued by {issuer})" if issuer else ""
        return (f"unknown CA: the hub's certificate{by} is not signed by a CA this client "
                "trusts; give that CA with --ca-file")
    if code in _EXPIRED:
        return f"the hub's certificate is expired or not yet valid: {e.verify_message}"
    return f"the hub's certificate does not verify: {e.verify_message}"


def _handshake_failure(probe: Probe, e: ssl.SSLError) -> str | None:
    reason = (e.reason or str(e)).upper()
    if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or (
            "PACKET_LENGTH_TOO_LONG" in reason):
        return ("the hub speaks plaintext there, not TLS (it runs with --insecure-loopback "
                "and no certificate): drop --ca-file/--tls or give cortexd a certificate")
    if "CERTIFICATE_REQUIRED" in reason or (
            "HANDSHAKE_FAILURE" in reason and not probe.tls.cert_file):
        return _CERT_REQUIRED
    if any(w in reason for w in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN",
                                 "DECRYPT_ERROR")):
        return _CERT_REFUSED
    return f"TLS handshake failed: {e.reason or e}"
