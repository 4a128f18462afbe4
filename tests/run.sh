#!/usr/bin/env bash
# Runs every test of the workspace, installing what this machine is missing first:
#   1. Debian's postgresql (the tests start their own servers from its binaries), Debian's
#      haproxy and Patroni (PyPI, into ~/.cache/fleethub/venv) for the Postgres HA test,
#   2. the test-cluster binaries (tests/cluster/build.sh, cached under ~/.cache/fleethub),
#      Debian's systemd (systemd-analyze) and promtool (tests/tools/build-promtool.sh, cached),
#      the previous release's hub (tests/tools/build-release.sh, cached),
#   3. cargo test --workspace, with CARGO_TARGET_DIR under ~/.cache so later runs reuse
#      compiled dependencies;
#   4. (whole suite only) the klusterlet's container image, built with buildah from the
#      binary the tests used (deploy/klusterlet/build-image.sh), and run once.
# Exits non-zero when a step or any test fails. Prints how long each phase took.
#
#   bash tests/run.sh                                      # everything
#   bash tests/run.sh -p testkit --test postgres_harness   # arguments go to cargo test
#   bash tests/run.sh -- --nocapture                       # ... and after -- to the tests
#   bash tests/run.sh --setup-only                         # install and build prerequisites only
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

setup_only=0
whole_suite=0
[ "$#" -eq 0 ] && whole_suite=1
if [ "${1:-}" = "--setup-only" ]; then
  setup_only=1
  shift
fi

# --- timing -------------------------------------------------------------------------
timings=()
phase_name=""
phase_started=0
script_started=$(date +%s)

end_phase() {
  if [ -n "$phase_name" ]; then
    local took=$(($(date +%s) - phase_started))
    timings+=("$(printf '  %-26s %5ss%s' "$phase_name" "$took" "${1:-}")")
    echo "run.sh: ${phase_name} took ${took}s${1:-}" >&2
    phase_name=""
  fi
}

phase() {
  end_phase
  phase_name="$1"
  phase_started=$(date +%s)
  echo >&2
  echo "run.sh: === ${phase_name} ===" >&2
}

summary() {
  local status=$?
  if [ "$status" -ne 0 ]; then end_phase "  (failed)"; else end_phase; fi
  echo >&2
  echo "run.sh: phases" >&2
  for line in "${timings[@]}"; do echo "$line" >&2; done
  printf '  %-26s %5ss\n' "total" "$(($(date +%s) - script_started))" >&2
  if [ "$status" -ne 0 ]; then echo "run.sh: FAILED (exit $status)" >&2; fi
  exit "$status"
}
trap summary EXIT

# --- helpers ------------------------------------------------------------------------
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "run.sh: '$*' needs root, and sudo is not installed" >&2
    return 1
  fi
}

apt_get() {
  # No questions (CI has no stdin); keep config files we changed.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" </dev/null
}

# The bin dir of the highest Postgres version Debian's packages installed, if any.
postgres_bin_dir() {
  local dir best=""
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/postgres" ] && best="$(printf '%s\n%s\n' "$best" "$dir" | sort -V | tail -n 1)"
  done
  printf '%s' "$best"
}

# --- 0. Prerequisites: one clear message each, before anything long starts ----------------
phase "prerequisites"
version_at_least() { # have want: whether dotted version $1 >= $2
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}
missing=()
if ! command -v cargo >/dev/null; then
  missing+=("cargo is not installed: install Rust 1.95 or newer (rustup)")
elif ! version_at_least "$(cargo --version | awk '{print $2}')" 1.95; then
  missing+=("cargo $(cargo --version | awk '{print $2}') is too old: Rust 1.95 or newer is needed")
fi
if ! command -v go >/dev/null; then
  missing+=("go is not installed: Go 1.26 or newer builds the test-cluster binaries")
elif ! version_at_least "$(go env GOVERSION | sed 's/^go//')" 1.26; then
  missing+=("$(go env GOVERSION) is too old: Go 1.26 or newer builds the test-cluster binaries")
