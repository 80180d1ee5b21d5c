# whatsmyage: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# torch first, from the pinned CPU wheel: anything that pulled torch in on its own would take a
# CUDA build of several GB. mediapipe without its dependencies: its opencv-contrib-python would
# overwrite opencv-python-headless. The batch extra (Ray) too: the tests run `ml batch` on a real Ray.
# The stamp file re-runs this when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet --no-deps mediapipe==1.2.3
	$(PIP) install --quiet -e ".[dev,batch]"
	touch $@

install: $(VENV)/.installed ## create .venv and install everything

run: install migrate ## serve the API and UI on http://$(HOST):$(PORT)
	$(PY) -m api serve --host $(HOST) --port $(PORT)

migrate: install ## apply database migrations
	$(PY) -m api migrate

# The browser tests drive Debian's chromium (never a downloaded browser): installed here when it is
# missing and this is root with apt-get; otherwise they are skipped, with one line saying what to install.
CHROMIUM_PATH ?= /usr/bin/chromium
chromium: ## install Debian's chromium for the browser tests when missing (root with apt-get)
	@test -x "$(CHROMIUM_PATH)" || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ echo "installing chromium for the browser tests (apt-get, about a minute)"; \
		  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || true

# docker when a Docker engine answers, podman otherwise; see deploy/image/test.sh and docs/deployment.md.
image-test: install ## build the container image and check it in real containers (installs podman when root with apt)
	PY=$(PY) deploy/image/test.sh

purge: install ## one retention purge now (WMA_RETENTION_DAYS; the service also purges hourly)
	$(PY) -m api purge

# pytest exits 5 when it collects nothing (say, a -k that matches no test): reported, not a failure.
test: install chromium ## run the test suite (API tests on an embedded Postgres unless TEST_DATABASE_URL is set)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# lint-imports with PYTHONPATH: this checkout's packages, whichever one the venv's editable install points at.
lint: install ## ruff check, and the import rules of pyproject.toml (lint-imports)
	$(PY) -m ruff check api ml tests bench
	PYTHONPATH=$(CURDIR) $(VENV)/bin/lint-imports

fmt: install ## ruff format and fix
	$(PY) -m ruff format api ml tests bench
	$(PY) -m ruff check --fix api ml tests bench

bench: install ## benchmarks: predictor latency and memory
	$(PY) -m bench.predictor

DATA ?= ../shared/data/utkface/images
train: install ## fine-tune the age network on DATA (a UTKFace-style folder) into runs/resnet10
	$(PY) -m ml train --data $(DATA) --epochs 12 --weight-decay 0.05 --ema 0.998 --out runs/resnet10

evaluate: install ## MAE of the imported, the shipped and the one-network v3 model on DATA's validation split
	$(PY) -m ml evaluate $(DATA) --split val --weights ml/weights/cydral-resnet10-v1.onnx \
		--weights ml/weights/resnet10x3-utkface-v2.onnx --weights ml/weights/resnet10-utkface-v3.onnx

# RETRAIN_ARGS passes options through, e.g. RETRAIN_ARGS="--epochs 2 --shared-images 4000".
retrain: install migrate ## fine-tune the active model with the consented submissions; promote it only by the rule in docs/learning-loop.md
	$(PY) -m api retrain $(RETRAIN_ARGS)

MODELS := resnet10x3-utkface-v2 resnet10-utkface-v3 resnet10-utkface-v2 cydral-resnet10-v1
export: install ## re-export the shipped age models to the ONNX files the service runs (part of a release)
	for m in $(MODELS); do $(PY) -m ml export ml/weights/$$m.safetensors --out ml/weights/$$m.onnx || exit 1; done

detection-set: install ## generate the face-detection evaluation set into data/detection-set (from ../shared/data)
	$(PY) -m bench.detection_set

bench-detection: install ## faces found and false faces per category, old detector and new side by side
	test -f data/detection-set/manifest.tsv || $(PY) -m bench.detection_set
	$(PY) -m bench.detection

BACKUP ?= backups/whatsmyage-$(shell date -u +%Y%m%dT%H%M%SZ).dump
backup: install ## back up the database and photos to backups/ (or BACKUP=FILE); consistent while serving
	$(PY) -m api backup --out $(BACKUP)

bench-http: install ## HTTP load on loopback against a served app (starts and stops it itself)
	$(PY) -m bench.http_latency

bench-load: install ## 100 uploads at once, good and bad, against a served app: statuses, p99, memory, rows
	$(PY) -m bench.load

bench-attacks: install ## token guessing and leak checks against a served app: what each attack got
	$(PY) -m bench.attacks

bench-live: install ## live mode: answers a second and frame delay for 1, 2 and 4 WebSocket clients, CPU a frame
	$(PY) -m bench.live

.PHONY: help install run migrate purge test image-test lint fmt bench bench-http bench-load bench-attacks bench-live bench-detection detection-set train evaluate retrain chromium backup export
