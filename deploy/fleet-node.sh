#!/usr/bin/env bash
# One host's part of a fleet-ray cluster; the start commands of cluster.yaml and cluster-onprem.yaml
# call it (`ray up` runs them over SSH on each node).
#
#   fleet-node.sh head     the fleet's Redis (AOF: the fleet store and Ray's GCS fault-tolerance backend),
#                          the Ray head, then the supervisor and the API (`fleet-ray up`)
#   fleet-node.sh worker   a Ray worker joining the head at $RAY_HEAD_IP (set by `ray up`)
#
# Per-host settings, read from /etc/fleet-ray/node.env and then ~/.fleet-ray/node.env (later wins;
# see fleet-env.sh):
#   FLEET_RESOURCES='{"browser": 8}'   this host's resource tags (default: none, or what `ray up`'s
#                                      node type declares)
#   FLEET_LABELS='region=eu'           this host's labels
#   FLEET_REDIS_PORT=6390  FLEET_RAY_PORT=6380  FLEET_VENV=~/fleet   (6390: clear of a distro Redis on 6379)
#   FLEET_API_PORT=8470, FLEET_NAMESPACE=fleet, ... any fleet-ray setting (the CLI reads them too)
#   RAY_TMPDIR=...                     where Ray keeps its sessions (default /tmp)
#   RAY_health_check_period_ms=1000 RAY_health_check_timeout_ms=2000 RAY_health_check_failure_threshold=5
#                                      (head; these are this script's defaults) how fast Ray's GCS declares
#                                      a host that stopped answering dead: ~6 s for a dead host, ~15 s for a
#                                      silent one (Ray's own 3000/10000/5 take over a minute, and a fleet's
#                                      slots on a lost host wait that long to be replaced); a slow but live
#                                      host is declared dead sooner too — raise them for hosts that stall
#
# Ray token authentication is on for every fleet cluster: the head generates ~/.ray/auth_token
# (mode 0600) when it has no token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or that file); every worker
# needs the same token (the cluster YAMLs' cluster_synced_files copy it from the head). fleet-env.sh
# exports RAY_AUTH_MODE=token wherever a token exists. RAY_AUTH_MODE=disabled in node.env opts out.
#
# The fleet's Redis writes its append-only file under ~/fleet-redis and is shut down (state kept on
# disk) when this host's Ray head stops, so `ray down` leaves no process behind; the next `ray up`
# starts it from that file and the supervisor recovers from its checkpoint. A Redis on the port that
# isn't the fleet's own (another data directory) is never touched: the head refuses to start.
set -euo pipefail

. "$(dirname "$0")/fleet-env.sh"

BIN="${FLEET_VENV:-$HOME/fleet}/bin"
REDIS_PORT="${FLEET_REDIS_PORT:-6390}"
RAY_PORT="${FLEET_RAY_PORT:-6380}"
tags=()
if [ -n "${FLEET_RESOURCES:-}" ]; then tags+=("--resources=$FLEET_RESOURCES"); fi
if [ -n "${FLEET_LABELS:-}" ]; then tags+=("--labels=$FLEET_LABELS"); fi

redis_ping() { "$BIN/python" -c "import redis,sys; redis.Redis(port=int(sys.argv[1]), socket_timeout=1).ping()" \
  "$REDIS_PORT" >/dev/null 2>&1; }
