#!/usr/bin/env bash
# fleethub from start to finish, on one machine, in about a minute once built.
#
# What happens, each step with the command a person would type:
#   1. two real Kubernetes clusters start ("east" and "west", tests/cluster/start.sh --full)
#   2. a hub starts (SQLite in a temporary directory, or Postgres when DATABASE_URL is set)
#   3. `hub token create` prints a join line; both clusters run it (`klusterlet join --wait`)
#      and the admin accepts them (`hub accept east west`)
#   4. `klusterlet run` starts next to each cluster
#   5. `hub apply` sends an app to both clusters and waits until it is Ready
#   6. a changed value reaches both clusters; a manifest dropped from the app is removed
#   7. `hub delete work` with each delete option: Foreground (default), Orphan,
#      SelectivelyOrphan
#   8. `hub delete cluster west`: its agent cleans up and the hub forgets it
# Everything listens on 127.0.0.1 only and everything is stopped and deleted at the end,
# also on failure or Ctrl-C.
#
#   tests/e2e/demo.sh                                   # SQLite
#   DATABASE_URL=postgres://user@127.0.0.1/db tests/e2e/demo.sh   # an empty Postgres database
#
# Needs: cargo, kubectl, and the test-cluster binaries (tests/cluster/build.sh builds them
# on first use, about eight minutes). FLEETHUB_BIN_DIR=/dir uses the `hub` and
# `klusterlet` binaries found there instead of building release ones (the e2e test does).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/fleethub-demo.XXXXXX")"
# How long anything that must happen may take before the demo gives up.
timeout=60

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo failed: %s\n' "$*" >&2; exit 1; }

command -v kubectl >/dev/null || die "kubectl is needed to look into the clusters"

# ---------------------------------------------------------------------------------------
# Cleanup: every background process is remembered and stopped on exit, newest first (the
# agents before the hub, the clusters last). SIGINT lets a cluster stop its own processes
# and delete its files.
pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local i pid
  # SIGINT first: a cluster then stops its processes and deletes its files itself, the
  # hub and the agents finish what they are doing.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -INT "${pids[i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # A cluster stops in about a second. One still being compiled by `cargo run` ignores
    # SIGINT (background jobs of a script do): SIGTERM, then SIGKILL.
    for signal in TERM KILL; do
      for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -"$signal" "$pid" 2>/dev/null || true
    done
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 ]]; then
    echo "logs were in $work:" >&2
    for log in "$work"/*.log; do
      [[ -f $log ]] || continue
      printf -- '--- %s (last 20 lines)\n' "$(basename "$log")" >&2
      tail -n 20 "$log" >&2
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs "$@" until it succeeds, for at most $timeout seconds; $1 says what we wait for.
wait_until() {
  local what=$1
  shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what: not within ${timeout}s"
    sleep 0.5
  done
}

# ---------------------------------------------------------------------------------------
say "building hub and klusterlet"
if [[ -n ${FLEETHUB_BIN_DIR:-} ]]; then
  bin="$FLEETHUB_BIN_DIR"
else
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin hub --bin klusterlet
  target="$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  bin="$target/release"
fi
for b in hub klusterlet; do
  [[ -x $bin/$b ]] || die "$bin/$b is missing"
done
echo "using $bin/hub and $bin/klusterlet"

# The CLI talks to the hub this demo starts, whatever the environment says.
unset HUB_SERVER HUB_TOKEN HUB_CA_FILE HUB_DATABASE_URL
export HUB_CONFIG="$work/hub/client.yaml"
hub() { "$bin/hub" "$@"; }
klusterlet() { "$bin/klusterlet" "$@"; }

# ---------------------------------------------------------------------------------------
say "1. starting two Kubernetes clusters, east and west"
# start.sh prints "kubeconfig: PATH" once the cluster is ready and then runs until SIGINT.
declare -A kubeconfig
for cluster in east west; do
  "$repo/tests/cluster/start.sh" --full >"$work/cluster-$cluster.log" 2>&1 &
  pids+=($!)
done
cluster_ready() { grep -q '^kubeconfig: ' "$work/cluster-$1.log"; }
for cluster in east west; do
  # The first run compiles the cluster launcher (and maybe the cluster binaries).
  timeout=900 wait_until "cluster $cluster to start" cluster_ready "$cluster"
  kubeconfig[$cluster]="$(sed -n 's/^kubeconfig: //p' "$work/cluster-$cluster.log")"
  echo "$cluster: $(sed -n 's/^server: *//p' "$work/cluster-$cluster.log")"
