"""The shop's catalogue as the model draws from it: SKUs with a category and a price."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.model.ports import SharedProperties
from sim.scenario.schema import Products

# Spawn key of the catalogue's stream, apart from every group's streams.
_CATALOGUE_KEY = 0xCA7A


@dataclass(frozen=True, slots=True)
class Product:
    """One SKU with its category and price in the shop's currency."""

    sku: str
    category: str
    price: float
    # The properties of product_viewed, the most frequent event of the default funnel, made once
    # per product.
    view_properties: SharedProperties = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        properties = {"sku": self.sku, "category": self.category, "price": self.price}
        object.__setattr__(self, "view_properties", SharedProperties(properties))


def build_catalogue(products: Products, seed: int) -> list[Product]:
    """Return ``products.count`` products with seeded prices, the same for the same seed."""
    rng = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed], spawn_key=(_CATALOGUE_KEY,)))
    )
    count = max(products.count, 1)
    prices = products.price.median * np.exp(products.price.sigma * rng.standard_normal(count))
    categories = max(products.categories, 1)
    return [
        Product(f"SKU-{i:05d}", f"category-{i % categories:02d}", round(float(p), 2))
        for i, p in enumerate(prices)
    ]
