"""Names and emails: drawn directly from Faker's word lists, they match Faker's own draws."""

from __future__ import annotations

import hashlib

import pytest
from faker import Faker

from sim.model.people import Person


def faker_traits(faker: Faker, person: Person, seed: int) -> dict[str, str]:
    """Return the traits Faker itself gives for the person's seed, for comparison."""
    key = f"{seed}/{person.person_id}".encode()
    faker.seed_instance(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest()))
    first, last = faker.first_name(), faker.last_name()
    domain = faker.free_email_domain()
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first}.{last}.{person.person_id}@{domain}".lower(),
    }


@pytest.mark.parametrize(
    ("timezone", "locale"),
    [
        ("America/New_York", "en_US"),
        ("Europe/London", "en_GB"),
        ("Europe/Berlin", "de_DE"),
        ("Europe/Paris", "fr_FR"),
    ],
)
def test_traits_match_faker(timezone, locale):
    people = [Person(group, index, 7, timezone) for group in range(1, 151) for index in (0, 1)]
    faker = Faker(locale)

    traits = [person.traits() for person in people]

    assert traits == [faker_traits(faker, person, 7) for person in people]
    assert len({person_traits["last_name"] for person_traits in traits}) > 20
