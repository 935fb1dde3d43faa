#!/bin/bash
# Runs a command (an mpirun job of pipeline stages) in a fresh network namespace whose
# loopback is rate-limited by `tc ... tbf`: every byte the ranks send each other then crosses
# a link of RATE, as between machines (docs/DISTRIBUTED.md).
#
#   scripts/netns_link.sh [--rate 1gbit] [--mtu 1500] -- mpirun ... skiff generate ... --stages auto
#
# What it models, plainly: ONE shared medium of RATE for all the job's traffic (the
# namespace's loopback; every stage's messages queue behind each other, as ranks on one
# switch port would), Ethernet-sized packets (--mtu), and no added latency: tc's netem is
# not available on these machines, so latency stays --sim-link's (which can be combined).
# mpirun's own control messages (PMIx) share the link too; they are small.
#
# Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and the kernel's tbf qdisc; says so and exits 2
# otherwise. The namespace is removed when the command ends.
set -euo pipefail

rate=1gbit
mtu=1500
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rate) rate="$2"; shift 2 ;;
    --mtu) mtu="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "error: no command given: scripts/netns_link.sh [--rate R] -- mpirun ..." >&2
  exit 2
fi

ns="skiff-link-$$"
if ! ip netns add "$ns" 2>/dev/null; then
  echo "error: cannot create a network namespace here (needs root and CAP_SYS_ADMIN); use --sim-link instead" >&2
  exit 2
fi
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip -n "$ns" link set lo mtu "$mtu"
ip -n "$ns" link set lo up
# burst: at least one packet (the MTU) and a few ms at the rate's start; tbf's own latency
# bound only caps the queue.
if ! ip netns exec "$ns" tc qdisc add dev lo root tbf rate "$rate" burst 32kb latency 200ms 2>/dev/null; then
  echo "error: tc cannot add a tbf qdisc at rate '$rate' here (the kernel's sch_tbf, or a bad rate)" >&2
  exit 2
fi
echo "netns_link: $ns, loopback shaped by tbf to $rate (mtu $mtu), no added latency" >&2
ip netns exec "$ns" "$@"
status=$?
ip netns exec "$ns" tc -s qdisc show dev lo | sed -n 's/^ *Sent/netns_link: tbf sent/p' >&2
exit $status
