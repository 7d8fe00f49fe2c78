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
    active_days: int | None = None
    """When set, each user is active only within a window of this many days placed at random in the span (a
    shop over years whose users came and went); None: from a random first day to the span's end."""
    seed: int = 20261126

    @classmethod
    def with_events(cls, users: int, products: int, events: int, **rest) -> "ShopSize":
        """A size whose event log has about `events` rows: the median sessions per user is solved so that
        the expected sessions (lognormal, floored, at least one) times `EVENTS_PER_SESSION` give `events`."""
        wanted = events / users / EVENTS_PER_SESSION
        low, high = 1e-3, 1e4
        for _ in range(60):
            median = (low * high) ** 0.5
            low, high = (median, high) if _expected_sessions(median) < wanted else (low, median)
        return cls(products=products, users=users, mean_sessions_per_user=median, **rest)


def _expected_sessions(median: float) -> float:
    """E[max(1, floor(X))] for X lognormal with this median and `SESSIONS_SPREAD`, by quadrature."""
    z, weights = np.polynomial.hermite_e.hermegauss(80)
    sessions = np.maximum(1, np.floor(median * np.exp(SESSIONS_SPREAD * z)))
    return float(weights @ sessions / weights.sum())


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


USERS_PER_BLOCK = 50_000
"""Users simulated at once; memory stays bounded at any shop size."""
PICK_CANDIDATES = 32
"""Products drawn by popularity before a user's tastes choose among them (see `_pick`)."""
EVENTS_PER_SESSION = 4.05
"""Events in a session, on average, as observed (used to size a shop by its events)."""
SESSIONS_SPREAD = 0.8
"""Sigma of the lognormal number of sessions per user."""


@dataclass(frozen=True)
class CatalogModel:
    """What the simulation knows of each product: category, themes, price level, popularity, companions."""

    category: np.ndarray
    themes: np.ndarray
    price_level: np.ndarray
    popularity: np.ndarray
    companions: np.ndarray
    by_category: np.ndarray
    """Product rows grouped by category, each group in product order."""
    pick_keys: np.ndarray
    """For `by_category`: category + the cumulative share of popularity ** 0.6 within the category."""
    popular_keys: np.ndarray
    """The cumulative share of popularity over all products."""

    @classmethod
    def of(cls, products: pl.DataFrame, rng: np.random.Generator) -> "CatalogModel":
        n_items = products.height
        categories = list(CATEGORIES)
        category = products["category"].replace_strict(categories, list(range(len(categories)))).to_numpy()
        themes = np.zeros((n_items, len(THEMES)), dtype=np.float32)
        for i, attrs in enumerate(products["attributes"]):
            for tag in attrs.split("|"):
                if tag in THEMES:
                    themes[i, THEMES.index(tag)] = 1.0
        prices = products["price"].to_numpy()
        # Price level within the category: 0 budget, 1 mid, 2 premium.
        price_level = np.zeros(n_items, dtype=np.int64)
        for c in range(len(categories)):
            members = np.flatnonzero(category == c)
            cuts = np.quantile(prices[members], [1 / 3, 2 / 3])
            price_level[members] = np.searchsorted(cuts, prices[members])
        # Long-tailed popularity, shuffled so it is unrelated to the product id.
        popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
        rng.shuffle(popularity)
        by_category = np.argsort(category, kind="stable")
        pick_keys = np.empty(n_items)
        for c in range(len(categories)):
            group = category[by_category] == c
            weight = np.cumsum(popularity[by_category[group]] ** 0.6)
            pick_keys[group] = c + weight / weight[-1]
        members_of = [np.flatnonzero(category == c) for c in range(len(categories))]
        return cls(category=category, themes=themes, price_level=price_level, popularity=popularity,
                   companions=_companions(category, popularity, members_of, categories, rng),
                   by_category=by_category, pick_keys=pick_keys,
                   popular_keys=np.cumsum(popularity) / popularity.sum())


