# signgen — the targets CI and the README use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.signgen-env-key
PYTEST_ARGS ?=

.PHONY: env demo test lint format bench demo-model clean help

help:
	@echo "make env         build (or reuse) the environment and link it at .venv"
	@echo "make demo        render the bundled example with the bundled demo model (+ side by side)"
	@echo "make test        run the test suite (builds the environment if needed)"
	@echo "make lint        ruff check + format --check"
	@echo "make demo-model  retrain the bundled demo model on the synthetic world (CPU)"

# Always run the builder: it is a no-op (a hash compare) when nothing changed.
env:
	@bash tools/build_env.sh

# The render, then the same clip side by side (first frame | pose | render | ground truth,
# when examples/ holds it) as a video and as a PNG strip of a few frames.
demo: env
	$(VENV)/bin/signgen render --video examples/first_frame.png --keypoints examples/sequence.json -o out/demo.mp4 --frames-dir out/demo_frames
	$(PY) tools/demo_sheet.py --first examples/first_frame.png --keypoints examples/sequence.json \
		--render out/demo_frames $(if $(wildcard examples/ground_truth.mp4),--truth examples/ground_truth.mp4) \
		--video out/demo_side_by_side.mp4 --strip out/demo_strip.png
	@echo "wrote out/demo.mp4, out/demo_side_by_side.mp4 and out/demo_strip.png"

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
