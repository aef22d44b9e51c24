"""Synthetic customer data with known truth, at any size, in the contract.

Seven latent personas with distinct behaviour are planted (their truth goes to
``truth/personas.csv``, outside the contract's tables):

======================  ==================================================================
persona                 behaviour
======================  ==================================================================
loyal_app_high_spender  frequent, large full-price baskets on the app, premium brands
promotion_hunter        buys mostly on discount, in store, often right after a campaign
payday_shopper          buys in the days after the 1st and the 15th of the month, on the web
browser                 views and carts a lot, buys rarely
one_time_buyer          one order, then gone
lapsing_regular         a regular until a lapse date, then silent (service contacts before)
seasonal_gift_buyer     buys mainly from mid-November to Christmas, large baskets
======================  ==================================================================

Events precede purchases: views in the three days before an order, a cart shortly before
most web and app orders, campaigns received before campaign-driven orders. About 2% of
customers also use a second account (id ``W...``) sharing a phone hash with their main one
(``truth/duplicate_ids.csv``).

Generation is vectorised per chunk of customers and written as Parquet row groups, so memory
stays bounded at any size. Each chunk's random stream derives from (seed, chunk index), so the
output depends only on the seed and the number of customers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from portrait.adapters._write import SYNTHETIC, check_target_folder
from portrait.contract import KNOWN_EVENT_TYPES
from portrait.files import atomic_target

CHUNK_CUSTOMERS = 50_000
START = np.datetime64("2023-01-01T00:00:00", "s")
DAYS = 731  # two years: 2023-01-01 to 2024-12-31
DAY_S = 86_400
# Scales every persona's order rate so that the average customer has about 20 purchase lines.
ORDER_RATE_SCALE = 0.62

CATEGORIES = np.array(
    [
        "grocery",
        "fresh",
        "beverages",
        "household",
        "beauty",
        "baby",
        "electronics",
        "fashion",
        "home",
        "toys",
        "sports",
        "books",
    ]
)
CATEGORY_PRICE = np.array([4.0, 6.0, 3.5, 8.0, 18.0, 15.0, 80.0, 35.0, 28.0, 20.0, 30.0, 12.0])
BRAND_TIERS = np.array(["premium", "standard", "value"])
BRAND_FACTOR = np.array([1.6, 1.0, 0.65])
CHANNELS = np.array(["app", "web", "store"])
PAYMENTS = np.array(["card", "wallet", "cash", "paylater"])
EVENT_TYPES = np.array(KNOWN_EVENT_TYPES)
EV = {name: i for i, name in enumerate(EVENT_TYPES)}
REGIONS = np.array(["north", "south", "east", "west", "central"])
AGE_BANDS = np.array(["18-24", "25-34", "35-44", "45-54", "55-64", "65+"])
GENDERS = np.array(["female", "male", "unknown"])
MEMBERSHIP = np.array(["basic", "silver", "gold"])
# Campaigns: two a month, on the 3rd and the 17th, at 09:00.
CAMPAIGN_DAYS = np.array(
    [
        (np.datetime64(f"{y}-{m:02d}-{d:02d}") - START.astype("datetime64[D]")).astype(int)
        for y in (2023, 2024)
        for m in range(1, 13)
        for d in (3, 17)
    ]
)


@dataclass(frozen=True)
class Persona:
    name: str
    weight: float
    orders_per_month: float
    aov_factor: float  # price level multiplier
    channel_p: tuple[float, float, float]  # app, web, store
    payment_p: tuple[float, float, float, float]
    promo_p: float  # share of orders bought on discount
    campaign_response_p: float
    views_per_order: float
    cart_p: float
    browse_per_month: float
    searches_per_month: float
    premium_p: float
    hour_mean: float
    category_focus: tuple[int, ...]
    age_p: tuple[float, ...]
    gold_p: float


PERSONAS: tuple[Persona, ...] = (
    Persona(
        "loyal_app_high_spender",
        0.12,
        2.6,
        1.8,
        (0.8, 0.1, 0.1),
        (0.6, 0.35, 0.0, 0.05),
        0.05,
        0.02,
        3.0,
        0.9,
        1.5,
        2.0,
        0.65,
        20.0,
        (6, 4, 7),
        (0.03, 0.2, 0.32, 0.3, 0.1, 0.05),
        0.6,
    ),
    Persona(
        "promotion_hunter",
        0.18,
        1.3,
        0.7,
        (0.1, 0.2, 0.7),
        (0.35, 0.05, 0.55, 0.05),
        0.8,
        0.35,
        1.0,
        0.3,
        0.8,
        1.0,
        0.05,
        11.0,
        (0, 3, 2),
        (0.05, 0.15, 0.2, 0.25, 0.2, 0.15),
        0.15,
    ),
    Persona(
        "payday_shopper",
        0.15,
        1.1,
        1.0,
        (0.2, 0.7, 0.1),
        (0.5, 0.15, 0.05, 0.3),
        0.2,
        0.05,
        2.0,
        0.8,
        1.0,
        1.5,
        0.25,
        19.0,
        (7, 8, 10),
        (0.15, 0.35, 0.3, 0.12, 0.05, 0.03),
        0.2,
    ),
    Persona(
        "browser",
        0.15,
        0.12,
        1.0,
        (0.45, 0.5, 0.05),
        (0.5, 0.4, 0.0, 0.1),
        0.2,
        0.02,
        6.0,
        0.5,
        14.0,
        6.0,
        0.3,
        22.0,
        (6, 7, 8),
        (0.3, 0.35, 0.2, 0.1, 0.04, 0.01),
        0.05,
    ),
    Persona(
        "one_time_buyer",
        0.15,
        0.0,
        0.9,
        (0.3, 0.5, 0.2),
        (0.6, 0.2, 0.1, 0.1),
        0.3,
        0.0,
        2.0,
        0.6,
        0.3,
        0.3,
        0.2,
        15.0,
        (9, 11, 4),
        (0.2, 0.25, 0.2, 0.15, 0.1, 0.1),
        0.02,
    ),
    Persona(
        "lapsing_regular",
        0.13,
        1.8,
        1.1,
        (0.3, 0.3, 0.4),
        (0.6, 0.2, 0.15, 0.05),
        0.2,
        0.05,
        1.5,
        0.6,
        1.0,
        1.0,
        0.3,
        14.0,
        (0, 1, 5),
        (0.05, 0.2, 0.3, 0.25, 0.12, 0.08),
        0.3,
    ),
    Persona(
        "seasonal_gift_buyer",
        0.12,
        0.35,
        1.5,
        (0.35, 0.45, 0.2),
        (0.7, 0.2, 0.05, 0.05),
        0.25,
        0.1,
        2.5,
        0.7,
        0.5,
        1.0,
        0.5,
        18.0,
        (9, 6, 7),
        (0.05, 0.15, 0.3, 0.3, 0.15, 0.05),
        0.15,
    ),
)
PERSONA_NAMES = np.array([p.name for p in PERSONAS])


def _persona_array(attribute: str) -> np.ndarray:
    return np.array([getattr(p, attribute) for p in PERSONAS], dtype=float)


def _category_probabilities() -> np.ndarray:
    probs = np.full((len(PERSONAS), len(CATEGORIES)), 0.3)
    for i, persona in enumerate(PERSONAS):
        for rank, category in enumerate(persona.category_focus):
            probs[i, category] += 4.0 / (rank + 1)
    return probs / probs.sum(axis=1, keepdims=True)


def _pick(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One draw per row of a (rows, options) probability matrix."""
    cumulative = probabilities.cumsum(axis=1)
    u = rng.random(len(probabilities))[:, None]
    return np.minimum((u > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def _dictionary(indices: np.ndarray, values: np.ndarray) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), pa.array(values.tolist()))


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(START + seconds.astype("timedelta64[s]"), type=pa.timestamp("s"))


