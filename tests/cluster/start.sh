#!/usr/bin/env bash
# Starts one real Kubernetes test cluster on 127.0.0.1 for a person, prints its kubeconfig
# and keeps it until Ctrl-C, then stops its processes and deletes its files. The cluster is
# the one the tests get from testkit::cluster::TestCluster (tests/examples/cluster.rs).
#
#   tests/cluster/start.sh                 # etcd + kube-apiserver
#   tests/cluster/start.sh --full          # + controller-manager, scheduler, a KWOK node
#   tests/cluster/start.sh --full --once   # start, print start time and memory, stop
#
# The first run builds the binaries (tests/cluster/build.sh) and the example.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Progress, not silence: the Go binaries (first run ~8 minutes) and the example are built
# in the open, each step said first.
echo "start.sh: the test-cluster binaries (tests/cluster/build.sh; built on first use, ~8 minutes)" >&2
FLEETHUB_K8S_BIN_DIR="$(bash "$repo/tests/cluster/build.sh")"
export FLEETHUB_K8S_BIN_DIR
echo "start.sh: binaries in $FLEETHUB_K8S_BIN_DIR; building and starting the cluster (cargo run -p testkit --example cluster)" >&2
exec cargo run --manifest-path "$repo/Cargo.toml" -p testkit --example cluster -- "$@"
