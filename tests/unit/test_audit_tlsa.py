"""The rules the audit made public: TLSA records against a presented chain, and which TXT records announce MTA-STS."""

from __future__ import annotations

import hashlib

import pytest

from mtasts_resolver.policy.dane import TlsaRecord, tlsa_matches
from mtasts_resolver.policy.sts import sts_txt_candidates

LEAF_DER, LEAF_SPKI = b"\x30\x04leaf", b"\x30\x04lspk"   # DER SEQUENCEs, so matching type 0 is usable
CA_DER, CA_SPKI = b"\x30\x04ca..", b"\x30\x04cspk"
CHAIN = ((LEAF_DER, LEAF_SPKI), (CA_DER, CA_SPKI))


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@pytest.mark.parametrize("record, matches", [
    (TlsaRecord(3, 1, 1, sha256(LEAF_SPKI)), True),                      # DANE-EE SPKI SHA-256
    (TlsaRecord(3, 0, 1, sha256(LEAF_DER)), True),                       # DANE-EE full certificate
    (TlsaRecord(3, 1, 2, hashlib.sha512(LEAF_SPKI).digest()), True),     # SHA-512
    (TlsaRecord(3, 1, 0, LEAF_SPKI), True),                              # exact data
    (TlsaRecord(3, 1, 1, sha256(LEAF_DER)), False),                      # selector 1 hashes the SPKI, not the cert
    (TlsaRecord(3, 1, 1, sha256(CA_SPKI)), False),                       # DANE-EE: the server's certificate only
    (TlsaRecord(2, 1, 1, sha256(CA_SPKI)), True),                        # DANE-TA: the CA in the chain
    (TlsaRecord(2, 1, 1, sha256(LEAF_SPKI)), False),                     # DANE-TA never matches the leaf itself
    (TlsaRecord(1, 1, 1, sha256(LEAF_SPKI)), False),                     # PKIX-EE: unusable for SMTP
    (TlsaRecord(3, 1, 1, sha256(LEAF_SPKI)[:20]), False),                # a digest of the wrong length: unusable
    (TlsaRecord(3, 2, 1, sha256(LEAF_SPKI)), False),                     # unknown selector
])
def test_tlsa_matches(record, matches):
    assert tlsa_matches(record, CHAIN) is matches


def test_no_chain_matches_nothing():
    assert not tlsa_matches(TlsaRecord(3, 1, 1, sha256(LEAF_SPKI)), ())


@pytest.mark.parametrize("records, candidates", [
    ([], []),
    (["v=spf1 -all"], []),
    (["v=STSv1; id=1", "v=spf1 -all"], ["v=STSv1; id=1"]),
    (["v=STSv1; id=1", "v=STSv1; id=2"], ["v=STSv1; id=1", "v=STSv1; id=2"]),
    (["v=STSv1;id=bad!"], ["v=STSv1;id=bad!"]),      # malformed still announces: a finding, not silence
    ([" v=STSv1; id=1"], []),                          # must start the record (RFC 8461 §3.1)
])
def test_sts_txt_candidates(records, candidates):
    assert sts_txt_candidates(records) == candidates