done
# kubectl against one of the clusters: k east get pods -A
k() {
  local cluster=$1
  shift
  kubectl --kubeconfig "${kubeconfig[$cluster]}" "$@"
}

# ---------------------------------------------------------------------------------------
say "2. starting the hub"
db_args=()
if [[ -n ${DATABASE_URL:-} ]]; then
  db_args=(--database-url "$DATABASE_URL")
  echo "database: Postgres ($DATABASE_URL)"
else
  echo "database: SQLite in $work/hub"
fi
# Port 0: the hub picks a free port and writes it into client.yaml. Leases every second
# (instead of 10 s) so that the hub notices the agents quickly.
# Servers in the background run the binary itself, not the `hub` function: `$!` of a
# backgrounded function is a subshell, and signalling it left the real process running.
"$bin/hub" serve --listen 127.0.0.1:0 --data-dir "$work/hub" "${db_args[@]}" \
  --lease-interval 1s --lease-grace 3s --shutdown-grace 5s >"$work/hub.log" 2>&1 &
pids+=($!)
wait_until "the hub to answer" hub get clusters
grep -o 'hub listening on .*' "$work/hub.log"

# ---------------------------------------------------------------------------------------
say "3. joining both clusters"
# A bootstrap token. stdout is exactly the line to run next to a managed cluster:
#   klusterlet join --hub URL --token ID.SECRET --ca-hash sha256:HEX --cluster-name <name>
# The hash pins the hub's CA, so the agent cannot be fooled by another server.
join_line="$(hub token create --ttl 10m)"
echo "${join_line/--token * --ca-hash/--token <secret> --ca-hash}"
join_line="${join_line% --cluster-name <name>}"
read -r -a join_flags <<<"${join_line#klusterlet join }"

# Each cluster asks to join and waits for the admin's answer. The label lets one
# --cluster-selector reach both.
join_pids=()
for cluster in east west; do
  klusterlet join "${join_flags[@]}" --cluster-name "$cluster" \
    --kubeconfig "${kubeconfig[$cluster]}" --data-dir "$work/agent-$cluster" \
    --label env=demo --wait --timeout "${timeout}s" >"$work/join-$cluster.log" 2>&1 &
  join_pids+=($!)
done
# The admin accepts them by name (--wait: until their requests have arrived).
hub accept east west --wait --timeout "${timeout}s"
for pid in "${join_pids[@]}"; do
  wait "$pid" || die "klusterlet join exited $?"
done

say "4. running the agents"
for cluster in east west; do
  "$bin/klusterlet" run --kubeconfig "${kubeconfig[$cluster]}" --data-dir "$work/agent-$cluster" \
    >"$work/agent-$cluster.log" 2>&1 &
  pids+=($!)
done
# AVAILABLE turns True with an agent's first lease.
both_available() { [[ $(hub get clusters -l env=demo | awk 'NR > 1 && $4 == "True"' | wc -l) -eq 2 ]]; }
wait_until "both clusters to be available" both_available
hub get clusters

# ---------------------------------------------------------------------------------------
say "5. sending an app to both clusters"
# Plain Kubernetes manifests become one ManifestWork named by --name, one per cluster.
app() {
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: demo}
data: {greeting: "$1"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
      # The test clusters' node is KWOK's fake node: the pod "runs" without an image pull.
      tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
EOF
  if [[ ${2:-} == with-extra ]]; then
    cat <<EOF
---
apiVersion: v1
kind: ConfigMap
metadata: {name: extra, namespace: demo}
data: {note: dropped later}
EOF
  fi
}
app hello with-extra >"$work/app.yaml"
# --wait blocks until Ready is True at the work's current generation on every cluster;
# the exit code says how it went (0 Ready, 1 failed, 3 timed out).
hub apply -f "$work/app.yaml" --cluster-selector env=demo --name app \
  --wait --for Ready --timeout "${timeout}s"
