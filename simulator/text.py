"""Words of the simulated catalog: category names and nouns, brands, attribute words.

A title is `<brand> <attribute> <attribute> <noun>`; a query mixes a noun of
the intent category with attribute words of the user's niche (and sometimes a
brand). Each (category, niche) owns a few attribute words, so the words of a
title carry its category (noun), brand and niche (attributes): a text encoder
can see the same structure the simulator uses.
"""

from __future__ import annotations

import numpy as np

CATEGORIES: tuple[str, ...] = (
    "electronics", "home", "kitchen", "beauty", "fashion", "shoes", "sports", "outdoors",
    "toys", "baby", "pets", "books", "grocery", "automotive", "garden", "health",
)
N_CATEGORIES = len(CATEGORIES)

NOUNS: tuple[tuple[str, ...], ...] = (
    ("headphones", "speaker", "charger", "tablet", "camera"),
    ("lamp", "pillow", "blanket", "curtain", "rug"),
    ("pan", "knife", "blender", "kettle", "mug"),
    ("serum", "lipstick", "moisturizer", "shampoo", "perfume"),
    ("jacket", "dress", "shirt", "scarf", "jeans"),
    ("sneakers", "boots", "sandals", "loafers", "slippers"),
    ("dumbbell", "racket", "ball", "yoga-mat", "jersey"),
    ("tent", "backpack", "lantern", "hammock", "compass"),
    ("puzzle", "robot", "doll", "blocks", "kite"),
    ("stroller", "bottle", "diaper", "onesie", "rattle"),
    ("leash", "kibble", "litter", "aquarium", "collar"),
    ("novel", "cookbook", "atlas", "comic", "journal"),
    ("coffee", "tea", "pasta", "chocolate", "honey"),
    ("tire", "wiper", "dashcam", "seat-cover", "jumper-cable"),
    ("shovel", "planter", "hose", "seeds", "pruner"),
    ("vitamins", "thermometer", "bandage", "massager", "toothbrush"),
)

ATTRIBUTES: tuple[str, ...] = tuple(
    "red blue green black white silver golden pink purple orange beige navy teal ivory "
    "wooden bamboo steel leather cotton linen wool silk ceramic glass titanium carbon "
    "organic vegan handmade vintage retro modern minimalist rustic nordic boho industrial "
    "compact portable foldable wireless waterproof heavy-duty lightweight ergonomic "
    "premium budget deluxe classic pro mini jumbo slim extra-large kids adult unisex "
    "eco recycled solar smart digital analog magnetic insulated breathable thermal "
    "spicy sweet herbal floral citrus unscented gluten-free sugar-free keto artisan "
    "gothic pastel neon matte glossy velvet denim canvas rubber marble copper brass "
    "camo tactical vegan-leather quick-dry anti-slip noise-cancelling hypoallergenic".split()
)

_SYLLABLES = ("zen", "tro", "ka", "lum", "vi", "nor", "pex", "ora", "quil", "dex", "mar", "sol",
              "fy", "tek", "bri", "ox", "lia", "ven", "gro", "nix")


def make_brands(rng: np.random.Generator, n_categories: int, per_category: int) -> list[list[str]]:
    """Distinct capitalised brand names, `per_category` for each category."""
    seen: set[str] = set()
    out: list[list[str]] = []
    for _ in range(n_categories):
        names: list[str] = []
        while len(names) < per_category:
            parts = rng.choice(len(_SYLLABLES), size=int(rng.integers(2, 4)))
            name = "".join(_SYLLABLES[p] for p in parts).capitalize()
            if name not in seen:
                seen.add(name)
                names.append(name)
        out.append(names)
    return out


def make_niche_attributes(rng: np.random.Generator, n_categories: int, niches: int, per_niche: int = 3) -> np.ndarray:
    """Attribute word ids owned by each (category, niche): int32 (C, K, per_niche)."""
    return np.stack([
        rng.choice(len(ATTRIBUTES), size=(niches, per_niche), replace=False) if niches * per_niche <= len(ATTRIBUTES)
        else rng.integers(0, len(ATTRIBUTES), size=(niches, per_niche))
        for _ in range(n_categories)
    ]).astype(np.int32)


def titles(brands: list[str], attrs: np.ndarray, nouns: list[str]) -> list[str]:
    """`brand attr attr noun` per item; `attrs` int (n, 2)."""
    return [f"{b} {ATTRIBUTES[a0]} {ATTRIBUTES[a1]} {n}" for b, (a0, a1), n in zip(brands, attrs.tolist(), nouns, strict=True)]


def attribute_strings(attrs: np.ndarray) -> list[str]:
    """Comma-separated attribute words per row of `attrs` int (n, k)."""
    return [",".join(ATTRIBUTES[a] for a in row) for row in attrs.tolist()]


def queries(nouns: list[str], attr: np.ndarray, brands: list[str | None]) -> list[str]:
    """Query text per request: optional brand, optional attribute (id < 0: none), noun."""
    out = []
    for noun, a, brand in zip(nouns, attr.tolist(), brands, strict=True):
        words = ([brand.lower()] if brand else []) + ([ATTRIBUTES[a]] if a >= 0 else []) + [noun]
        out.append(" ".join(words))
    return out
