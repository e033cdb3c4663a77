# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test build bench clean fuzz

$(VENV)/.installed: pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd ext/includes/*.pxd)
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[effects]'
	# the effects' two models (BlazeFace, selfie segmentation) ship in this wheel;
	# its declared dependencies (numpy<2, jax...) are not needed: the files are read, never imported
	$(PY) -m pip install -q --no-deps mediapipe==0.10.21
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	# Debian's chromium for the browser tests (Playwright drives it; it never downloads a browser)
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	# a real redis-server for the Redis matchmaker's tests (they start their own on loopback)
	command -v redis-server >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)
	# Janus 1.1 (Debian), a target of the side-by-side benchmark (benchmarks.compare)
	command -v janus >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq janus)
	# Go and Debian's Pion WebRTC v3 sources: benchmarks.compare builds its Pion target from them,
	# offline (tests/tools/test_pion_target.py, test_compare.py)
	(command -v go >/dev/null && [ -f /usr/share/gocode/src/github.com/pion/webrtc/go.mod ]) || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-pion-webrtc.v3-dev)
	# coturn (turnserver) and nftables for the TURN test (tests/e2e/test_turn.py): it starts its
	# own turnserver inside the private namespace and walls off UDP there with nft
	(command -v turnserver >/dev/null && PATH="$$PATH:/usr/sbin:/sbin" command -v nft >/dev/null) || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn nftables)
	touch $@

# Start the server with embedded defaults (flags: make run ARGS="--port 9000")
run: $(VENV)/.installed
	$(VENV)/bin/mediaserver $(ARGS)

# Rebuild the Cython extensions in place after editing ext/ (make run/test do it
# too, through the editable install, whenever ext/ changed)
build: $(VENV)/.installed
	$(PY) -m pip install -q 'Cython~=3.1'
	$(PY) setup.py -q build_ext --inplace

# Every test runs inside a private network namespace (mediaserver.netns), so the
# WebRTC peers can reach nothing but addresses the tests made themselves.
test: $(VENV)/.test-installed
	$(PY) -m mypy --strict mediaserver
	$(PY) -m mediaserver.netns -- $(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test-installed
	$(PY) -m mediaserver.netns -- $(PY) -m pytest benchmarks/ --benchmark-only
	$(PY) -m mediaserver.netns -- $(PY) -m benchmarks.forward

clean:
	rm -rf build $(VENV) ext/*.c ext/*.html mediaserver/*.so

# Fuzzing (tests/fuzz/README.md): coverage-guided, atheris (libFuzzer) on every parser that
# reads outside bytes. How: atheris is built from source with clang, which makes its
# asan_with_fuzzer.so (AddressSanitizer with libFuzzer linked in); the Cython
# extensions are rebuilt with MEDIASERVER_SANITIZE=address,fuzzer-no-link (clang:
# ASan + libFuzzer's coverage counters) into build/fuzz-asan, never over the tree's
# own build: the native targets (rtp, srtp, router) put build/fuzz-asan first on
# mediaserver's package path and run with that .so in LD_PRELOAD. Then each target
# runs FUZZ_RUNS inputs, one at a time, pinned to CPU FUZZ_CPU, over tests/fuzz/corpus/;
# a crash, a hang (-timeout) or memory past -rss_limit_mb stops it, with the input
# in tests/fuzz/crashes/ (make it a test in tests/tools/test_fuzz_regressions.py).
#   make fuzz FUZZ_RUNS=100000 FUZZ_ARGS="sdp stun"     # fewer runs, some targets
#   make fuzz FUZZ_ARGS="--merge"                        # also re-minimise tests/fuzz/corpus/
FUZZ_RUNS ?= 1000000
FUZZ_CPU ?= 1
FUZZ_ARGS ?=
FUZZ_ASAN := build/fuzz-asan

fuzz: $(VENV)/.test-installed
	command -v clang >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-dev)
	[ -f "$$($(PY) -c 'import atheris; print(atheris.path())' 2>/dev/null)/asan_with_fuzzer.so" ] || \
		CC=clang CXX=clang++ $(PY) -m pip install -q --force-reinstall --no-deps --no-binary atheris atheris
	CC=clang LDSHARED="clang -shared" MEDIASERVER_SANITIZE=address,fuzzer-no-link \
		MEDIASERVER_EXT=_rtp,_srtp,_router \
		$(PY) setup.py -q build_ext --build-lib $(FUZZ_ASAN) --build-temp $(FUZZ_ASAN)/tmp
	$(PY) -m tests.fuzz.run --runs $(FUZZ_RUNS) --asan $(FUZZ_ASAN) --cpu $(FUZZ_CPU) $(FUZZ_ARGS)
