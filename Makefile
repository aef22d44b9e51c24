# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DATA := data/completejourney
OUT := outputs

.PHONY: install demo test lint bench-sample bench-features clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/portrait import completejourney --out $(DEMO_DATA)
	$(BIN)/portrait validate $(DEMO_DATA) --out $(OUT)/validation/completejourney
	$(BIN)/portrait features build $(DEMO_DATA) --as-of 2017-10-01 --out $(OUT)/features/completejourney_2017-10-01.parquet
	for experiment in repurchase_90d high_value_90d spend_90d; do \
		$(BIN)/portrait train experiments/$$experiment.toml && $(BIN)/portrait promote $$experiment || exit 1; \
	done
	$(BIN)/portrait personas fit experiments/personas.toml --out $(OUT)/personas/assignments.csv
	$(BIN)/portrait promote personas
	$(BIN)/portrait personas show --alias champion --out $(OUT)/personas
	@echo
	@echo "Demo outputs:"
	@echo "  data set in the contract:  $(DEMO_DATA)/"
	@echo "  validation report:         $(OUT)/validation/completejourney/report.json"
	@echo "  features as of 2017-10-01: $(OUT)/features/completejourney_2017-10-01.parquet"
	@echo "  personas (table, page):    $(OUT)/personas/personas.md, $(OUT)/personas/personas.html"
	@echo "  MLflow runs and models:    mlflow.db, mlartifacts/  (browse: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench-sample: $(STAMP)
	$(BIN)/python benchmarks/bench_sample_data.py --customers 1000000

bench-features: $(STAMP)
	$(BIN)/python benchmarks/bench_features.py

clean:
	rm -rf $(OUT) data mlruns mlartifacts mlflow.db
