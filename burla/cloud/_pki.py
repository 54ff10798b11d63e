"""A certificate authority per cluster, made by ``burla up`` (needs ``cryptography``).

The CA's key signs one certificate, the head's, and is then dropped: nothing
can issue another certificate the cluster's clients would trust.  The head's
certificate names ``transport._tls.HEAD_NAME`` (clients check that name, not
an address, so it is issued before the head's VM has one).  ECDSA P-256,
valid for ``VALID_DAYS``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from .._errors import ProviderError
from ..transport._tls import HEAD_NAME

VALID_DAYS = 3650


@dataclass(frozen=True, repr=False)
class ClusterCertificates:
    ca: str  # PEM: kept with the cluster's record, given to clients and nodes
    head_cert: str  # PEM, for the head only
    head_key: str  # PEM (unencrypted), for the head only


def new_certificates(cluster: str) -> ClusterCertificates:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise ProviderError("a cloud cluster's TLS certificates need cryptography: pip install 'burla[gce]'") from None

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "burla"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"burla cluster {cluster} CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    head = (x509.CertificateBuilder().subject_name(name(HEAD_NAME)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HEAD_NAME)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return ClusterCertificates(
        ca=ca.public_bytes(pem).decode(),
        head_cert=head.public_bytes(pem).decode(),
        head_key=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
