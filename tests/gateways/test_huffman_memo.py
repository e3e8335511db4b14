"""The memoized Huffman decoder returns what hpack returns, and caches only long values."""

from __future__ import annotations

import hpack.hpack
import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman

from sim.gateways import huffman_memo
from sim.gateways.huffman_memo import MIN_CACHED_BYTES, HuffmanMemo

BEARER = "bearer " + "eyJhbGciOiJFUzI1NiIsImtpZCI6IkFCQzEyM0RFRkcifQ." * 5


def huffman(text: str) -> bytes:
    return HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(text.encode())


class CountingDecode:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, encoded):
        self.calls += 1
        return decode_huffman(encoded)


def test_long_value_decoded_once():
    decode = CountingDecode()
    memo = HuffmanMemo(decode)
    encoded = huffman(BEARER)

    first = memo(encoded)
    second = memo(memoryview(encoded))

    assert len(encoded) >= MIN_CACHED_BYTES
    assert first == BEARER.encode()
    assert second == first
    assert decode.calls == 1


def test_short_value_not_cached():
    decode = CountingDecode()
    memo = HuffmanMemo(decode)
    encoded = huffman("/3/device/" + "ab" * 32)

    memo(encoded)
    memo(encoded)

    assert len(encoded) < MIN_CACHED_BYTES
    assert decode.calls == 2


def test_invalid_string_raises_every_time():
    decode = CountingDecode()
    memo = HuffmanMemo(decode)
    # Padding of more than 7 bits is an error (RFC 7541, section 5.2).
    invalid = huffman(BEARER) + b"\xff"

    for _ in range(2):
        with pytest.raises(HPACKDecodingError):
            memo(invalid)

    assert decode.calls == 2


def test_cache_bounded():
    memo = HuffmanMemo(decode_huffman, max_entries=3)

    values = [f"{BEARER}{number}" for number in range(5)]
    for value in values:
        assert memo(huffman(value)) == value.encode()

    assert len(memo._cache) == 3
    assert list(memo._cache.values()) == [value.encode() for value in values[2:]]


def test_install_serves_hpack_decoders(monkeypatch):
    monkeypatch.setattr(hpack.hpack, "decode_huffman", decode_huffman)
    first = huffman_memo.install()
    again = huffman_memo.install()
    headers = [
        (":path", "/3/device/" + "ab" * 32),
        NeverIndexedHeaderTuple("authorization", BEARER),
    ]
    block = Encoder().encode(headers, huffman=True)

    decoded = Decoder().decode(block)
    decoded_again = Decoder().decode(block)

    assert again is first
    assert hpack.hpack.decode_huffman is first
    assert decoded == headers
    assert decoded_again == headers
    assert len(first._cache) == 1
