"""A deterministic synthetic shop: a product catalog and an event log with learnable structure.

Writes the embedded sample in `data/sample/` (run `python -m pipeline.synthetic`); any size can be asked for.

Why the data can be learned (and is not uniform noise):
- product text is composed from per-category vocabularies (nouns, materials, functions, audiences) and
  cross-category themes ("eco-friendly", "rugged", ...), so embeddings of related products are close;
- every user has latent tastes: a few favourite categories, favourite themes and a price level; most of
  what they view and buy follows those tastes, the rest is popularity-driven noise;
- item popularity is long-tailed (Zipf), so a popularity baseline is a real, beatable opponent;
- every product has a few "bought together" companions in complementary categories that its text does
  not reveal, so behavioural co-occurrence carries signal that content similarity cannot see.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

log = logging.getLogger(__name__)

THEMES = ["eco-friendly", "minimalist", "premium", "rugged", "cozy", "tech-forward", "classic", "colorful"]

# Per-category vocabularies. `themes` biases which cross-category themes a category's products carry.
CATEGORIES: dict[str, dict[str, list[str]]] = {
    "Running & Footwear": {
        "nouns": ["Trail Running Shoe", "Road Running Shoe", "Racing Flat", "Hiking Boot", "Recovery Slide",
                  "Running Sock", "Cushioned Insole", "Hydration Vest"],
        "materials": ["engineered mesh", "knit upper", "suede", "recycled polyester", "EVA foam", "merino wool",
                      "Gore-Tex membrane"],
        "functions": ["trail running", "marathon training", "waterproof", "arch support", "breathable",
                      "all-terrain grip", "daily jogging"],
        "audiences": ["men", "women", "beginners", "ultrarunners", "weekend hikers"],
        "brands": ["Stridewell", "Northpeak", "Kinetic", "Pacer & Co", "Ridgeline"],
        "themes": ["rugged", "tech-forward", "minimalist", "colorful"],
    },
    "Activewear": {
        "nouns": ["Training Shorts", "Compression Tights", "Sports Bra", "Running Jacket", "Performance Tee",
                  "Zip Hoodie", "Track Pants", "Base Layer"],
        "materials": ["recycled nylon", "organic cotton", "bamboo fiber", "stretch spandex", "brushed fleece"],
        "functions": ["moisture-wicking", "quick-dry", "thermal", "UV protection", "odor control",
                      "four-way stretch"],
        "audiences": ["men", "women", "gym-goers", "runners", "cyclists"],
        "brands": ["Motiv", "Kinetic", "Aerolite", "Halden", "Fieldday"],
        "themes": ["eco-friendly", "minimalist", "colorful", "tech-forward"],
    },
    "Outdoor & Camping": {
        "nouns": ["Backpacking Tent", "Sleeping Bag", "Trekking Poles", "Headlamp", "Camping Stove",
                  "Daypack", "Water Filter", "Camp Chair"],
        "materials": ["ripstop nylon", "aluminum", "titanium", "goose down", "waxed canvas"],
        "functions": ["waterproof", "four-season", "packable", "insulated", "ultralight backpacking",
                      "weather-resistant"],
        "audiences": ["backpackers", "families", "thru-hikers", "campers", "climbers"],
        "brands": ["Northpeak", "Timberfox", "Ridgeline", "Basecamp Supply", "Alpenglow"],
        "themes": ["rugged", "minimalist", "premium", "tech-forward"],
    },
    "Yoga & Fitness": {
        "nouns": ["Yoga Mat", "Yoga Block", "Resistance Band Set", "Kettlebell", "Foam Roller",
                  "Adjustable Dumbbell", "Jump Rope", "Meditation Cushion"],
        "materials": ["natural rubber", "cork", "TPE foam", "cast iron", "neoprene", "organic cotton"],
        "functions": ["non-slip grip", "muscle recovery", "strength training", "balance work",
                      "home workouts", "mindfulness"],
        "audiences": ["yogis", "beginners", "athletes", "home gym owners", "pilates fans"],
        "brands": ["Lotus Lane", "Motiv", "Groundwork", "Sattva", "Ironleaf"],
        "themes": ["eco-friendly", "minimalist", "cozy", "colorful"],
    },
    "Kitchen & Dining": {
        "nouns": ["Chef's Knife", "Cast Iron Skillet", "French Press", "Cutting Board", "Mixing Bowl Set",
                  "Espresso Cup Set", "Stock Pot", "Pour-Over Kettle"],
        "materials": ["stainless steel", "acacia wood", "glazed ceramic", "cast iron", "borosilicate glass",
                      "bamboo"],
        "functions": ["dishwasher-safe", "induction-ready", "nonstick", "oven-safe", "slow brewing",
                      "precision cutting"],
        "audiences": ["home cooks", "coffee lovers", "professional chefs", "bakers", "families"],
        "brands": ["Hearthstone", "Copper & Oak", "Kiln", "Mesa", "Forge House"],
        "themes": ["classic", "premium", "minimalist", "eco-friendly"],
    },
    "Home Decor": {
        "nouns": ["Throw Pillow", "Table Lamp", "Wall Mirror", "Area Rug", "Scented Candle", "Ceramic Vase",
                  "Knit Throw Blanket", "Picture Frame"],
        "materials": ["linen", "velvet", "jute", "brushed brass", "soy wax", "wool", "rattan"],
        "functions": ["ambient lighting", "handmade", "hypoallergenic", "easy care", "statement piece",
                      "calming scent"],
        "audiences": ["apartment dwellers", "new homeowners", "designers", "gift givers"],
        "brands": ["Nook & Niche", "Hearthstone", "Juniper Home", "Lumen", "Casa Verde"],
        "themes": ["cozy", "classic", "minimalist", "colorful"],
    },
    "Electronics Accessories": {
        "nouns": ["Wireless Earbuds", "Phone Case", "Charging Cable", "Power Bank", "Laptop Sleeve",
                  "Bluetooth Speaker", "Smartwatch Band", "Wireless Charger"],
        "materials": ["silicone", "anodized aluminum", "braided nylon", "vegan leather", "polycarbonate"],
        "functions": ["fast charging", "noise cancelling", "shockproof", "water resistance",
                      "long battery life", "wireless pairing"],
        "audiences": ["commuters", "gamers", "travelers", "students", "creators"],
        "brands": ["Voltra", "Pixelpoint", "Aerolite", "Sonari", "Gridline"],
        "themes": ["tech-forward", "minimalist", "rugged", "colorful"],
    },
    "Beauty & Skincare": {
        "nouns": ["Face Serum", "Daily Moisturizer", "Mineral Sunscreen", "Gel Cleanser", "Lip Balm",
                  "Sheet Mask Pack", "Hair Oil", "Eye Cream"],
        "materials": ["hyaluronic acid", "vitamin C", "shea butter", "aloe vera", "argan oil", "niacinamide"],
        "functions": ["deep hydration", "anti-aging", "SPF 50 protection", "sensitive skin", "brightening",
                      "overnight repair"],
        "audiences": ["dry skin", "oily skin", "all skin types", "men", "travelers"],
        "brands": ["Dewlab", "Sattva", "Florae", "Clarion Skin", "Petal & Stone"],
        "themes": ["eco-friendly", "premium", "minimalist", "cozy"],
    },
    "Bags & Luggage": {
        "nouns": ["Carry-On Suitcase", "Weekender Duffel", "Canvas Tote", "Laptop Backpack", "Crossbody Bag",
                  "Packing Cube Set", "Travel Wallet", "Toiletry Kit"],
        "materials": ["polycarbonate shell", "waxed canvas", "full-grain leather", "recycled PET", "ballistic nylon"],
        "functions": ["TSA-friendly", "expandable", "anti-theft", "water-resistant", "carry-on sized",
                      "padded laptop sleeve"],
        "audiences": ["business travelers", "commuters", "students", "weekend travelers", "digital nomads"],
        "brands": ["Wayfarer", "Copper & Oak", "Transit Goods", "Basecamp Supply", "Halden"],
        "themes": ["premium", "classic", "rugged", "tech-forward"],
    },
    "Kids & Toys": {
        "nouns": ["Building Blocks", "Jigsaw Puzzle", "Plush Toy", "Art Kit", "Balance Bike", "Board Game",
                  "Science Kit", "Play Tent"],
        "materials": ["beech wood", "organic cotton", "BPA-free plastic", "recycled cardboard", "felt"],
        "functions": ["educational play", "fine motor skills", "creative play", "family game night",
                      "STEM learning", "outdoor play"],
        "audiences": ["toddlers", "preschoolers", "ages 6 and up", "families", "curious kids"],
        "brands": ["Little Maple", "Brightbox", "Tumble & Co", "Kiddo Lab", "Juniper Home"],
        "themes": ["colorful", "eco-friendly", "classic", "cozy"],
    },
}

# Which categories a purchase leads on to ("bought together" companions live there).
COMPLEMENTS = {
    "Running & Footwear": ["Activewear", "Running & Footwear", "Electronics Accessories"],
    "Activewear": ["Running & Footwear", "Yoga & Fitness", "Activewear"],
    "Outdoor & Camping": ["Outdoor & Camping", "Running & Footwear", "Bags & Luggage"],
    "Yoga & Fitness": ["Activewear", "Yoga & Fitness", "Beauty & Skincare"],
    "Kitchen & Dining": ["Kitchen & Dining", "Home Decor"],
    "Home Decor": ["Home Decor", "Kitchen & Dining", "Kids & Toys"],
    "Electronics Accessories": ["Electronics Accessories", "Bags & Luggage"],
    "Beauty & Skincare": ["Beauty & Skincare", "Bags & Luggage"],
    "Bags & Luggage": ["Bags & Luggage", "Electronics Accessories", "Beauty & Skincare"],
    "Kids & Toys": ["Kids & Toys", "Home Decor", "Outdoor & Camping"],
}

PRICE_BASE = {
    "Running & Footwear": 85, "Activewear": 45, "Outdoor & Camping": 120, "Yoga & Fitness": 40,
    "Kitchen & Dining": 55, "Home Decor": 50, "Electronics Accessories": 45, "Beauty & Skincare": 28,
    "Bags & Luggage": 95, "Kids & Toys": 32,
}

LINES = ["Pro", "Lite", "2", "X", "Max", "Air", "Trail", "Studio", "Everyday", "Classic", "Edge", "One"]

OPENERS = [
    "A {theme} {noun_l} made from {material}, built for {function}.",
    "This {noun_l} pairs {material} with a {theme} design for {function}.",
    "Meet the {title}: a {theme} take on the {noun_l}, made for {audience}.",
    "Crafted from {material}, this {theme} {noun_l} is ready for {function}.",
]
MIDDLES = [
    "It is designed for {function2} and holds up to daily use.",
    "Thoughtful details make it a reliable pick for {function2}.",
    "The {material} construction keeps it {adjective} without extra bulk.",
    "Tested by {audience}, it balances comfort and {function2}.",
    "Expect {function2} and a finish that stays {adjective} season after season.",
]
CLOSERS = [
    "A favourite with {audience}.",
    "Great for {audience} who care about {theme2} gear.",
    "Backed by a two-year warranty.",
    "Ships in plastic-free packaging.",
    "Pairs well with the rest of the {brand} range.",
    "",
]
ADJECTIVES = ["light", "sturdy", "soft", "sleek", "durable", "comfortable", "easy to clean"]

START = datetime(2026, 7, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class ShopSize:
    """How big a synthetic shop to make."""

    products: int = 2400
    users: int = 1200
    days: int = 120
    mean_sessions_per_user: float = 9.0
    seed: int = 20261126


def generate_products(size: ShopSize, rng: np.random.Generator) -> pl.DataFrame:
    """Compose a catalog with per-category vocabularies and cross-category themes."""
    categories = list(CATEGORIES)
    rows = []
    for i in range(size.products):
        category = categories[i % len(categories)]
        vocab = CATEGORIES[category]
        noun = vocab["nouns"][rng.integers(len(vocab["nouns"]))]
        material = vocab["materials"][rng.integers(len(vocab["materials"]))]
        functions = rng.choice(vocab["functions"], size=2, replace=False)
        audience = vocab["audiences"][rng.integers(len(vocab["audiences"]))]
        brand = vocab["brands"][rng.integers(len(vocab["brands"]))]
        # 80% of themes come from the category's own leaning, the rest from anywhere.
        theme_pool = vocab["themes"] if rng.random() < 0.8 else THEMES
        themes = list(dict.fromkeys(rng.choice(theme_pool, size=2, replace=True)))
        line = LINES[rng.integers(len(LINES))]
        theme_word = themes[0].replace("-", " ").title().replace(" ", "-")
        title_shape = rng.integers(3)
        if title_shape == 0:
            title = f"{brand} {theme_word} {noun} {line}"
        elif title_shape == 1:
            title = f"{brand} {noun} {line} in {material.title()}"
        else:
            title = f"{brand} {line} {noun}"
        facts = {
            "title": title, "noun_l": noun.lower(), "material": material, "function": functions[0],
            "function2": functions[1], "audience": audience, "brand": brand, "theme": themes[0],
            "theme2": themes[-1], "adjective": ADJECTIVES[rng.integers(len(ADJECTIVES))],
        }
        sentences = [
            OPENERS[rng.integers(len(OPENERS))].format(**facts),
            MIDDLES[rng.integers(len(MIDDLES))].format(**facts),
            CLOSERS[rng.integers(len(CLOSERS))].format(**facts),
        ]
        description = " ".join(s for s in sentences if s)
        multiplier = 1.6 if "premium" in themes else 1.0
        price = round(float(PRICE_BASE[category] * multiplier * rng.lognormal(0.0, 0.35)), 2)
        updated = START - timedelta(days=int(rng.integers(10, 400)), seconds=int(rng.integers(86400)))
        rows.append({
            "product_id": f"P{i + 1:06d}",
            "title": title,
            "description": description,
            "category": category,
            "attributes": "|".join([*themes, material, *functions]),
            "price": price,
            "in_stock": bool(rng.random() < 0.95),
            "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
    return pl.DataFrame(rows)


def generate_interactions(products: pl.DataFrame, size: ShopSize, rng: np.random.Generator) -> pl.DataFrame:
    """Simulate users with latent tastes browsing, carting, buying and rating over `size.days` days."""
    n_items = products.height
    categories = list(CATEGORIES)
    item_category = np.array([categories.index(c) for c in products["category"]])
    item_themes = np.zeros((n_items, len(THEMES)), dtype=np.float64)
    for i, attrs in enumerate(products["attributes"]):
        for tag in attrs.split("|"):
            if tag in THEMES:
                item_themes[i, THEMES.index(tag)] = 1.0
    prices = products["price"].to_numpy()
    # Price level within the category: 0 budget, 1 mid, 2 premium.
    price_level = np.zeros(n_items, dtype=np.int64)
    for c in range(len(categories)):
        members = np.flatnonzero(item_category == c)
        cuts = np.quantile(prices[members], [1 / 3, 2 / 3])
        price_level[members] = np.searchsorted(cuts, prices[members])
    # Long-tailed popularity, shuffled so it is unrelated to the product id.
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    rng.shuffle(popularity)
    members_of = [np.flatnonzero(item_category == c) for c in range(len(categories))]
    companions = _companions(item_category, popularity, members_of, categories, rng)

    rows: list[tuple[str, str, str, float, float]] = []
    for u in range(size.users):
        user_id = f"U{u + 1:07d}"
        category_taste = rng.dirichlet(np.full(len(categories), 0.25))
        theme_taste = rng.dirichlet(np.full(len(THEMES), 0.4))
        user_price = rng.integers(3)
        # A long-tailed activity level: many light users, a few heavy ones, some with one session.
        sessions = max(1, int(rng.lognormal(np.log(size.mean_sessions_per_user), 0.8)))
        first_day = rng.uniform(0, size.days * 0.7)
        times = np.sort(rng.uniform(first_day, size.days, size=sessions))
        for t in times:
            if rng.random() < 0.12:
                # Noise: something popular from anywhere, a gift, a trending item.
                item = int(rng.choice(n_items, p=popularity / popularity.sum()))
            else:
                category = int(rng.choice(len(categories), p=category_taste))
                item = _pick_in_category(members_of[category], theme_taste, user_price, item_themes,
                                         price_level, popularity, rng)
            t = _session(rows, user_id, item, t, theme_taste, user_price, item_themes, price_level,
                         popularity, members_of, item_category, companions, rng)
    offsets = np.array([r[4] for r in rows])
    stamps = [(START + timedelta(days=float(d))).strftime("%Y-%m-%dT%H:%M:%SZ") for d in offsets]
    product_ids = products["product_id"].to_list()
    frame = pl.DataFrame({
        "user_id": [r[0] for r in rows],
        "product_id": [product_ids[int(r[1])] for r in rows],
        "event_type": [r[2] for r in rows],
        "value": [r[3] for r in rows],
        "timestamp": stamps,
    })
    return frame.sort(["timestamp", "user_id", "product_id", "event_type"])


def _companions(item_category, popularity, members_of, categories, rng) -> np.ndarray:
    """Three fixed "bought together" companions per product, in complementary categories."""
    n_items = len(item_category)
    companions = np.zeros((n_items, 3), dtype=np.int64)
    for i in range(n_items):
        targets = COMPLEMENTS[categories[item_category[i]]]
        for k in range(3):
            pool = members_of[categories.index(targets[rng.integers(len(targets))])]
            weights = popularity[pool] ** 0.5
            companions[i, k] = pool[rng.choice(len(pool), p=weights / weights.sum())]
    return companions


def _pick_in_category(pool, theme_taste, user_price, item_themes, price_level, popularity, rng) -> int:
    utility = (
        6.0 * (item_themes[pool] @ theme_taste)
        - 0.9 * np.abs(price_level[pool] - user_price)
        + 0.6 * np.log(popularity[pool])
    )
    weights = np.exp(utility - utility.max())
    return int(pool[rng.choice(len(pool), p=weights / weights.sum())])


def _session(rows, user_id, item, t, theme_taste, user_price, item_themes, price_level, popularity,
             members_of, item_category, companions, rng) -> float:
    """One browsing session starting at `item`: views, maybe a cart, a purchase, a rating, a companion."""
    viewed = [item]
    for _ in range(rng.integers(0, 4)):
        viewed.append(_pick_in_category(members_of[item_category[item]], theme_taste, user_price,
                                        item_themes, price_level, popularity, rng))
    for current in dict.fromkeys(viewed):
        t += rng.uniform(0.0005, 0.01)
        rows.append((user_id, current, "view", 1.0, t))
        match = float(item_themes[current] @ theme_taste) - 0.3 * abs(price_level[current] - user_price)
        if rng.random() < 0.15 + 0.5 * max(match, 0.0):
            t += rng.uniform(0.0005, 0.01)
            rows.append((user_id, current, "cart", 1.0, t))
            if rng.random() < 0.55:
                t += rng.uniform(0.0005, 0.02)
                rows.append((user_id, current, "purchase", 1.0, t))
                if rng.random() < 0.25:
                    stars = float(np.clip(round(3.2 + 3.0 * match + rng.normal(0, 0.7)), 1, 5))
                    rows.append((user_id, current, "rating", stars, t + rng.uniform(1, 6)))
                if rng.random() < 0.4:
                    companion = int(companions[current, rng.integers(3)])
                    t += rng.uniform(0.001, 0.05)
                    rows.append((user_id, companion, "view", 1.0, t))
                    if rng.random() < 0.45:
                        t += rng.uniform(0.0005, 0.01)
                        rows.append((user_id, companion, "cart", 1.0, t))
                        t += rng.uniform(0.0005, 0.01)
                        rows.append((user_id, companion, "purchase", 1.0, t))
    return t


def generate_shop(size: ShopSize = ShopSize()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (products, interactions) for a shop of the given size; the same size gives the same shop."""
    rng = np.random.default_rng(size.seed)
    products = generate_products(size, rng)
    interactions = generate_interactions(products, size, rng)
    # Ratings can land after the window's end; the log ends at the window's end.
    end = (START + timedelta(days=size.days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return products, interactions.filter(pl.col("timestamp") <= end)


def write_shop(out_dir: Path, size: ShopSize = ShopSize()) -> tuple[Path, Path]:
    """Write products.csv and interactions.csv into `out_dir`."""
    products, interactions = generate_shop(size)
    out_dir.mkdir(parents=True, exist_ok=True)
    products_path, interactions_path = out_dir / "products.csv", out_dir / "interactions.csv"
    products.write_csv(products_path)
    interactions.write_csv(interactions_path)
    log.info("wrote %d products and %d interactions to %s", products.height, interactions.height, out_dir)
    return products_path, interactions_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    parser.add_argument("--products", type=int, default=ShopSize.products)
    parser.add_argument("--users", type=int, default=ShopSize.users)
    parser.add_argument("--days", type=int, default=ShopSize.days)
    parser.add_argument("--seed", type=int, default=ShopSize.seed)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_shop(args.out, ShopSize(products=args.products, users=args.users, days=args.days, seed=args.seed))


if __name__ == "__main__":
    main()
