"""Memoized HPACK Huffman decoding of long header values that repeat on every request.

Clients built on nghttp2, such as curl and h2load, send ``authorization`` as a never-indexed
literal. So an APNs provider token of about 200 characters arrives Huffman-coded on every push.
hpack 4.2 decodes Huffman strings in pure Python. A 205-character ``bearer`` value (164 bytes
coded) took 29 µs in a tight loop, more than the gateway's own rules. The coded bytes stay the
same on every request until the client renews its token, so a small cache keyed by them removes
the cost.

hpack's ``Decoder`` looks ``decode_huffman`` up as a module global of ``hpack.hpack`` on every
call, and h2 creates its decoders itself, so ``install`` replaces that global for the whole
process. Decoding is a pure function of its input, so every HPACK decoder in the process gets
the same results and the same errors as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import hpack.hpack

# Encoded strings shorter than this are decoded every time: paths and ids are new on each
# request, and caching them would only evict the tokens. A Huffman-coded ES256 JWT is about
# 160 bytes.
MIN_CACHED_BYTES = 96
# Apple rejects a provider token renewed more often than every 20 minutes, and the connections
# of a team usually share one, so a few hundred entries cover any run.
MAX_ENTRIES = 512

_install_lock = threading.Lock()


class HuffmanMemo:
    """``decode_huffman`` with a bounded cache of long values, safe to call from any thread."""

    def __init__(self, decode: Callable[[bytes], bytes], max_entries: int = MAX_ENTRIES) -> None:
        self.decode = decode
        self.max_entries = max_entries
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, encoded) -> bytes:
        if encoded is None or len(encoded) < MIN_CACHED_BYTES:
            return self.decode(encoded)
        key = bytes(encoded)
        with self._lock:
            decoded = self._cache.get(key)
            if decoded is not None:
                self._cache.move_to_end(key)
                return decoded

        # A string that fails to decode raises here and is never cached.
        decoded = self.decode(key)
        with self._lock:
            self._cache[key] = decoded
            if len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return decoded


def install() -> HuffmanMemo:
    """Make hpack's decoders in this process use the cache; return it. Idempotent."""
    with _install_lock:
        current = hpack.hpack.decode_huffman
        if isinstance(current, HuffmanMemo):
            return current
        memo = HuffmanMemo(current)
        hpack.hpack.decode_huffman = memo
        return memo