# the Redis on the port is the fleet's own (its data lives in ~/fleet-redis), not somebody else's
redis_ours() { "$BIN/python" -c "import redis,sys; r = redis.Redis(port=int(sys.argv[1]), socket_timeout=1)
sys.exit(r.config_get('dir').get('dir') != sys.argv[2])" "$REDIS_PORT" "$HOME/fleet-redis" >/dev/null 2>&1; }

case "${1:-}" in
  head)
    pkill -u "$(id -u)" -f fleet-redis-watch || true  # a restart keeps the running Redis
    "$BIN/ray" stop >/dev/null
    if redis_ping && ! redis_ours; then
      echo "fleet-node: another Redis answers on 127.0.0.1:$REDIS_PORT; set FLEET_REDIS_PORT in" \
           "~/.fleet-ray/node.env to a free port for the fleet's own Redis" >&2
      exit 1
    fi
    if ! redis_ping; then
      mkdir -p "$HOME/fleet-redis"
      redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --appendonly yes \
        --appendfsync everysec --dir "$HOME/fleet-redis" --pidfile "$HOME/fleet-redis/redis.pid" \
        --logfile "$HOME/fleet-redis/redis.log"
      for _ in $(seq 1 50); do redis_ping && break; sleep 0.2; done
      redis_ping || { echo "fleet-node: Redis did not start on 127.0.0.1:$REDIS_PORT" >&2; exit 1; }
    fi
    # A head start is a new Ray cluster: drop the previous cluster's GCS tables (db 0) so the GCS
    # doesn't recover dead nodes and actors from them. The fleet's own state (db 1) stays; the
    # supervisor recovers from its checkpoint there and starts the slots again.
    "$BIN/python" -c "import redis,sys; redis.Redis(port=int(sys.argv[1]), db=0).flushdb()" "$REDIS_PORT"
    if [ "${RAY_AUTH_MODE:-}" != "disabled" ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ] &&
       [ ! -s "$HOME/.ray/auth_token" ]; then
      # never printed: `ray up` shows the start commands' output
      (umask 077 && "$BIN/ray" get-auth-token --generate >/dev/null 2>&1)
      echo "fleet-node: generated this cluster's Ray auth token in ~/.ray/auth_token (every host needs it)"
      . "$(dirname "$0")/fleet-env.sh"  # RAY_AUTH_MODE=token now that there is a token
    fi
    # a lost host's slots are replaced once the GCS declares it dead: seconds, not Ray's minute (above)
    export RAY_health_check_period_ms="${RAY_health_check_period_ms:-1000}"
    export RAY_health_check_timeout_ms="${RAY_health_check_timeout_ms:-2000}"
    export RAY_health_check_failure_threshold="${RAY_health_check_failure_threshold:-5}"
    RAY_REDIS_ADDRESS="127.0.0.1:$REDIS_PORT" "$BIN/ray" start --head --port="$RAY_PORT" \
      --dashboard-host=127.0.0.1 --autoscaling-config="$HOME/ray_bootstrap_config.yaml" \
      --disable-usage-stats "${tags[@]}"
    # Redis follows the head: once this user's GCS is gone (ray stop / ray down), shut it down cleanly.
    # Written out as a script so the watcher is findable by its name (fleet-redis-watch).
    watch="$HOME/fleet-redis/fleet-redis-watch"
    cat > "$watch" <<EOF
#!/usr/bin/env bash
sleep 5
while pgrep -u "$(id -u)" -x gcs_server >/dev/null; do sleep 1; done
"$BIN/python" -c "import redis; redis.Redis(port=$REDIS_PORT).shutdown()" >/dev/null 2>&1 || true
EOF
    chmod +x "$watch"
    setsid nohup "$watch" >/dev/null 2>&1 < /dev/null &
    FLEET_STORE_URL="redis://127.0.0.1:$REDIS_PORT/1" "$BIN/fleet-ray" --address auto up
    ;;
  worker)
    head="${RAY_HEAD_IP:?RAY_HEAD_IP is set by ray up}:$RAY_PORT"
    "$BIN/ray" stop >/dev/null
    log="$(mktemp)"
    if ! "$BIN/ray" start --address="$head" --disable-usage-stats "${tags[@]}" 2>&1 | tee "$log"; then
      if grep -q "InvalidAuthToken" "$log"; then
        if [ "${RAY_AUTH_MODE:-}" = "token" ]; then
          echo "fleet-node: the head at $head rejected this host's Ray auth token: copy the head's" \
               "~/.ray/auth_token to ~/.ray/auth_token on this host (mode 0600) and start again" >&2
        else
          echo "fleet-node: the head at $head requires a Ray auth token and this host has none: copy the" \
               "head's ~/.ray/auth_token to ~/.ray/auth_token on this host (mode 0600) and start again" >&2
        fi
      fi
      rm -f "$log"
      exit 1
    fi
    rm -f "$log"
    ;;
  *)
    echo "usage: fleet-node.sh head|worker" >&2
    exit 2
    ;;
esac
