"""People in a shopper group: a stable id, plus a name and email made when identify needs them."""

from __future__ import annotations

import hashlib

from faker import Faker

# Faker locale per time-zone prefix, so names and emails look local.
_LOCALES = {"Europe/London": "en_GB", "Europe/Berlin": "de_DE", "Europe/Paris": "fr_FR"}
_fakers: dict[str, Faker] = {}


def _faker(locale: str) -> Faker:
    # One Faker per locale, reseeded for each person: making a Faker costs milliseconds.
    if locale not in _fakers:
        _fakers[locale] = Faker(locale)
    return _fakers[locale]


class Person:
    """One person: ``person_id`` is the id identify sends once they have an account."""

    __slots__ = ("person_id", "has_account", "has_ordered", "_traits", "_seed", "_timezone")

    def __init__(self, group_id: int, index: int, seed: int, timezone: str):
        self.person_id = f"p{group_id}-{index}"
        self.has_account = False
        self.has_ordered = False
        self._traits: dict[str, str] | None = None
        self._seed = seed
        self._timezone = timezone

    def traits(self) -> dict[str, str]:
        """Return the person's name and email, made on first use from a seed of their own."""
        if self._traits is None:
            key = f"{self._seed}/{self.person_id}".encode()
            faker = _faker(_LOCALES.get(self._timezone, "en_US"))
            faker.seed_instance(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest()))
            first, last = faker.first_name(), faker.last_name()
            self._traits = {
                "first_name": first,
                "last_name": last,
                "email": f"{first}.{last}.{self.person_id}@{faker.free_email_domain()}".lower(),
            }
        return self._traits
