# skiff: `make` builds build/skiff; `make demo` tells a story; `make test` runs every test.
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
ifeq ($(CI),true)
  CMAKE_FLAGS += -DSKIFF_WERROR=ON
endif
FUZZ_SECONDS ?= 15

.PHONY: all build bootstrap demo test test-unit test-asan fuzz clean

all: build

bootstrap:
	@bash scripts/bootstrap.sh

build:
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j $(JOBS)

demo: bootstrap build
	./build/skiff generate -p "Once upon a time" -n 200

test: bootstrap build test-unit test-asan fuzz

test-unit: build
	cd build && ctest --output-on-failure -j $(JOBS)

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer (clang). The fuzz targets
# live in the same build (the parsers carry libFuzzer's coverage hooks), so the engine is
# compiled with clang once.
ASAN_CONFIGURE = cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DSKIFF_SANITIZE=ON -DSKIFF_FUZZERS=ON $(CMAKE_FLAGS) >/dev/null

test-asan:
	@$(ASAN_CONFIGURE)
	@cmake --build build-asan -j $(JOBS) --target skiff skiff_tests
	cd build-asan && SKIFF_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS)

# libFuzzer targets for the parsers, each for a bounded time, as many at once as there are cores.
fuzz:
	@$(ASAN_CONFIGURE)
	@cmake --build build-asan -j $(JOBS) --target fuzzers
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/run_fuzzers.sh build-asan $(JOBS)

clean:
	rm -rf build build-asan build-fuzz
