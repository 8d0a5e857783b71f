# Set-up and the two main jobs. Every target installs what it needs into .venv first.
# GPU users: install the torch build you want into .venv first, or set TORCH_SPEC.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TASK ?= benchmarks/tinymath
JOBS ?= 2
# the demo's experiments (quick variant), chosen to show the spread of the committed full runs: full
# fine-tuning (53.2% at 800 steps, 3 seeds), LoRA (42.1%), the strongest non-LoRA method (SHADOW, 47.8%)
# and a method that scores 0% at its default lr but 36.4% at the lr its equal-budget search chose
# (RandLoRA; benchmarks/tinymath/README.md, "The equal-budget search")
DEMO_FILTER ?= full-finetuning/tiny-llama-lr_0.002,lora/tiny-llama-rank8-attention,shadow/tiny-llama-default,randlora/tiny-llama-default-tuned

.PHONY: install demo test lint format catalogue

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test,distributed,methods,math]"
	touch $@

install: $(BIN)/.installed

# The main job: a handful of representative experiments of the embedded benchmark (quick
# variant), a summary table, and the HTML report. The quick runs (150 steps) appear in the report as
# their own experiments, labelled "[quick]", beside the committed 800-step results; they never
# replace them.
demo: install
	$(BIN)/peftbench sweep $(TASK) --quick --force --jobs $(JOBS) --filter '$(DEMO_FILTER)'
	$(BIN)/peftbench report $(TASK) --include-temporary -o report.html

# The tests: the fast ones (browser and Ray included), then the golden-file check of the training
# script (slow-marked so that a plain `pytest` stays fast). `make test PYTEST_ARGS="-m slow"` for all
# slow ones.
test: install
	bash scripts/install_browser.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m slow tests/test_golden.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/peftbench lint benchmarks/tinymath benchmarks/tinymath-rl benchmarks/MetaMathQA

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerate the experiment catalogues: MetaMathQA at the reference's scale; tinymath sized to its
# base model, with full fine-tuning's lr as measured in benchmarks/tinymath/README.md (the rates
# chosen on validation are `peftbench tune`'s -tuned copies, which the catalogue leaves alone)
catalogue: install
	$(BIN)/peftbench catalogue benchmarks/MetaMathQA
	$(BIN)/peftbench catalogue benchmarks/tinymath \
		--model-config benchmarks/tinymath/base_model/config.json --full-finetuning-lr 2e-3