def generate_interactions(products: pl.DataFrame, size: ShopSize, rng: np.random.Generator) -> pl.DataFrame:
    """Simulate users with latent tastes browsing, carting, buying and rating over `size.days` days,
    a block of users at a time (vectorised, so a million users take minutes, not hours)."""
    catalog = CatalogModel.of(products, rng)
    blocks = [_simulate_users(catalog, first, min(USERS_PER_BLOCK, size.users - first), size, rng)
              for first in range(0, size.users, USERS_PER_BLOCK)]
    events = pl.concat(blocks)
    product_ids = products["product_id"]
    frame = events.select(
        user_id=pl.format("U{}", pl.col("user").add(1).cast(pl.String).str.zfill(7)),
        product_id=product_ids.gather(events["item"]),
        event_type=pl.col("event_type"),
        value=pl.col("value"),
        timestamp=(pl.lit(START) + pl.duration(microseconds=(pl.col("day") * 86_400e6).cast(pl.Int64)))
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return frame.sort(["timestamp", "user_id", "product_id", "event_type"])


def _simulate_users(catalog: CatalogModel, first: int, n_users: int, size: ShopSize,
                    rng: np.random.Generator) -> pl.DataFrame:
    """Events of users `first` .. `first + n_users - 1`: user, item, event_type, value, day (offset)."""
    n_categories = len(CATEGORIES)
    category_taste = rng.dirichlet(np.full(n_categories, 0.25), size=n_users)
    theme_taste = rng.dirichlet(np.full(len(THEMES), 0.4), size=n_users).astype(np.float32)
    user_price = rng.integers(3, size=n_users)
    # A long-tailed activity level: many light users, a few heavy ones, some with one session.
    sessions = np.maximum(1, rng.lognormal(np.log(size.mean_sessions_per_user), SESSIONS_SPREAD, size=n_users).astype(np.int64))
    user = np.repeat(np.arange(n_users), sessions)
    if size.active_days is None:
        first_day = rng.uniform(0, size.days * 0.7, size=n_users)
        start = rng.uniform(first_day[user], size.days)
    else:
        first_day = rng.uniform(0, size.days - size.active_days, size=n_users)
        start = rng.uniform(first_day[user], first_day[user] + size.active_days)

    # The session's first product: popularity-driven noise (a gift, a trend) or the user's tastes.
    noise = rng.random(len(user)) < 0.12
    first_item = np.empty(len(user), dtype=np.int64)
    first_item[noise] = np.searchsorted(catalog.popular_keys, rng.random(noise.sum()))
    taste = user[~noise]
    favourite = (rng.random(len(taste))[:, None] > np.cumsum(category_taste[taste], axis=1)).sum(axis=1)
    first_item[~noise] = _pick(catalog, np.minimum(favourite, n_categories - 1), theme_taste[taste],
                               user_price[taste], rng)

    # Up to three more views in the first product's category; repeats within a session count once.
    extra = rng.integers(0, 4, size=len(user))
    session = np.repeat(np.arange(len(user)), extra)
    more = _pick(catalog, catalog.category[first_item[session]], theme_taste[user[session]],
                 user_price[user[session]], rng)
    views = pl.DataFrame({
        "session": np.concatenate([np.arange(len(user)), session]),
        "slot": np.concatenate([np.zeros(len(user), dtype=np.int64), _position_within(session) + 1]),
        "item": np.concatenate([first_item, more]),
    }).unique(["session", "item"], keep="first").sort("session", "slot")
    s, item = views["session"].to_numpy(), views["item"].to_numpy()
    u = user[s]
    match = (np.einsum("ij,ij->i", catalog.themes[item], theme_taste[u])
             - 0.3 * np.abs(catalog.price_level[item] - user_price[u]))
    cart = rng.random(len(s)) < 0.15 + 0.5 * np.maximum(match, 0.0)
    purchase = cart & (rng.random(len(s)) < 0.55)
    rating = purchase & (rng.random(len(s)) < 0.25)
    stars = np.clip(np.round(3.2 + 3.0 * match + rng.normal(0, 0.7, size=len(s))), 1, 5)
    companion = purchase & (rng.random(len(s)) < 0.4)
    companion_item = catalog.companions[item, rng.integers(3, size=len(s))]
    companion_buys = companion & (rng.random(len(s)) < 0.45)

    # Each view opens a run of steps; `step` orders them within the session.
    step = views["slot"].to_numpy() * 8
    parts = [(s, step, item, "view", 1.0, None)]
    parts.append((s[cart], step[cart] + 1, item[cart], "cart", 1.0, None))
    parts.append((s[purchase], step[purchase] + 2, item[purchase], "purchase", 1.0, None))
    parts.append((s[companion], step[companion] + 3, companion_item[companion], "view", 1.0, None))
    parts.append((s[companion_buys], step[companion_buys] + 4, companion_item[companion_buys], "cart", 1.0, None))
    parts.append((s[companion_buys], step[companion_buys] + 5, companion_item[companion_buys], "purchase", 1.0,
                  None))
    # A rating comes one to six days after the purchase.
    parts.append((s[rating], step[rating] + 2, item[rating], "rating", stars[rating],
                  rng.uniform(1, 6, size=rating.sum())))
    events = pl.concat([
        pl.DataFrame({"session": ps, "step": pstep, "item": pitem, "event_type": pl.Series([kind] * len(ps)),
                      "value": np.broadcast_to(np.asarray(pvalue, dtype=np.float64), len(ps)),
                      "later": np.zeros(len(ps)) if plater is None else plater})
        for ps, pstep, pitem, kind, pvalue, plater in parts
    ]).sort("session", "step", "later")
    # Within a session, steps are minutes apart: day offsets accumulate from the session's start.
    gaps = rng.uniform(0.0005, 0.01, size=events.height)
    sessions_of = events["session"].to_numpy()
    elapsed = np.cumsum(gaps)
    opened = np.flatnonzero(np.r_[True, sessions_of[1:] != sessions_of[:-1]])
    elapsed -= np.repeat(elapsed[opened] - gaps[opened], np.diff(np.r_[opened, len(sessions_of)]))
    return events.select(
        user=pl.Series(first + user[sessions_of]),
        item=pl.col("item"),
        event_type=pl.col("event_type"),
        value=pl.col("value"),
        day=pl.Series(start[sessions_of] + elapsed) + pl.col("later"),
    )


def _pick(catalog: CatalogModel, category: np.ndarray, theme_taste: np.ndarray, user_price: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """One product per row from its category, with probability proportional to
    `popularity ** 0.6 * exp(6 * themes . taste - 0.9 * |price level - user's|)`: `PICK_CANDIDATES` drawn by
    popularity, then one of them by taste (Gumbel-max), a sampling-importance-resampling approximation."""
    draws = category[:, None] + rng.random((len(category), PICK_CANDIDATES))
    candidates = catalog.by_category[np.minimum(np.searchsorted(catalog.pick_keys, draws), len(catalog.pick_keys) - 1)]
    utility = (6.0 * np.einsum("icj,ij->ic", catalog.themes[candidates], theme_taste)
               - 0.9 * np.abs(catalog.price_level[candidates] - user_price[:, None]))
    chosen = np.argmax(utility + rng.gumbel(size=utility.shape), axis=1)
    return candidates[np.arange(len(category)), chosen]


def _position_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of a sorted array."""
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]]) if len(groups) else np.array([], dtype=int)
    return np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))


def _companions(item_category, popularity, members_of, categories, rng) -> np.ndarray:
    """Three fixed "bought together" companions per product, in complementary categories."""
    n_items = len(item_category)
    companions = np.zeros((n_items, 3), dtype=np.int64)
    for c, name in enumerate(categories):
        items = np.flatnonzero(item_category == c)
        targets = COMPLEMENTS[name]
        chosen = rng.integers(len(targets), size=(len(items), 3))
        for t, target in enumerate(targets):
            pool = members_of[categories.index(target)]
            weights = np.cumsum(popularity[pool] ** 0.5)
            where = chosen == t
            picks = pool[np.searchsorted(weights / weights[-1], rng.random(where.sum()))]
            rows, slots = np.nonzero(where)
            companions[items[rows], slots] = picks
    return companions


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


def next_day(products: pl.DataFrame, interactions: pl.DataFrame, changed_share: float = 0.01,
             active_share: float = 0.05, seed: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The shop a day later, for incremental nights: `changed_share` of the products get a new description
    (a fifth of those also flip their stock), and `active_share` of the users come back for a session of 1
    to ~8 events on the new day, each a product from their history or another of its category."""
    rng = np.random.default_rng(seed)
    end = interactions["timestamp"].str.to_datetime(time_zone="UTC").max()
    changed = rng.choice(products.height, size=max(1, round(changed_share * products.height)), replace=False)
    flips = changed[rng.random(len(changed)) < 0.2]
    stamp = (end + timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    row = pl.int_range(pl.len())
    products = products.with_columns(
        description=pl.when(row.is_in(changed.tolist())).then(pl.col("description") + " Now in a refreshed edition.")
        .otherwise(pl.col("description")),
        in_stock=pl.when(row.is_in(flips.tolist())).then(~pl.col("in_stock")).otherwise(pl.col("in_stock")),
        updated_at=pl.when(row.is_in(changed.tolist())).then(pl.lit(stamp)).otherwise(pl.col("updated_at")),
    )

    users = interactions["user_id"].unique().sort()
    active = users.gather(rng.choice(users.len(), size=max(1, round(active_share * users.len())), replace=False))
    history = interactions.filter(pl.col("user_id").is_in(active.implode())).select("user_id", "product_id").sort(
        "user_id")
    spans = history.group_by("user_id", maintain_order=True).len()
    starts = np.concatenate([[0], np.cumsum(spans["len"].to_numpy())[:-1]])
    per_user = 1 + rng.poisson(2.0, spans.height)
    owner = np.repeat(np.arange(spans.height), per_user)
    picked = history["product_id"].gather(starts[owner] + (rng.random(len(owner)) * spans["len"].to_numpy()[owner])
                                          .astype(np.int64))
    by_category = products.group_by("category").agg("product_id")
    siblings = dict(zip(by_category["category"], by_category["product_id"].to_list()))
    category_of = dict(zip(products["product_id"], products["category"]))
    revisit = rng.random(len(owner)) < 0.5
    chosen = [p if keep else siblings[category_of[p]][int(rng.integers(len(siblings[category_of[p]])))]
              for p, keep in zip(picked.to_list(), revisit)]
    kinds = rng.choice(["view", "cart", "purchase"], size=len(owner), p=[0.75, 0.15, 0.10])
    seconds = np.sort(rng.integers(1, 86_400, size=len(owner)))
    new = pl.DataFrame({
        "user_id": spans["user_id"].gather(owner), "product_id": chosen, "event_type": kinds, "value": 1.0,
        "timestamp": [(end + timedelta(seconds=int(s))).strftime("%Y-%m-%dT%H:%M:%SZ") for s in seconds],
    })
    return products, pl.concat([interactions, new], how="diagonal_relaxed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    parser.add_argument("--products", type=int, default=ShopSize.products)
    parser.add_argument("--users", type=int, default=ShopSize.users)
    parser.add_argument("--events", type=int, default=None,
                        help="about how many events to write (default: what the users' activity gives)")
    parser.add_argument("--days", type=int, default=ShopSize.days)
    parser.add_argument("--seed", type=int, default=ShopSize.seed)
    parser.add_argument("--active-days", type=int, default=None,
                        help="each user active within a window of this many days (a shop over years)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shape = dict(days=args.days, seed=args.seed, active_days=args.active_days)
    size = (ShopSize.with_events(args.users, args.products, args.events, **shape) if args.events
            else ShopSize(products=args.products, users=args.users, **shape))
    write_shop(args.out, size)


if __name__ == "__main__":
    main()
