"""The plan recorder's JSON lines: written field by field, they equal the encoded call record."""

from __future__ import annotations

import pickle

import pytest

from sim.formats.truth import encode
from sim.model.ports import SdkCall, SharedProperties
from sim.model.recorder import encode_call

PROPERTIES = {"sku": "SKU-00042", "category": "category-02", "price": 35.5}


def call_with(properties: dict | None, **fields: object) -> SdkCall:
    call = SdkCall(1234.5, 7, 3, "track", "d7-0", "p7-0", "anon-\u00e9", None)
    call.event = "product_viewed"
    call.properties = properties
    for name, value in fields.items():
        setattr(call, name, value)
    return call


@pytest.mark.parametrize(
    "properties", [None, PROPERTIES, SharedProperties(PROPERTIES)], ids=["none", "dict", "shared"]
)
def test_line_equals_encoded_record(properties):
    call = call_with(properties, user_id="p7-0", attributes={"email": "a@b.c"}, fault="x,y")

    assert encode_call(call) == encode(call.to_record())


def test_shared_properties_encode_once():
    shared = SharedProperties(PROPERTIES)

    assert shared == PROPERTIES
    assert shared.json == encode(PROPERTIES)
    assert pickle.loads(pickle.dumps(shared)).json == shared.json


def test_shared_properties_reject_changes():
    shared = SharedProperties(PROPERTIES)

    with pytest.raises(TypeError, match="read-only"):
        shared["sku"] = {"id": "SKU-00042"}
    with pytest.raises(TypeError, match="read-only"):
        shared.update(price=1.0)
    assert dict(shared) == PROPERTIES
