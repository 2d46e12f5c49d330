# gatemq - secure multi-tenant MQTT 3.1.1 broker
#
#   make            build gatemq and the tools (build/)
#   make run        install missing packages, build, make dev certificates, run on conf/dev.conf
#   make test       install, build, run unit + integration tests, then again under ASan+UBSan
#   make bench      benchmark gatemq against Mosquitto side by side
#
# Objects go to $(B)/ (build/ by default, build/asan for the sanitizer build).

B        ?= build
CC       ?= cc
SAN      ?=
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
            -fno-strict-aliasing -I. -Iprotocol $(SAN)
LDFLAGS  += $(SAN)
LIBS     := -lev -lmbedtls -lmbedx509 -lmbedcrypto -lsqlite3 -ljson-c -lcurl -lpthread -lm
TESTLIBS := -lcmocka

PROTO_SRC  := $(wildcard protocol/*.c)
BROKER_SRC := $(filter-out broker/main.c,$(wildcard broker/*.c))
AUTH_SRC   := $(wildcard auth/*.c)
STORE_SRC  := $(wildcard store/*.c)
CORE_SRC   := $(PROTO_SRC) $(BROKER_SRC) $(AUTH_SRC) $(STORE_SRC)
CORE_OBJ   := $(CORE_SRC:%.c=$(B)/%.o)
PROTO_OBJ  := $(PROTO_SRC:%.c=$(B)/%.o)

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
IT_SRC     := $(wildcard tests/integration/it_*.c)
IT_BIN     := $(IT_SRC:tests/integration/%.c=$(B)/tests/%)
IT_LIB_SRC := $(filter-out $(IT_SRC),$(wildcard tests/integration/*.c))
IT_LIB_OBJ := $(IT_LIB_SRC:%.c=$(B)/%.o)

TOOLS      := $(B)/gatemq-bench $(B)/gatemq-passwd $(B)/gatemq-acl
HEADERS    := $(wildcard protocol/*.h broker/*.h auth/*.h store/*.h tests/unit/*.h tests/integration/*.h)

.SECONDARY:

.PHONY: all deps dev-certs run test fuzz check-valgrind test-build unit integration bench clean check-config

all: $(B)/gatemq $(TOOLS)

$(B)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The embedded default configuration is conf/dev.conf, compiled in.
$(B)/conf_default.c: conf/dev.conf
	@mkdir -p $(dir $@)
	@awk 'BEGIN { print "/* generated from conf/dev.conf */"; print "const char gmq_config_default_text[] =" } \
	     { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); print "    \"" $$0 "\\n\"" } END { print "    \"\";" }' $< > $@

$(B)/conf_default.o: $(B)/conf_default.c
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libgatemq.a: $(CORE_OBJ) $(B)/conf_default.o
	@rm -f $@
	ar rcs $@ $^

$(B)/gatemq: $(B)/broker/main.o $(B)/libgatemq.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# The codec alone: what tools and codec tests link.
$(B)/libproto.a: $(PROTO_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/gatemq-bench: $(B)/tools/gatemq-bench.o $(B)/libproto.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(B)/gatemq-passwd: $(B)/tools/gatemq-passwd.o $(B)/libgatemq.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(B)/gatemq-acl: $(B)/tools/gatemq-acl.o $(B)/libgatemq.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# Unit tests: test_proto_* need only the codec, the others the whole core.
$(B)/tests/test_proto_%: $(B)/tests/unit/test_proto_%.o $(B)/libproto.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(TESTLIBS) $(LIBS)

$(B)/tests/test_%: $(B)/tests/unit/test_%.o $(B)/libgatemq.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(TESTLIBS) $(LIBS)

# Integration tests drive the real binary; they link the harness and the
# core library (the codec for raw clients, the sinks for sink tests).
$(B)/tests/it_%: $(B)/tests/integration/it_%.o $(IT_LIB_OBJ) $(B)/libgatemq.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(TESTLIBS) $(LIBS)

test-build: $(B)/gatemq $(TOOLS) $(UNIT_BIN) $(IT_BIN)

deps:
	@sh tools/install-deps.sh

# Unit and integration tests, normal build then ASan+UBSan build; one summary.
test: deps
	@$(MAKE) --no-print-directory test-build
	@$(MAKE) --no-print-directory B=build/asan OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" test-build
	@{ sh tests/run.sh build build/asan; sh tools/fuzz.sh build $(FUZZ_SMOKE_SECONDS); } | tee build/test-summary.log; \
	awk '/^[0-9]+ passed, [0-9]+ failed$$/ { p += $$1; f += $$3 } \
	     /^fuzz: [0-9]+ passed, [0-9]+ failed$$/ { p += $$2; f += $$4 } \
	     END { print p " passed, " f " failed"; exit !(f == 0 && p > 0) }' build/test-summary.log

unit: test-build
	@sh tests/run.sh --unit $(B)

integration: test-build
	@sh tests/run.sh --integration $(B)

# Dev certificates and a dev operator login, created once under conf/certs/.
DEV_USER     ?= operator
DEV_PASSWORD ?= dev-only-password
dev-certs: $(B)/gatemq-passwd
	@sh tools/gatemq-cert dev conf/certs
	@[ -f conf/certs/dev.passwd ] || { $(B)/gatemq-passwd -c -b conf/certs/dev.passwd $(DEV_USER) $(DEV_PASSWORD) && \
	    echo "# dev operator login: -u $(DEV_USER) -P $(DEV_PASSWORD) (conf/certs/dev.passwd)"; }
	@echo "# plain MQTT: mosquitto_sub -h 127.0.0.1 -p 1883 -t '#' -v"
	@echo "# operator over TLS: mosquitto_sub -h 127.0.0.1 -p 8883 --cafile conf/certs/ca.crt -u $(DEV_USER) -P $(DEV_PASSWORD) -t '#' -v"

run: deps all dev-certs
	$(B)/gatemq

check-config: $(B)/gatemq
	$(B)/gatemq -c conf/gatemq.conf --check-config

# The integration suite with the broker under valgrind memcheck (slow).
check-valgrind: deps
	@$(MAKE) --no-print-directory test-build
	@sh tools/check-valgrind.sh $(B)

# Coverage-guided fuzzing of the parsers (docs/fuzzing.md); fuzzers in $(B)/fuzz/.
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 5
fuzz: deps
	@sh tools/fuzz.sh $(B) $(FUZZ_SECONDS)

bench: deps all
	@sh tools/bench.sh $(B)

clean:
	rm -rf build
