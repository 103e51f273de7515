# Two commands matter: `make demo` and `make test`. Both bootstrap uv from PyPI when it is missing and
# install the exact versions pinned in uv.lock into .venv, compiled to bytecode once: where Python writes no
# bytecode cache (PYTHONDONTWRITEBYTECODE, as in many containers and CI) every process would otherwise compile
# its ~3,800 imported modules again (`camexp methods` 27 s -> 9 s of CPU here).
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --frozen

.PHONY: setup demo lint test test-all docs bench gpu-pack clean

setup:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || \
	  $(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv || \
	  $(PYTHON) -m pip install --quiet --user --break-system-packages uv
	$(UV) sync --frozen --compile-bytecode
	$(RUN) python -m compileall -q camexp

demo: setup
	$(RUN) python scripts/demo_images.py build/demo-images
	$(RUN) camexp run configs/demo.yaml --fresh

# Lint (ruff), format (ruff format) and types (mypy), all configured in pyproject.toml; part of both test targets.
lint: setup
	$(RUN) ruff check camexp scripts tests
	$(RUN) ruff format --check camexp scripts tests
	$(RUN) mypy camexp scripts

# The fast tier (every real-model check except the long end-to-end runs marked `slow`): under 5 minutes on 2 cores.
test: lint
	$(RUN) pytest -q -m "not slow"

# Everything, `slow` end-to-end runs included: what CI runs.
test-all: lint
	$(RUN) pytest -q

# The docs site (mkdocs, Material theme) into build/site. --strict: a broken link, a missing page or a page left
# out of the nav fails the build. The reference pages are generated from the code (scripts/docs_reference.py).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict

# Speed side by side (camexp vs the floor, its loader and model floors, pytorch-grad-cam, torchcam); BENCH_ARGS
# e.g. "--rounds 5 --limit 96". Then camexp per workers setting beside its loader and model floors; LOADER_ARGS
# e.g. "--limit 64 --loader-workers 0 1 auto".
# Then Score-CAM and Ablation-CAM vs their floors and the peers (about 15 minutes on 2 cores: the peers run
# every one of Lite0's 1280 channels); FAMILY_ARGS e.g. "--limit 8 --batch-size 4". Then integrated gradients,
# SmoothGrad and occlusion vs their floors and Captum; ATTRIBUTIONS_ARGS e.g. "--limit 8 --batch-size 4".
# Last, start-up: `camexp methods` and `camexp run` to its first batch, fresh processes, with the environment's bytecode
# and without; STARTUP_ARGS e.g. "--rounds 5".
bench: setup
	$(RUN) python -m scripts.bench $(BENCH_ARGS)
	$(RUN) python -m scripts.bench --loader $(LOADER_ARGS)
	$(RUN) python -m scripts.bench --family $(FAMILY_ARGS)
	$(RUN) python -m scripts.bench --attributions $(ATTRIBUTIONS_ARGS)
	$(RUN) python -m scripts.bench --startup $(STARTUP_ARGS)

# Before the one device call of a GPU check: wheels the device machine lacks -> .whl/, 150 shared images ->
# build/gpu-images/ (both git-ignored; they travel as `carry`); prints the size that travels and the run call.
# There: `bash scripts/gpu_check.sh` (docs/guide/speed-gpu.md, "Measuring on a GPU").
gpu-pack: setup
	bash scripts/gpu_pack.sh

clean:
	rm -rf build results/demo .pytest_cache
