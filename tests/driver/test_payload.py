"""Deep links in push payloads: where they are found and what they carry."""

from __future__ import annotations

from sim.formats.payload import fill_link, find_link, link_fields


def test_apns_link_found():
    payload = {"aps": {"alert": "hi"}, "CIO": {"push": {"link": "shop://cart/c1"}}}
    assert find_link(payload) == "shop://cart/c1"


def test_fcm_link_found():
    body = {"message": {"token": "t", "data": {"link": "shop://cart/c2", "title": "x"}}}
    assert find_link(body) == "shop://cart/c2"


def test_custom_path_only():
    payload = {"deep": {"url": "shop://p/sku9"}, "CIO": {"push": {"link": "other"}}}
    assert find_link(payload, "deep.url") == "shop://p/sku9"


def test_missing_link():
    assert find_link({"aps": {}}) is None


def test_fields_round_trip():
    template = "shop://cart/{cart_id}?sku={sku}"
    link = fill_link(template, {"cart_id": "c-1", "sku": "S9"})
    assert link == "shop://cart/c-1?sku=S9"
    assert link_fields(template, link) == {"cart_id": "c-1", "sku": "S9"}


def test_fields_of_foreign_link():
    assert link_fields("shop://cart/{cart_id}", "shop://home") == {}
