# signgen — the targets CI and the README use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.signgen-env-key
PYTEST_ARGS ?=

.PHONY: env demo test lint format bench demo-model clean help

help:
	@echo "make env         build (or reuse) the environment and link it at .venv"
	@echo "make demo        render the bundled example with the bundled demo model"
	@echo "make test        run the test suite (builds the environment if needed)"
	@echo "make lint        ruff check + format --check"
	@echo "make demo-model  retrain the bundled demo model on the synthetic world (CPU)"

# Always run the builder: it is a no-op (a hash compare) when nothing changed.
env:
	@bash tools/build_env.sh

demo: env
	$(VENV)/bin/signgen render --video examples/first_frame.png --keypoints examples/sequence.json -o out/demo.mp4 --frames-dir out/demo_frames
	@echo "wrote out/demo.mp4"

test: env
	$(PY) -m pytest $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check signgen pipelines tests benchmarks
	$(VENV)/bin/ruff format --check signgen pipelines tests benchmarks

format: env
	$(VENV)/bin/ruff format signgen pipelines tests benchmarks
	$(VENV)/bin/ruff check --fix signgen pipelines tests benchmarks

demo-model: env
	bash tools/train_demo_model.sh

clean:
	rm -rf $(VENV) out .pytest_cache