PURCHASES_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("customer_id", pa.dictionary(pa.int32(), pa.string())),
        ("ts", pa.timestamp("s")),
        ("amount", pa.float64()),
        ("quantity", pa.float64()),
        ("product_id", pa.string()),
        ("category", pa.dictionary(pa.int32(), pa.string())),
        ("brand", pa.dictionary(pa.int32(), pa.string())),
        ("channel", pa.dictionary(pa.int32(), pa.string())),
        ("payment_method", pa.dictionary(pa.int32(), pa.string())),
        ("discount", pa.float64()),
        ("store_id", pa.dictionary(pa.int32(), pa.string())),
    ]
)
EVENTS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.dictionary(pa.int32(), pa.string())),
        ("ts", pa.timestamp("s")),
        ("event_type", pa.dictionary(pa.int32(), pa.string())),
        ("channel", pa.dictionary(pa.int32(), pa.string())),
        ("category", pa.dictionary(pa.int32(), pa.string())),
        ("value", pa.float64()),
    ]
)


def generate_chunk(seed: int, chunk: int, first: int, n: int) -> dict[str, pa.Table]:
    """Customers ``first .. first + n - 1`` of the data set, all tables."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk]))
    weights = _persona_array("weight")
    persona = rng.choice(len(PERSONAS), size=n, p=weights / weights.sum())
    ids = np.char.add("C", np.char.zfill(np.arange(first, first + n).astype(str), 8))
    has_alt = rng.random(n) < 0.02
    alt_ids = np.char.add("W", np.char.zfill(np.arange(first, first + n).astype(str), 8))
    id_dictionary = np.concatenate([ids, alt_ids])

    # Active span: signup somewhere in the first 20 months; lapsing regulars stop 3-9 months in.
    signup = rng.integers(0, 600, size=n)
    end = np.full(n, DAYS - 1)
    lapsing = persona == _index("lapsing_regular")
    end[lapsing] = np.minimum(signup[lapsing] + rng.integers(90, 270, size=lapsing.sum()), DAYS - 1)
    span_days = end - signup + 1
    activity = rng.gamma(4.0, 0.25, size=n)  # individual intensity around the persona's mean

    campaign_tables, response_customer, response_seconds = _campaigns(rng, persona, signup, end)

    rate = _persona_array("orders_per_month")[persona] * activity * ORDER_RATE_SCALE
    n_orders = rng.poisson(rate * span_days / 30.4)
    n_orders = np.maximum(n_orders, 1)  # every customer has a first order at signup
    n_orders[persona == _index("one_time_buyer")] = 1
    order_customer = np.repeat(np.arange(n), n_orders)
    rank = np.arange(len(order_customer)) - np.repeat(np.cumsum(n_orders) - n_orders, n_orders)
    day = signup[order_customer] + (rng.random(len(order_customer)) * span_days[order_customer]).astype(int)
    day[rank == 0] = signup[order_customer[rank == 0]]
    day = _payday_days(rng, day, persona[order_customer], signup[order_customer], end[order_customer])
    day = _seasonal_days(rng, day, persona[order_customer], signup[order_customer], end[order_customer])
    hours = np.clip(rng.normal(_persona_array("hour_mean")[persona[order_customer]], 2.5), 7, 23.9)
    seconds = day.astype(np.int64) * DAY_S + (hours * 3600).astype(np.int64)
    # Campaign-driven orders: a few hours to five days after the campaign arrived.
    order_customer = np.concatenate([order_customer, response_customer])
    seconds = np.concatenate([seconds, response_seconds])
    purchases, order_info = _purchases(rng, first, order_customer, seconds, persona, ids, alt_ids, has_alt)
    events = _events(rng, first, persona, signup, end, order_info, campaign_tables, ids, alt_ids, has_alt)
    customers = _customers(rng, ids, persona, signup)
    identities = _identities(rng, ids, alt_ids, has_alt)
    truth = pa.table({"customer_id": ids, "persona": PERSONA_NAMES[persona]})
    duplicates = pa.table({"alt_customer_id": alt_ids[has_alt], "customer_id": ids[has_alt]})
    del id_dictionary
    return {
        "purchases": purchases,
        "events": events,
        "customers": customers,
        "identities": identities,
        "truth_personas": truth,
        "truth_duplicates": duplicates,
    }


def _index(name: str) -> int:
    return int(np.flatnonzero(PERSONA_NAMES == name)[0])


def _campaigns(rng, persona, signup, end):
    n = len(persona)
    received = rng.random((n, len(CAMPAIGN_DAYS))) < 0.35
    received &= (CAMPAIGN_DAYS[None, :] >= signup[:, None]) & (CAMPAIGN_DAYS[None, :] <= end[:, None])
    customer, campaign = np.nonzero(received)
    at = CAMPAIGN_DAYS[campaign].astype(np.int64) * DAY_S + 9 * 3600
    responds = rng.random(len(customer)) < _persona_array("campaign_response_p")[persona[customer]]
    response_seconds = at[responds] + rng.integers(3 * 3600, 5 * DAY_S, size=responds.sum())
    keep = response_seconds < DAYS * DAY_S
    clicked = responds | (rng.random(len(customer)) < 0.05)
    return (customer, campaign, at, clicked), customer[responds][keep], response_seconds[keep]


def _payday_days(rng, day, order_persona, signup, end):
    moved = (order_persona == _index("payday_shopper")) & (rng.random(len(day)) < 0.8)
    dates = START.astype("datetime64[D]") + day[moved]
    month_start = dates.astype("datetime64[M]").astype("datetime64[D]")
    offset = rng.choice(np.array([0, 1, 2, 3, 14, 15, 16, 17]), size=moved.sum())
    new_day = (month_start + offset - START.astype("datetime64[D]")).astype(int)
    ok = (new_day >= signup[moved]) & (new_day <= end[moved])
    day = day.copy()
    day[np.flatnonzero(moved)[ok]] = new_day[ok]
    return day


def _seasonal_days(rng, day, order_persona, signup, end):
    moved = (order_persona == _index("seasonal_gift_buyer")) & (rng.random(len(day)) < 0.75)
    year = (START.astype("datetime64[D]") + day[moved]).astype("datetime64[Y]").astype(int) + 1970
    season_start = np.where(year == 2023, 318, 318 + 366)  # 15 November of that year
    new_day = season_start + rng.integers(0, 40, size=moved.sum())
    ok = (new_day >= signup[moved]) & (new_day <= end[moved])
    day = day.copy()
    day[np.flatnonzero(moved)[ok]] = new_day[ok]
    return day


def _purchases(rng, first, order_customer, seconds, persona, ids, alt_ids, has_alt):
    n_orders = len(order_customer)
    order_persona = persona[order_customer]
    channel = _pick(rng, np.array([p.channel_p for p in PERSONAS])[order_persona])
    payment = _pick(rng, np.array([p.payment_p for p in PERSONAS])[order_persona])
    on_promo = rng.random(n_orders) < _persona_array("promo_p")[order_persona]
    main_category = _pick(rng, _category_probabilities()[order_persona])
    order_number = np.arange(n_orders)
    # Second accounts place some of their person's web and app orders.
    via_alt = has_alt[order_customer] & (channel != 2) & (rng.random(n_orders) < 0.5)

    lines = 1 + rng.poisson(1.4, size=n_orders)
    line_order = np.repeat(order_number, lines)
    first_line = np.concatenate([[True], line_order[1:] != line_order[:-1]])
    line_persona = order_persona[line_order]
    category = np.where(first_line, main_category[line_order], _pick(rng, _category_probabilities()[line_persona]))
    premium = rng.random(len(line_order)) < _persona_array("premium_p")[line_persona]
    tier = np.where(premium, 0, rng.integers(1, 3, size=len(line_order)))
    price = (
        CATEGORY_PRICE[category]
        * BRAND_FACTOR[tier]
        * _persona_array("aov_factor")[line_persona]
        * rng.lognormal(0.0, 0.3, size=len(line_order))
    )
    quantity = 1 + rng.poisson(0.4, size=len(line_order))
    gross = np.round(price * quantity, 2)
    discounted = on_promo[line_order] & (rng.random(len(line_order)) < 0.85)
    discount = np.where(discounted, np.round(gross * rng.uniform(0.1, 0.45, len(line_order)), 2), 0.0)
    amount = gross - discount
    product = category * 1000 + tier * 100 + rng.integers(0, 50, size=len(line_order))
    line_ts = seconds[line_order]
    customer_index = order_customer[line_order] + np.where(via_alt[line_order], len(ids), 0)
    order_ids = np.char.add(np.char.add("O", str(first).zfill(8) + "-"), line_order.astype(str))

    # About 1.5% of lines are returned 3-20 days later: a negative line in a return order.
    returned = rng.random(len(line_order)) < 0.015
    return_ts = line_ts[returned] + rng.integers(3, 21, size=returned.sum()) * DAY_S
    keep = return_ts < DAYS * DAY_S
    r = np.flatnonzero(returned)[keep]
    all_rows = np.concatenate([np.arange(len(line_order)), r])
    is_return = np.concatenate([np.zeros(len(line_order), bool), np.ones(len(r), bool)])
    ts = np.concatenate([line_ts, return_ts[keep]])
    order_id = np.where(is_return, np.char.add(order_ids[all_rows], "-R"), order_ids[all_rows])
    sign = np.where(is_return, -1.0, 1.0)
    store = np.where(channel[line_order] == 2, rng.integers(0, 40, size=len(line_order)), 40 + channel[line_order])
    id_dictionary = np.concatenate([ids, alt_ids])
    table = pa.table(
        {
            "order_id": pa.array(order_id),
            "customer_id": _dictionary(customer_index[all_rows], id_dictionary),
            "ts": _timestamps(ts),
            "amount": np.round(amount[all_rows] * sign, 2),
            "quantity": (quantity[all_rows] * sign).astype(float),
            "product_id": pa.array(np.char.add("P", product[all_rows].astype(str))),
            "category": _dictionary(category[all_rows], CATEGORIES),
            "brand": _dictionary(
                category[all_rows] * 3 + tier[all_rows],
                np.char.add(np.repeat(CATEGORIES, 3), np.tile(np.char.add("_", BRAND_TIERS), len(CATEGORIES))),
            ),
            "channel": _dictionary(channel[line_order][all_rows], CHANNELS),
            "payment_method": _dictionary(payment[line_order][all_rows], PAYMENTS),
            "discount": np.where(is_return, 0.0, discount[all_rows]),
            "store_id": _dictionary(store[all_rows], np.array([f"S{i:03d}" for i in range(43)])),
        },
        schema=PURCHASES_SCHEMA,
    )
    order_info = {
        "customer": order_customer,
        "seconds": seconds,
        "channel": channel,
        "category": main_category,
        "on_promo": on_promo,
        "via_alt": via_alt,
        "value": np.bincount(line_order, weights=discount, minlength=n_orders),
    }
    return table, order_info


def _events(rng, first, persona, signup, end, orders, campaigns, ids, alt_ids, has_alt):
    parts_customer, parts_ts, parts_type, parts_channel, parts_category, parts_value = [], [], [], [], [], []

    def add(customer, ts, event_type, channel, category, value=None):
        parts_customer.append(customer)
        parts_ts.append(ts)
        parts_type.append(
            np.full(len(customer), EV[event_type])
            if np.isscalar(event_type) or isinstance(event_type, str)
            else event_type
        )
        parts_channel.append(channel)
        parts_category.append(category)
        parts_value.append(np.full(len(customer), np.nan) if value is None else value)

    n = len(persona)
    order_customer = orders["customer"]
    order_persona = persona[order_customer]
    cust_index = order_customer + np.where(orders["via_alt"], n, 0)
    # Views in the three days before each order, in its main category.
    views = rng.poisson(_persona_array("views_per_order")[order_persona])
    o = np.repeat(np.arange(len(order_customer)), views)
    add(
        cust_index[o],
        np.maximum(orders["seconds"][o] - rng.integers(600, 3 * DAY_S, len(o)), 0),
        "view",
        np.minimum(orders["channel"][o], 1),
        orders["category"][o],
    )
    online = orders["channel"] != 2
    carted = online & (rng.random(len(order_customer)) < _persona_array("cart_p")[order_persona])
    o = np.flatnonzero(carted)
    add(
        cust_index[o],
        np.maximum(orders["seconds"][o] - rng.integers(60, 7200, len(o)), 0),
        "add_to_cart",
        orders["channel"][o],
        orders["category"][o],
    )
    promo = np.flatnonzero(orders["on_promo"] & (rng.random(len(order_customer)) < 0.5))
    add(
        cust_index[promo],
        orders["seconds"][promo],
        "coupon_redeemed",
        orders["channel"][promo],
        orders["category"][promo],
        np.round(orders["value"][promo], 2),
    )

    span_months = (end - signup + 1) / 30.4
    category_p = _category_probabilities()
    for event_type, rate_name in (("view", "browse_per_month"), ("search", "searches_per_month")):
        k = rng.poisson(_persona_array(rate_name)[persona] * span_months)
        c = np.repeat(np.arange(n), k)
        ts = (signup[c] + rng.random(len(c)) * (end[c] - signup[c] + 1)) * DAY_S
        ts = ts.astype(np.int64)
        channel = rng.integers(0, 2, len(c))
        category = _pick(rng, category_p[persona[c]])
        add(c, ts, event_type, channel, category)
        if event_type == "view":
            # Some browsing ends in an abandoned cart or a favourite.
            for follow, share in (("add_to_cart", 0.12), ("favorite", 0.05)):
                f = np.flatnonzero(rng.random(len(c)) < share)
                add(c[f], ts[f] + 120, follow, channel[f], category[f])

    customer, campaign, at, clicked = campaigns
    add(
        customer, at, "campaign_received", np.full(len(customer), 1), np.full(len(customer), -1), campaign.astype(float)
    )
    click = np.flatnonzero(clicked)
    add(
        customer[click],
        at[click] + rng.integers(600, DAY_S, len(click)),
        "campaign_click",
        np.zeros(len(click), int),
        np.full(len(click), -1),
        campaign[click].astype(float),
    )
    service_rate = np.where(persona == _index("lapsing_regular"), 0.25, 0.04)
    k = rng.poisson(service_rate * span_months)
    c = np.repeat(np.arange(n), k)
    ts = (np.maximum(end[c] - rng.integers(0, 60, len(c)), signup[c]) * DAY_S + 10 * 3600).astype(np.int64)
    add(c, ts, "service_contact", np.full(len(c), 2), np.full(len(c), -1))
    reviewed = np.flatnonzero(rng.random(len(order_customer)) < 0.05)
    add(
        cust_index[reviewed],
        orders["seconds"][reviewed] + 7 * DAY_S,
        "review",
        orders["channel"][reviewed],
        orders["category"][reviewed],
        rng.integers(1, 6, len(reviewed)).astype(float),
    )

    ts = np.concatenate(parts_ts)
    keep = ts < DAYS * DAY_S
    category = np.concatenate(parts_category)[keep]
    id_dictionary = np.concatenate([ids, alt_ids])
    return pa.table(
        {
            "customer_id": _dictionary(np.concatenate(parts_customer)[keep], id_dictionary),
            "ts": _timestamps(ts[keep]),
            "event_type": _dictionary(np.concatenate(parts_type)[keep], EVENT_TYPES),
            "channel": _dictionary(np.concatenate(parts_channel)[keep], CHANNELS),
            "category": pa.DictionaryArray.from_arrays(
                pa.array(category.astype(np.int32), mask=category < 0), pa.array(CATEGORIES.tolist())
            ),
            "value": pa.array(np.concatenate(parts_value)[keep], from_pandas=True),
        },
        schema=EVENTS_SCHEMA,
    )


def _customers(rng, ids, persona, signup):
    age = _pick(rng, np.array([p.age_p for p in PERSONAS])[persona])
    gold = rng.random(len(ids)) < _persona_array("gold_p")[persona]
    membership = np.where(gold, 2, rng.integers(0, 2, len(ids)))
    return pa.table(
        {
            "customer_id": pa.array(ids),
            "signup_date": pa.array(START.astype("datetime64[D]") + signup),
            "gender": pa.array(GENDERS[rng.choice(3, size=len(ids), p=[0.52, 0.44, 0.04])]),
            "age_band": pa.array(AGE_BANDS[age]),
            "region": pa.array(REGIONS[rng.integers(0, len(REGIONS), len(ids))]),
            "membership_level": pa.array(MEMBERSHIP[membership]),
        }
    )


def _identities(rng, ids, alt_ids, has_alt):
    phone = np.char.add("ph_", rng.integers(10**11, 10**12, len(ids)).astype(str))
    email = np.char.add("em_", rng.integers(10**11, 10**12, len(ids)).astype(str))
    alt = np.flatnonzero(has_alt)
    return pa.table(
        {
            "customer_id": np.concatenate([ids, ids, alt_ids[alt]]),
            "id_type": np.concatenate(
                [np.full(len(ids), "phone_hash"), np.full(len(ids), "email_hash"), np.full(len(alt), "phone_hash")]
            ),
            "id_value": np.concatenate([phone, email, phone[alt]]),
        }
    )


TABLE_FILES = {
    "purchases": "purchases.parquet",
    "events": "events.parquet",
    "customers": "customers.parquet",
    "identities": "identities.parquet",
    "truth_personas": "truth/personas.csv",
    "truth_duplicates": "truth/duplicate_ids.csv",
}


def write_sample_data(
    out_dir: str | Path, customers: int, seed: int, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Write a synthetic data set of ``customers`` customers into ``out_dir`` (a path or its
    text); return row counts.

    Each file is written under a temporary name and renamed when complete.
    """
    if customers < 1:
        raise ValueError("customers must be at least 1")
    out_dir = Path(out_dir)
    check_target_folder(out_dir, SYNTHETIC)  # another data set's tables would stay beside these
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(exist_ok=True)
    writers: dict[str, object] = {}
    counts = dict.fromkeys(TABLE_FILES, 0)
    with contextlib.ExitStack() as renames:
        # Every file is renamed into place only when all of them are complete.
        temporary = {name: renames.enter_context(atomic_target(out_dir / file)) for name, file in TABLE_FILES.items()}
        try:
            for chunk, first in enumerate(range(0, customers, CHUNK_CUSTOMERS)):
                size = min(CHUNK_CUSTOMERS, customers - first)
                for name, table in generate_chunk(seed, chunk, first, size).items():
                    writer = writers.get(name)
                    if writer is None:
                        writer = writers[name] = _open_writer(temporary[name], TABLE_FILES[name], table.schema)
                    writer.write_table(table) if isinstance(writer, pq.ParquetWriter) else writer.write(table)
                    counts[name] += table.num_rows
                if progress:
                    progress(size)
        finally:
            for writer in writers.values():
                writer.close()
    return counts


def _open_writer(path: Path, final_name: str, schema: pa.Schema):
    if final_name.endswith(".csv"):
        import pyarrow.csv as pacsv

        return pacsv.CSVWriter(str(path), schema)
    return pq.ParquetWriter(str(path), schema, compression="zstd")