fi
if [ -z "$(postgres_bin_dir)" ] && [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  missing+=("Debian's postgresql is not installed and installing it needs root or sudo")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  for m in "${missing[@]}"; do echo "run.sh: $m" >&2; done
  exit 1
fi
echo "run.sh: $(cargo --version), $(go version | awk '{print $3}')" >&2

# --- 1. Postgres --------------------------------------------------------------------
phase "postgres"
if [ -z "$(postgres_bin_dir)" ]; then
  echo "run.sh: no /usr/lib/postgresql/*/bin/postgres; installing Debian's postgresql" >&2
  apt_get update
  # postgresql-common first, to switch off the cluster the server package would create and
  # start on port 5432: the tests never use it, they start their own servers.
  apt_get install --no-install-recommends postgresql-common
  as_root sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
  apt_get install --no-install-recommends postgresql
fi
pg_bin="$(postgres_bin_dir)"
for tool in initdb postgres pgbench; do
  if [ ! -x "$pg_bin/$tool" ]; then
    echo "run.sh: $pg_bin/$tool is missing after installing postgresql" >&2
    exit 1
  fi
done
if ! id postgres >/dev/null 2>&1; then
  echo "run.sh: no 'postgres' system user (Debian's postgresql-common creates it)" >&2
  exit 1
fi
echo "run.sh: postgres binaries: $pg_bin ($("$pg_bin/postgres" --version))" >&2

# --- 1b. Postgres HA: HAProxy (Debian) and Patroni (PyPI) ----------------------------
# tests/tests/postgres_ha.rs runs Patroni-managed Postgres behind HAProxy, with the etcd
# built below as Patroni's store. Patroni goes into the project's venv, pinned.
phase "haproxy and patroni"
patroni_version=4.0.6
psycopg2_version=2.9.10
if ! command -v haproxy >/dev/null; then
  echo "run.sh: installing Debian's haproxy" >&2
  apt_get update
  apt_get install --no-install-recommends haproxy
  # The package starts its own haproxy on port 80 where systemd runs; the tests start
  # their own.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now haproxy >/dev/null 2>&1 || true
  fi
fi
venv="${XDG_CACHE_HOME:-$HOME/.cache}/fleethub/venv"
if ! "$venv/bin/patroni" --version 2>/dev/null | grep -q " $patroni_version\$"; then
  echo "run.sh: installing patroni $patroni_version into $venv" >&2
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_get update
    apt_get install --no-install-recommends python3-venv
  fi
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "patroni[etcd3]==$patroni_version" \
    "psycopg2-binary==$psycopg2_version"
fi
echo "run.sh: $(haproxy -v | head -n 1); $("$venv/bin/patroni" --version)" >&2

# --- 2. Test-cluster binaries -------------------------------------------------------
phase "test-cluster binaries"
FLEETHUB_K8S_BIN_DIR="$(bash tests/cluster/build.sh)"
export FLEETHUB_K8S_BIN_DIR
echo "run.sh: FLEETHUB_K8S_BIN_DIR=$FLEETHUB_K8S_BIN_DIR" >&2

# --- 2b. Tools the install checks use ------------------------------------------------
phase "install-check tools"
if ! command -v systemd-analyze >/dev/null; then
  echo "run.sh: no systemd-analyze; installing Debian's systemd (the unit checks use it)" >&2
  apt_get update
  apt_get install --no-install-recommends systemd
fi
FLEETHUB_PROMTOOL="$(bash tests/tools/build-promtool.sh)"
export FLEETHUB_PROMTOOL
echo "run.sh: FLEETHUB_PROMTOOL=$FLEETHUB_PROMTOOL" >&2

# --- 2c. The previous release's hub (tests/tests/rolling_upgrade.rs) ------------------
# Built once from its git tag into ~/.cache/fleethub/releases/ with the tests' target dir
# (compiled dependencies reused), then found there: a warm run pays nothing.
phase "previous release"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleethub/target}"
FLEETHUB_PREVIOUS_HUB="$(bash tests/tools/build-release.sh v0.4.0)"
export FLEETHUB_PREVIOUS_HUB
echo "run.sh: FLEETHUB_PREVIOUS_HUB=$FLEETHUB_PREVIOUS_HUB" >&2

if [ "$setup_only" -eq 1 ]; then
  exit 0
fi

# --- 3. Build and run the tests -----------------------------------------------------
command -v cargo >/dev/null || { echo "run.sh: cargo is not installed" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleethub/target}"
echo "run.sh: CARGO_TARGET_DIR=$CARGO_TARGET_DIR" >&2

# Arguments before -- go to cargo, after it to the test binaries. --workspace unless the
# caller picked packages (cargo would otherwise ignore -p).
cargo_args=()
test_args=()
seen_dashes=0
scope="--workspace"
for arg in "$@"; do
  if [ "$seen_dashes" -eq 1 ]; then
    test_args+=("$arg")
  elif [ "$arg" = "--" ]; then
    seen_dashes=1
  else
    case "$arg" in
      -p | -p* | --package | --package=* | --workspace | --manifest-path | --manifest-path=*) scope="" ;;
    esac
    cargo_args+=("$arg")
  fi
done
[ -n "$scope" ] && cargo_args=("$scope" "${cargo_args[@]}")

phase "build tests"
echo "+ cargo test --no-run ${cargo_args[*]}" >&2
cargo test --no-run "${cargo_args[@]}"

phase "run tests"
echo "+ cargo test ${cargo_args[*]} -- ${test_args[*]}" >&2
cargo test "${cargo_args[@]}" -- "${test_args[@]}"

# --- 4. The klusterlet's image ------------------------------------------------------
if [ "$whole_suite" -eq 1 ]; then
  phase "klusterlet image"
  if ! command -v buildah >/dev/null || ! command -v crun >/dev/null; then
    echo "run.sh: installing Debian's buildah and crun (daemonless image builder)" >&2
    apt_get update
    apt_get install --no-install-recommends buildah crun
  fi
  bash deploy/klusterlet/build-image.sh --binary "$CARGO_TARGET_DIR/debug/klusterlet" \
    --tag fleethub/klusterlet:ci
fi
