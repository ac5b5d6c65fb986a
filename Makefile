# Opspor: `make run` starts everything locally, `make test` runs the whole suite on real
# components. Both create the virtual environment when it is missing.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml deploy/requirements.lock | sha1sum | cut -c1-12)

.PHONY: install run test lint format bench faults clean browser

$(STAMP): pyproject.toml deploy/requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "Opspor needs $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "pip>=24" "hatchling==1.27.0"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-build-isolation \
		-c deploy/requirements.lock -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	FRESH="$(FRESH)" $(BIN)/python -m opspor_shared.devstack.run

# The browser tests (tests/web/test_browser.py) drive Debian's chromium; Playwright's own browser
# download cannot work behind municipal proxies or in CI without internet. Installed when missing.
CHROMIUM := /usr/bin/chromium

browser:
	@test -x $(CHROMIUM) || { \
		[ "$$(id -u)" = 0 ] || { echo "the browser tests need Debian's chromium: sudo apt-get install -y chromium"; exit 1; }; \
		echo "installing chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Four processes on two cores: the suite mostly waits (on services, brokers, timeouts), so it
# takes about 4 minutes instead of 10. Each file runs whole in one process (--dist loadfile),
# so a module's stack starts once; every process has its own database and broker.
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 4 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The fault suite with more pupils and three rounds per fault; prints the table of figures
# (also written to var/faults-table.md) that README "Faults and recovery" shows.
faults: $(STAMP)
	OPSPOR_FAULTS_LONG=1 $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/faults

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run
	$(BIN)/python -m tests.bench.run --only morning --service-env NOTICE_SETTLE_SECONDS=900
	$(BIN)/python -m tests.bench.bulk_import

clean:
	rm -rf $(VENV) var
