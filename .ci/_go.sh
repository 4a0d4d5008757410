# Sourced by .ci/build-otelcol and .ci/build-prometheus: Go binaries built once per machine and
# cached outside the repository, under a key of what they are built from.
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "${0##*/}: the go command is not on PATH (Go 1.26 or newer)" >&2; exit 1; }
GO_CACHE_ROOT="${OTEL_KIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-kit}"

# go_key FILE...: a short hash of the files' contents and the Go version.
go_key() {
    { cat "$@"; go version; } | sha256sum | cut -c1-16
}

# go_fail LOG WHAT: prints the modules the Go proxy refused (the usual cause), then the log tail.
go_fail() {
    local missing
    missing=$(grep -oE '[A-Za-z0-9./_-]+@v[0-9][A-Za-z0-9.+-]*: (reading|verifying|unknown revision|invalid version)[^"]*' "$1" | sort -u || true)
    if [ -n "$missing" ]; then
        echo "${0##*/}: $2 failed: a module could not be fetched:" >&2
        echo "$missing" | sed 's/^/  /' >&2
    else
        echo "${0##*/}: $2 failed; the end of $1:" >&2
        tail -n 30 "$1" >&2
    fi
    exit 1
}
