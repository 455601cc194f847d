"""Vocabularies behind the generated item titles ("waterproof hiking jacket, Norvik, navy").

A title names the item's subcategory, one attribute of its top category, its brand and colour.
The attribute also moves the item's latent vector, so a text embedding of the title carries real
signal about what users like (semantic IDs built from titles are meaningful, not decorative).
"""

from __future__ import annotations

import numpy as np

# top category -> (subcategory nouns, attribute adjectives)
TOP_CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "apparel": (("hiking jacket", "running shoes", "wool sweater", "denim jeans", "rain coat"),
                ("waterproof", "lightweight", "slim-fit", "insulated", "breathable", "oversized")),
    "electronics": (("wireless earbuds", "smart watch", "bluetooth speaker", "phone charger", "laptop stand"),
                    ("noise-cancelling", "fast-charging", "compact", "water-resistant", "ultra-thin", "dual-band")),
    "home": (("desk lamp", "throw blanket", "storage box", "wall clock", "ceramic vase"),
             ("minimalist", "handmade", "foldable", "vintage", "dimmable", "stackable")),
    "beauty": (("face serum", "lip balm", "hair dryer", "nail polish", "sunscreen lotion"),
               ("organic", "fragrance-free", "long-lasting", "hydrating", "travel-size", "vegan")),
    "sports": (("yoga mat", "water bottle", "resistance band", "cycling gloves", "tennis racket"),
               ("non-slip", "insulated", "adjustable", "carbon", "extra-thick", "reflective")),
    "toys": (("building blocks", "puzzle set", "plush bear", "toy car", "drawing kit"),
             ("educational", "magnetic", "glow-in-the-dark", "wooden", "remote-control", "giant")),
    "kitchen": (("chef knife", "frying pan", "coffee grinder", "cutting board", "tea kettle"),
                ("stainless", "non-stick", "electric", "bamboo", "cast-iron", "induction-ready")),
    "books": (("mystery novel", "cookbook", "travel guide", "sketchbook", "science primer"),
              ("illustrated", "bestselling", "hardcover", "pocket", "annotated", "signed")),
}
COLOURS: tuple[str, ...] = ("black", "white", "navy", "red", "olive", "grey", "beige", "teal", "pink", "mustard")
_SYLLABLES = ("nor", "vik", "tal", "lo", "ze", "pha", "ko", "rin", "sa", "mu", "del", "ta", "bri", "on", "cas",
              "pa", "lu", "xe", "fen", "dra", "mo", "quo", "vel", "ar")  # fmt: skip


def brand_names(count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct invented brand names, deterministic for the generator's state."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        parts = rng.choice(len(_SYLLABLES), size=int(rng.integers(2, 4)))
        name = "".join(_SYLLABLES[p] for p in parts).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def top_names() -> list[str]:
    return list(TOP_CATEGORIES)


def subcategory_names(per_top: int) -> list[str]:
    """Global subcategory index s = top * per_top + j -> its noun."""
    return [nouns[j] for nouns, _ in TOP_CATEGORIES.values() for j in range(per_top)]


def attribute_names() -> list[str]:
    """Global attribute index a = top * 6 + j -> its adjective."""
    return [adj for _, adjectives in TOP_CATEGORIES.values() for adj in adjectives]


ATTRIBUTES_PER_TOP = 6


def titles(sub: np.ndarray, attribute: np.ndarray, brand: np.ndarray, colour: np.ndarray,
           per_top: int, brands: list[str]) -> list[str]:
    """Item titles, built from distinct (sub, attribute, brand, colour) combinations once each."""
    nouns = np.array(subcategory_names(per_top), dtype=object)
    adjectives = np.array(attribute_names(), dtype=object)
    brand_arr = np.array(brands, dtype=object)
    colour_arr = np.array(COLOURS, dtype=object)
    text = adjectives[attribute] + " " + nouns[sub] + ", " + brand_arr[brand] + ", " + colour_arr[colour]
    return text.tolist()
