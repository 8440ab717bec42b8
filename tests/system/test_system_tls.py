"""TLS on the node port and the Control port, with client certificates required.

A CA, a server certificate for 127.0.0.1 and a client certificate are made here
with `cryptography`; the hub, a node and cortexctl use them for real, and a
plaintext client is turned away.
"""

import datetime
import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from examples.localfleet import binary, wait_until

pytestmark = pytest.mark.system


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_pki(d: Path) -> dict[str, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cortex test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    paths = {"ca": d / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, san in (("server", x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])),
                      ("client", x509.SubjectAlternativeName([x509.DNSName("client")]))):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(san, critical=False).sign(ca_key, hashes.SHA256()))
        paths[name] = d / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}_key"] = d / f"{name}.key"
        _write_key(key, paths[f"{name}_key"])
    return paths


def test_tls_with_client_certificates(fleet, tmp_path):
    pki = make_pki(tmp_path)
    hub = fleet.hub(shards=2, extra_args=[
        "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"]),
        "--tls-client-ca-file", str(pki["ca"])])
    client_tls = ["--ca-file", str(pki["ca"]), "--cert-file", str(pki["client"]),
                  "--key-file", str(pki["client_key"])]
    node = fleet.node(hub, "node-1", extra_args=client_tls)

    def ctl(*args: str, tls: list[str] = client_tls) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*binary("cortexctl"), "--hub", hub.control_address,
                               "--token-file", str(hub.admin_token_file), *tls, *args],
                              capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

    wait_until(lambda: b"node-1" in ctl("nodes").stdout, 30, "node-1 to attach over TLS")
    run = ctl("submit", "--follow", "--", "echo over tls")
    assert (run.returncode, run.stdout) == (0, b"over tls\r\n"), run.stderr
    # The monitor process cannot present a client certificate: it reaches the control
    # process on its Unix socket, so a rule still answers under client-certificate TLS.
    policy = tmp_path / "proceed.toml"
    policy.write_text('[[rule]]\nid = "yes"\non = "prompt"\nmatch = \'Proceed\\? \\[y/N\\]\'\n'
                      'action = "SEND_INPUT"\ntext = "y\\n"\n')
    run = ctl("submit", "--follow", "--policy-file", str(policy), "--",
              "printf 'Proceed? [y/N] '; read a; echo answered-$a")
    assert run.returncode == 0 and b"answered-y" in run.stdout, (run.stdout, run.stderr)

    plain = ctl("nodes", tls=["--insecure-loopback"])
    assert plain.returncode != 0
    assert b"cortexctl:" in plain.stderr and b"Traceback" not in plain.stderr
    no_cert = ctl("nodes", tls=["--ca-file", str(pki["ca"])])
    assert no_cert.returncode != 0, "a client without a certificate must be refused"
    assert node.running()
    assert hub.stop() == 0


def test_each_tls_mistake_is_named(fleet, tmp_path):
    """Issue 13: every TLS mistake read "cannot reach hub"; each now says which."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pki, other = make_pki(tmp_path / "a"), make_pki(tmp_path / "b")
    hub = fleet.hub(shards=1, extra_args=[
        "--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"]),
        "--tls-client-ca-file", str(pki["ca"])])
    port = hub.control_address.rpartition(":")[2]
    client = ["--cert-file", str(pki["client"]), "--key-file", str(pki["client_key"])]

    def ctl(address: str, *tls: str) -> str:
        done = subprocess.run([*binary("cortexctl"), "--hub", address, "--token-file",
                               str(hub.admin_token_file), *tls, "nodes"],
                              capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        assert b"Traceback" not in done.stderr
        return "" if done.returncode == 0 else done.stderr.decode()

    good = hub.control_address
    assert ctl(good, "--ca-file", str(pki["ca"]), *client) == ""
    assert "speaks TLS there and this client plaintext" in ctl(good, "--insecure-loopback")
    assert "unknown CA" in ctl(good, "--ca-file", str(other["ca"]), *client)
    mismatch = ctl(f"localhost:{port}", "--ca-file", str(pki["ca"]), *client)
    assert "hostname mismatch: the hub's certificate is for 127.0.0.1, not localhost" in (
        mismatch), mismatch
    assert ctl(f"localhost:{port}", "--ca-file", str(pki["ca"]), "--tls-server-name",
               "127.0.0.1", *client) == ""
    assert "requires a client certificate" in ctl(good, "--ca-file", str(pki["ca"]))
    refused = ctl(good, "--ca-file", str(pki["ca"]), "--cert-file", str(other["client"]),
                  "--key-file", str(other["client_key"]))
    assert "refused this client certificate" in refused, refused

    plain = fleet.hub(shards=1)
    assert "speaks plaintext there, not TLS" in ctl(plain.control_address, "--ca-file",
                                                    str(pki["ca"]))

    node = fleet.node(hub, "node-1", extra_args=["--ca-file", str(other["ca"]), *client])
    wait_until(lambda: "unknown CA" in node.log_path.read_text(), 60,
               "the node agent to log the TLS problem")
    assert '"event": "hub_tls_problem"' in node.log_path.read_text()
