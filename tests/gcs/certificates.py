"""A throwaway certificate authority for the TLS proxy, made fresh at fixture start.

TensorFlow's libcurl verifies the server certificate of https://*.googleapis.com; the proxy
presents a leaf certificate for that name signed by this CA, and the test processes trust only
this CA through CURL_CA_BUNDLE. Nothing is written outside the directory given; keys never
leave the test run. EC P-256 keys: generated in milliseconds, accepted by BoringSSL and OpenSSL.
"""
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVED_NAMES = ("*.googleapis.com", "googleapis.com")


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_test_ca(directory):
    """Write ca.pem, proxy-cert.pem and proxy-key.pem into `directory`; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("t0-jax test CA (tests/gcs)"))
        .issuer_name(_name("t0-jax test CA (tests/gcs)"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) for n in SERVED_NAMES] + [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("*.googleapis.com"))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    paths = {"ca": directory / "ca.pem", "cert": directory / "proxy-cert.pem",
             "key": directory / "proxy-key.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(_pem_key(leaf_key))
    paths["key"].chmod(0o600)
    return paths
