"""dns_wire: the query we send and what a response says, checked against messages dnspython writes and reads."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtasts_resolver.net.dns_wire import (
    EDNS_PAYLOAD_BYTES,
    Address,
    BadAnswer,
    Mx,
    NotTheAnswer,
    ServerFailed,
    Truncated,
    Txt,
    query_message,
    query_name,
    rdtype_number,
    read_response,
)
from mtasts_resolver.policy.dane import TlsaRecord

QID = 4242
SOA = "ns.example. hostmaster.example. 1 3600 900 604800 30"


def response(name: str, rdtype: str, *, answer=(), authority=(), rcode=dns.rcode.NOERROR, ad=True,
             qid=QID, flags=0, edns=True) -> bytes:
    """A response as a resolver sends it: ``answer``/``authority`` are (name, ttl, type, text) tuples."""
    query = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD_BYTES)
    query.id = qid
    message = dns.message.make_response(query)
    message.set_rcode(rcode)
    if not edns:
        message.use_edns(False)   # the last record of the message is the answer's: its octets can be patched
    message.flags |= (dns.flags.AD if ad else 0) | flags
    for section, rows in ((message.answer, answer), (message.authority, authority)):
        for owner, ttl, kind, text in rows:
            section.append(dns.rrset.from_text(owner, ttl, "IN", kind, text))
    return message.to_wire()


def read(data: bytes, name: str, rdtype: str, qid: int = QID):
    return read_response(data, qid, query_name(name), rdtype_number(rdtype))


def test_the_query_asks_recursion_with_the_ad_bit_and_edns_but_not_do():
    sent = dns.message.from_wire(query_message(QID, query_name("_mta-sts.example.com."), rdtype_number("TXT")))
    assert sent.id == QID and sent.flags & dns.flags.RD and sent.flags & dns.flags.AD
    assert sent.edns == 0 and sent.payload == EDNS_PAYLOAD_BYTES and not sent.ednsflags & dns.flags.DO
    assert [(str(q.name), q.rdtype) for q in sent.question] == [("_mta-sts.example.com.", 16)]


@pytest.mark.parametrize("rdtype, texts, expected", [
    ("TXT", ['"v=STSv1; id=1"'], (Txt((b"v=STSv1; id=1",)),)),
    ("TXT", ['"v=STSv1; " "id=2"'], (Txt((b"v=STSv1; ", b"id=2")),)),
    ("A", ["192.0.2.1", "192.0.2.2"], (Address("192.0.2.1"), Address("192.0.2.2"))),
    ("AAAA", ["2001:db8:0:0::1"], (Address("2001:db8::1"),)),
    ("MX", ["10 MX1.Example.COM."], (Mx(10, "mx1.example.com"),)),
    ("MX", ["0 ."], (Mx(0, "."),)),   # null MX (RFC 7505)
    ("TLSA", ["3 1 1 " + "ab" * 32], (TlsaRecord(3, 1, 1, bytes.fromhex("ab" * 32)),)),
    ("TLSA", ["3 1 0 abcd"], (TlsaRecord(3, 1, 0, b"\xab\xcd"),)),
])
def test_records_of_each_type(rdtype, texts, expected):
    name = "host.example.com"
    data = response(name, rdtype, answer=[(name + ".", 300, rdtype, t) for t in texts])
    answer = read(data, name, rdtype)
    assert answer.records == expected and answer.secure and answer.ttl == 300
    assert not answer.nxdomain and answer.canonical_name == name and answer.cnames == ()


@pytest.mark.parametrize("rcode, nxdomain", [(dns.rcode.NXDOMAIN, True), (dns.rcode.NOERROR, False)])
def test_a_negative_answer_is_held_for_the_soa_ttl_or_minimum_whichever_is_less(rcode, nxdomain):
    for soa_ttl, expected in ((3600, 30), (10, 10)):
        data = response("x.example.com", "TXT", rcode=rcode, authority=[("example.com.", soa_ttl, "SOA", SOA)])
        answer = read(data, "x.example.com", "TXT")
        assert answer.records == () and answer.nxdomain is nxdomain and answer.ttl == expected


def test_a_negative_answer_without_soa_has_ttl_0_and_the_ad_flag_is_read():
    answer = read(response("x.example.com", "MX", ad=False), "x.example.com", "MX")
    assert answer.ttl == 0 and not answer.secure


def test_a_cname_chain_is_followed_and_reported():
    data = response("www.example.com", "A", answer=[
        ("www.example.com.", 300, "CNAME", "Mid.Example.NET."),
        ("mid.example.net.", 60, "CNAME", "end.example.org."),
        ("end.example.org.", 120, "A", "192.0.2.7"),
        ("unrelated.example.", 5, "A", "192.0.2.9"),   # not on the chain: ignored
    ])
    answer = read(data, "WWW.example.com", "A")
    assert answer.records == (Address("192.0.2.7"),) and answer.ttl == 60
    assert answer.canonical_name == "end.example.org"
    assert answer.cnames == (("www.example.com", "mid.example.net"), ("mid.example.net", "end.example.org"))


def test_a_cname_chain_to_nothing_takes_the_negative_ttl_too():
    data = response("www.example.com", "TLSA", answer=[("www.example.com.", 300, "CNAME", "gone.example.net.")],
                    rcode=dns.rcode.NXDOMAIN, authority=[("example.net.", 600, "SOA", SOA)])
    answer = read(data, "www.example.com", "TLSA")
    assert answer.records == () and answer.nxdomain and answer.ttl == 30 and answer.canonical_name == "gone.example.net"


@pytest.mark.parametrize("links", [
    [("a.example.", "b.example."), ("b.example.", "a.example.")],                  # a loop
    [(f"c{i}.example.", f"c{i + 1}.example.") for i in range(17)],                  # longer than 16
])
def test_a_looping_or_endless_cname_chain_fails_the_lookup(links):
    data = response(links[0][0], "A", answer=[(owner, 60, "CNAME", target) for owner, target in links])
    with pytest.raises(BadAnswer):
        read(data, links[0][0], "A")


def test_responses_to_something_else_are_not_the_answer():
    good = response("x.example.com", "TXT", answer=[("x.example.com.", 60, "TXT", '"v=STSv1; id=1"')])
    with pytest.raises(NotTheAnswer):
        read(good, "x.example.com", "TXT", qid=QID + 1)         # another ID: a spoof or a late reply
    with pytest.raises(NotTheAnswer):
        read(good, "y.example.com", "TXT")                      # another question
    with pytest.raises(NotTheAnswer):
        read(good, "x.example.com", "MX")
    query = query_message(QID, query_name("x.example.com"), rdtype_number("TXT"))
    with pytest.raises(NotTheAnswer):
        read(query, "x.example.com", "TXT")                     # a query, not a response
    with pytest.raises(NotTheAnswer):
        read(good[:20], "x.example.com", "TXT")                 # cut short


def test_truncated_and_failed_responses():
    with pytest.raises(Truncated):
        read(response("x.example.com", "TXT", flags=dns.flags.TC), "x.example.com", "TXT")
    for rcode in (dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.FORMERR):
        with pytest.raises(ServerFailed):
            read(response("x.example.com", "TXT", rcode=rcode), "x.example.com", "TXT")


def tlsa_wire(text: str) -> bytearray:
    return bytearray(response("_25._tcp.mx.example", "TLSA", answer=[("_25._tcp.mx.example.", 60, "TLSA", text)],
                              edns=False))


def test_a_tlsa_record_whose_length_misfits_its_matching_type_is_read_for_the_policy_to_judge():
    """RFC 7672 §3.1: such a record is unusable, the RRset still counts (dnspython >= 2.8 refuses to write it)."""
    data = tlsa_wire("3 1 0 abcd")
    data[-3] = 1   # matching type SHA-256, with 2 octets of data
    assert read(bytes(data), "_25._tcp.mx.example", "TLSA").records == (TlsaRecord(3, 1, 1, b"\xab\xcd"),)


def test_a_tlsa_record_shorter_than_its_fixed_fields_fails_the_lookup():
    data = tlsa_wire("3 1 0 ab")
    # the record's 4 rdata octets become 2: RDLENGTH (the 2 octets before them) and the message's end
    data[-6:-4] = (2).to_bytes(2, "big")
    del data[-2:]
    with pytest.raises(BadAnswer):
        read(bytes(data), "_25._tcp.mx.example", "TLSA")


def test_a_name_that_could_not_be_written_back_fails_the_lookup():
    data = response("example.com", "MX", answer=[("example.com.", 60, "MX", r"10 mx\032host.example.com.")])
    with pytest.raises(BadAnswer):
        read(data, "example.com", "MX")


VALID = response("_mta-sts.example.com", "TXT", answer=[
    ("_mta-sts.example.com.", 300, "CNAME", "sts.example.net."),
    ("sts.example.net.", 300, "TXT", '"v=STSv1; id=20240101"')], authority=[("example.net.", 60, "SOA", SOA)])
OURS = (NotTheAnswer, Truncated, ServerFailed, BadAnswer)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_are_an_answer_or_one_of_our_errors(data):
    try:
        read(data, "_mta-sts.example.com", "TXT")
    except OURS:
        pass


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_a_damaged_response_is_an_answer_or_one_of_our_errors(changes):
    data = bytearray(VALID)
    for offset, value in changes:
        data[offset] = value
    try:
        read(bytes(data), "_mta-sts.example.com", "TXT")
    except OURS:
        pass
