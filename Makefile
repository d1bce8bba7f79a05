# make install | make test | make quickstart DATA=../shared/data
PYTHON ?= python3

.PHONY: install test test-all

# Keep an existing torch (GPU machines ship one); otherwise take the pinned CPU wheel.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==2.13.0
	@$(PYTHON) -m pip install -q -r requirements.txt

test: install
	$(PYTHON) -m pytest -q

test-all: install
	$(PYTHON) -m pytest -q -m ""
