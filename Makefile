# The two commands of the README. ARGS passes options through, e.g. `make run ARGS=--exit-after-smoke`.
.PHONY: run test setup lint

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/tools serve $(ARGS)

test:
	@scripts/setup.sh --test
	.venv/bin/ruff check .
	.venv/bin/python -m pytest $(ARGS)

lint: setup
	.venv/bin/ruff check .
