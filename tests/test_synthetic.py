from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from portrait import contract
from portrait.synthetic import PERSONA_NAMES, generate_chunk, write_sample_data


def test_same_seed_gives_the_same_data_and_another_seed_does_not():
    a, b, c = generate_chunk(5, 0, 0, 500), generate_chunk(5, 0, 0, 500), generate_chunk(6, 0, 0, 500)
    for name in ("purchases", "events", "customers", "identities", "truth_personas"):
        assert a[name].equals(b[name]), name
    assert not a["purchases"].equals(c["purchases"])


def test_truth_lives_outside_the_contract_tables(small_synthetic: Path):
    truth = pd.read_csv(small_synthetic / "truth" / "personas.csv")
    assert set(truth["persona"]) == set(PERSONA_NAMES)
    assert len(PERSONA_NAMES) >= 6
    table_files = {p.name.split(".")[0] for p in small_synthetic.glob("*.parquet")}
    assert table_files == {t.name for t in contract.TABLES}
    assert "persona" not in pq.read_schema(small_synthetic / "customers.parquet").names


def _per_persona(folder: Path) -> pd.DataFrame:
    con = duckdb.connect()
    return (
        con.execute(
            f"""
        WITH truth AS (SELECT * FROM read_csv('{folder}/truth/personas.csv')),
        orders AS (
            SELECT customer_id, order_id, MIN(ts) AS ts, MAX(channel) AS channel,
                   SUM(amount) AS spend, MAX(CASE WHEN discount > 0 THEN 1 ELSE 0 END) AS promo
            FROM '{folder}/purchases.parquet' WHERE amount > 0 GROUP BY 1, 2),
        per_customer AS (
            SELECT customer_id, COUNT(*) AS orders, SUM(spend) AS spend, AVG(promo) AS promo_share,
                   AVG(CASE WHEN channel = 'app' THEN 1 ELSE 0 END) AS app_share,
                   AVG(CASE WHEN EXTRACT(day FROM ts) IN (1,2,3,4,15,16,17,18) THEN 1 ELSE 0 END) AS payday_share,
                   AVG(CASE WHEN EXTRACT(month FROM ts) IN (11, 12) THEN 1 ELSE 0 END) AS season_share
            FROM orders GROUP BY 1),
        views AS (SELECT customer_id, COUNT(*) AS views FROM '{folder}/events.parquet'
                  WHERE event_type = 'view' GROUP BY 1)
        SELECT t.persona, AVG(orders) AS orders, AVG(spend) AS spend, AVG(promo_share) AS promo_share,
               AVG(app_share) AS app_share, AVG(payday_share) AS payday_share,
               AVG(season_share) AS season_share, SUM(views) / SUM(orders) AS views_per_order,
               MAX(orders) AS max_orders
        FROM truth t JOIN per_customer p USING (customer_id) LEFT JOIN views v USING (customer_id)
        GROUP BY 1"""
        )
        .df()
        .set_index("persona")
    )


def test_planted_personas_behave_as_described(small_synthetic: Path):
    p = _per_persona(small_synthetic)
    others = p.drop(index="loyal_app_high_spender")
    assert p.loc["loyal_app_high_spender", "spend"] > 2 * others["spend"].median()
    assert p.loc["loyal_app_high_spender", "app_share"] > 0.6
    assert p.loc["promotion_hunter", "promo_share"] > 0.6 > p.drop(index="promotion_hunter")["promo_share"].max()
    assert p.loc["payday_shopper", "payday_share"] > 0.6 > p.drop(index="payday_shopper")["payday_share"].max()
    assert p.loc["seasonal_gift_buyer", "season_share"] > 0.5
    assert p.loc["browser", "views_per_order"] > 3 * p.drop(index="browser")["views_per_order"].max()
    assert p.loc["one_time_buyer", "max_orders"] == 1


def test_views_and_carts_precede_orders(small_synthetic: Path):
    con = duckdb.connect()
    share_with_view_before = con.execute(
        f"""
        WITH o AS (SELECT customer_id, order_id, MIN(ts) AS ts FROM '{small_synthetic}/purchases.parquet'
                   WHERE amount > 0 GROUP BY 1, 2)
        SELECT AVG(CASE WHEN EXISTS (
            SELECT 1 FROM '{small_synthetic}/events.parquet' e
            WHERE e.customer_id = o.customer_id AND e.event_type IN ('view', 'add_to_cart')
              AND e.ts < o.ts AND e.ts >= o.ts - INTERVAL 3 DAY) THEN 1 ELSE 0 END)
        FROM o"""
    ).fetchall()[0][0]
    assert share_with_view_before > 0.6


def test_writing_in_chunks_equals_one_chunk(tmp_path, monkeypatch):
    import portrait.synthetic as synthetic

    write_sample_data(tmp_path / "one", customers=300, seed=2)
    monkeypatch.setattr(synthetic, "CHUNK_CUSTOMERS", 100)
    write_sample_data(str(tmp_path / "three"), customers=300, seed=2)  # a folder's text, as from a script
    one = pd.read_parquet(tmp_path / "one" / "customers.parquet")
    three = pd.read_parquet(tmp_path / "three" / "customers.parquet")
    assert len(one) == len(three) == 300
    assert one["customer_id"].tolist() == three["customer_id"].tolist()
