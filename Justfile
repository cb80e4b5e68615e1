# HATS developer recipes. `just --list` shows them all.

# Build the hats binary into ./bin/hats.
build:
    go build -o bin/hats .

# Run the default test suite (the README's test command; what CI runs).
test:
    go test -race -count=1 ./...

# Run the tests with the race detector, several times, to shake out flakes.
race count="3":
    go test -race -count={{count}} ./...

# Static checks.
vet:
    go vet ./...

# Format the code.
fmt:
    gofmt -w .

# Fail if any file is not gofmt-clean, then vet.
lint:
    test -z "$(gofmt -l .)" || (gofmt -l . && exit 1)
    go vet ./...

# Start a local 3-node cluster on loopback (Ctrl-C stops it).
cluster:
    go run . demo

# Benchmarks of the write path (in-process 3-node clusters, fsync on).
bench:
    go test -run '^$' -bench . -benchtime 5s ./cluster_test ./fsm

# Fuzz the command decoder for a while.
fuzz time="60s":
    go test -run '^$' -fuzz FuzzDecode -fuzztime {{time}} ./fsm