hub get works -A
for cluster in east west; do
  echo "$cluster: $(k "$cluster" -n demo get deployment web --no-headers)"
done

# ---------------------------------------------------------------------------------------
say "6. changing a value, then dropping a manifest"
app "hello again" with-extra >"$work/app.yaml"
hub apply -f "$work/app.yaml" --cluster-selector env=demo --name app \
  --wait --for Applied --timeout "${timeout}s"
for cluster in east west; do
  echo "$cluster: greeting = $(k "$cluster" -n demo get configmap settings -o 'jsonpath={.data.greeting}')"
done

# Applying replaces the work: what is no longer in it is deleted from the clusters.
app "hello again" >"$work/app.yaml"
hub apply -f "$work/app.yaml" --cluster-selector env=demo --name app \
  --wait --for Applied --timeout "${timeout}s"
absent() { ! k "$1" get "${@:2}" >/dev/null 2>&1; }
for cluster in east west; do
  wait_until "configmap extra to go from $cluster" absent "$cluster" -n demo configmap extra
  echo "$cluster: configmap extra is gone"
done

# ---------------------------------------------------------------------------------------
say "7. deleting works: Orphan, SelectivelyOrphan, Foreground"
# ManifestWork documents carry their own deleteOption; with --cluster-selector each goes
# to every matching cluster.
cat >"$work/orphans.yaml" <<'EOF'
apiVersion: work.open-cluster-management.io/v1
kind: ManifestWork
metadata: {name: keep-all}
spec:
  deleteOption: {propagationPolicy: Orphan}
  workload:
    manifests:
    - {apiVersion: v1, kind: ConfigMap, metadata: {name: kept, namespace: default}, data: {v: "1"}}
---
apiVersion: work.open-cluster-management.io/v1
kind: ManifestWork
metadata: {name: some}
spec:
  deleteOption:
    propagationPolicy: SelectivelyOrphan
    selectivelyOrphans:
      orphaningRules:
      - {group: "", resource: configmaps, name: sel-keep, namespace: default}
  workload:
    manifests:
    - {apiVersion: v1, kind: ConfigMap, metadata: {name: sel-keep, namespace: default}, data: {v: "1"}}
    - {apiVersion: v1, kind: ConfigMap, metadata: {name: sel-drop, namespace: default}, data: {v: "1"}}
EOF
hub apply -f "$work/orphans.yaml" --cluster-selector env=demo --wait --for Applied --timeout "${timeout}s"

# `hub delete` waits until each agent has cleaned up and released the work, so what we
# see in the clusters right after is the final state.
hub delete work keep-all --cluster-selector env=demo --timeout "${timeout}s"
hub delete work some --cluster-selector env=demo --timeout "${timeout}s"
for cluster in east west; do
  k "$cluster" -n default get configmap kept >/dev/null || die "$cluster: Orphan deleted kept"
  echo "$cluster: kept (Orphan) is still there"
  k "$cluster" -n default get configmap sel-keep >/dev/null || die "$cluster: sel-keep was deleted"
  echo "$cluster: sel-keep (named by the orphaning rule) is still there"
  absent "$cluster" -n default configmap sel-drop || die "$cluster: sel-drop was left"
  echo "$cluster: sel-drop (not named) is gone"
done

# The default (Foreground): everything the work created is deleted, its namespace too.
hub delete work app --cluster-selector env=demo --timeout "${timeout}s"
for cluster in east west; do
  absent "$cluster" -n demo configmap settings || die "$cluster: settings was left"
  echo "$cluster: the app's objects are deleted ($(k "$cluster" get namespace demo --no-headers 2>&1 || true))"
done

# ---------------------------------------------------------------------------------------
say "8. deleting cluster west"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: farewell, namespace: default}\ndata: {v: bye}\n' \
  >"$work/farewell.yaml"
hub apply -f "$work/farewell.yaml" --cluster west --name farewell --wait --for Applied --timeout "${timeout}s"
# Marks west and its works deleting; west's agent removes what the works created, then
# the record goes. The command waits for that.
hub delete cluster west --timeout "${timeout}s"
absent west -n default configmap farewell || die "west: farewell was left"
echo "west: farewell is gone"
if hub get clusters west >/dev/null 2>&1; then die "the hub still knows west"; fi
hub get clusters

say "demo finished"
