from pathlib import Path

from portrait import contract

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_shows_the_contract_exactly_as_the_code_defines_it():
    assert contract.markdown_table() in README.read_text()


def test_purchases_is_the_only_required_table():
    assert [t.name for t in contract.TABLES if t.required] == ["purchases"]


def test_required_purchase_columns():
    assert [c.name for c in contract.PURCHASES.required_columns] == ["order_id", "customer_id", "ts", "amount"]
