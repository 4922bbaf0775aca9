# arml: two commands do everything on a fresh machine.
#   make reproduce   the main job: synthetic dataset + notebooks 01-07, headless, profile "cpu"
#   make test        the whole test suite (what .ci/run calls)
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROFILE ?= cpu
DATA    ?=
OUT     ?= .
# torch/torchvision pins that this project's machines install from local disk; any release in the
# pyproject range works elsewhere (e.g. make install TORCH="torch torchvision").
TORCH   ?= torch==2.14.1 torchvision==0.29.1
STAMP   := $(VENV)/.arml-installed

.PHONY: install test reproduce lab regress lint format bench gpu-check smoke-paper student site browser-check clean-data help

help:
	@echo "make reproduce   run notebooks 01-07 headless (PROFILE=$(PROFILE), DATA=<root> for real data)"
	@echo "make test        install if needed, then run the whole test suite"
	@echo "make lab         JupyterLab on notebooks/"
	@echo "make regress     re-run the notebooks: deterministic cells exactly, stage-2 scores within seed bands"
	@echo "make lint        ruff over the package, tests and notebooks"
	@echo "make bench       print timing benchmarks (not tests)"
	@echo "make gpu-check   time the paper profile's stages on a GPU (AMP, memory, projected cost) -> build/gpu_check.json"
	@echo "make site        the executed notebooks, README and docs as a static HTML site -> build/site/index.html"
	@echo "make browser-check  the site and the notebooks in headless Chromium + JupyterLab -> build/browser/*.png"
	@echo "make smoke-paper notebooks 01-07 on the paper-smoke profile (paper networks, 8 synthetic images; CPU) -> build/smoke-paper"
	@echo "make student     student copies of the notebooks, solution cells stubbed -> build/student/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

reproduce: $(STAMP)
	$(BIN)/arml reproduce --profile $(PROFILE) --out $(OUT) $(if $(DATA),--data $(DATA),)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

regress: $(STAMP)
	# nbval re-runs the committed notebooks: their results and figures go to build/regress, not over the
	# reference run's results/ and figures/ (cached stages in runs/ are reused). nbval compares the deterministic
	# cells (NBVAL_CHECK_OUTPUT, notebooks 01-03) exactly; arml.regress then compares every results file with
	# the reference: deterministic numbers exactly, stage-2 scores within a band measured from the seeds.
	rm -rf build/regress
	ARML_PROFILE=$(PROFILE) ARML_RESULTS=$(CURDIR)/build/regress/results ARML_FIGURES=$(CURDIR)/build/regress/figures \
		$(BIN)/python -m pytest --nbval-lax --sanitize-with tests/nbval_sanitize.cfg \
		-p no:cacheprovider notebooks/
	$(BIN)/python -m arml.regress results build/regress/results

lint: $(STAMP)
	$(BIN)/ruff check arml tests benchmarks notebooks
	$(BIN)/ruff format --check arml tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format arml tests benchmarks
	$(BIN)/ruff check --fix arml tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/synth_speed.py
	$(BIN)/python benchmarks/cam_speed.py --profile $(PROFILE)
	$(BIN)/python benchmarks/profile_timing.py --profile $(PROFILE)
	$(BIN)/python benchmarks/stage2_speed.py

gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --out build/gpu_check.json

site: $(STAMP)
	$(BIN)/python -m arml.site --out build/site

browser-check: site
	$(BIN)/python benchmarks/browser_check.py --site build/site --out build/browser

smoke-paper: $(STAMP)
	# The paper profile's code path (ResNet-38d + ARS at 224 px, ResNeSt-101e PSPNet peers, the paper's recipe) through
	# all seven notebooks on 8 synthetic images: a check that it runs, not results. Data, runs, results and
	# figures go to build/smoke-paper; a rerun reuses its cached stages (rm -rf build/smoke-paper to start over).
	ARML_DATA=$(CURDIR)/build/smoke-paper/data ARML_RUNS=$(CURDIR)/build/smoke-paper/runs \
		$(BIN)/arml reproduce --profile paper-smoke --out $(CURDIR)/build/smoke-paper

student: $(STAMP)
	$(BIN)/python -m arml.student --out build/student

clean-data:
	rm -rf data/synthetic runs
