# Sourced by fleet-node.sh, and from ~/.bashrc on fleet hosts (the cluster YAMLs' setup commands add
# it), so `ray exec` / `ray attach` shells run `fleet-ray ...` against this host's fleet: this host's
# node.env exported (tags, ports, RAY_TMPDIR, FLEET_* settings), the fleet's venv on PATH, and
# RAY_AUTH_MODE=token when this host has a Ray auth token. In any other shell on a fleet host:
#   . ~/fleet-ray/deploy/fleet-env.sh && ray status
set -a
for _fleet_env in /etc/fleet-ray/node.env "$HOME/.fleet-ray/node.env"; do
  if [ -f "$_fleet_env" ]; then . "$_fleet_env"; fi
done
set +a
unset _fleet_env
case ":$PATH:" in
  *":${FLEET_VENV:-$HOME/fleet}/bin:"*) ;;
  *) export PATH="${FLEET_VENV:-$HOME/fleet}/bin:$PATH" ;;
esac
# Ray's token authentication: `ray start --head` turns it on by itself when a token exists, but Ray's
# CLI (ray status, ray list actors, ...) and `ray start` on a worker send the token only with
# RAY_AUTH_MODE=token ("Authentication token is missing or incorrect" otherwise). A token is
# RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token; RAY_AUTH_MODE set in
# node.env (e.g. disabled) is left as it is.
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] ||
   { [ -n "${RAY_AUTH_TOKEN_PATH:-}" ] && [ -s "$RAY_AUTH_TOKEN_PATH" ]; } || [ -s "$HOME/.ray/auth_token" ]; }; then
  export RAY_AUTH_MODE=token
fi
