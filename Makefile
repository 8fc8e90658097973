# aiowal developer tasks. `make test` and `make demo` work on a fresh machine: they create .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest demo bench soak sanitize proto wheel-check clean

$(STAMP): pyproject.toml setup.py src/aiowal/_speedups.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not soak"

soak: $(STAMP)
	AIOWAL_SOAK=1 $(BIN)/pytest -q -p no:cacheprovider -m soak

demo: $(STAMP)
	$(BIN)/python examples/cluster/demo.py
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.plot bench-results/latest.json

# The C accelerator under AddressSanitizer and UBSan: its own tests and fuzz, then the suites that drive it hardest
# (fixtures, model, bad input, corruption fuzz, contract, the async storage and its sync worker); then the normal
# build is put back. PYTHONMALLOC=malloc: Python's own objects in ASan's heap too, so a stale pointer into a list or
# an object freed by a getter is caught; --capture=sys and no faulthandler: the sanitizers' reports reach stderr.
SPEEDUPS_SO = $(shell $(BIN)/python -c "import sysconfig; print('src/aiowal/_speedups' + sysconfig.get_config_var('EXT_SUFFIX'))" 2>/dev/null)
SANITIZE_TESTS = tests/test_speedups.py tests/test_speedups_fuzz.py tests/test_model.py tests/test_bad_input.py \
	tests/test_dgraph_fixtures.py tests/crash/test_corruption_fuzz.py tests/test_storage_contract.py tests/test_aio.py
sanitize: $(STAMP)
	cc -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -shared -fPIC \
		-I$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['include'])") \
		src/aiowal/_speedups.c -o $(SPEEDUPS_SO)
	LD_PRELOAD="$$(cc -print-file-name=libasan.so) $$(cc -print-file-name=libubsan.so)" PYTHONMALLOC=malloc \
		ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(BIN)/pytest -q -p no:cacheprovider -p no:faulthandler --capture=sys -m "not soak" \
		--aiowal-path=c-accelerator $(SANITIZE_TESTS); \
		status=$$?; $(BIN)/python setup.py -q build_ext --inplace --force; exit $$status

proto: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --mypy_out=src \
		src/aiowal/raftpb/raft.proto src/aiowal/badgerpb/badger.proto

# Build the wheel (offline: no build isolation), install it in a fresh venv and run the installed command there,
# `aiowal bench` included, away from the source tree; tests/test_packaging.py holds the steps.
wheel-check: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/test_packaging.py

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache .pytest_cache
