# Sourced by fleet-node.sh, and from ~/.bashrc on fleet hosts (the cluster YAMLs' setup commands add
# it), so `ray exec` / `ray attach` shells run `fleet-ray ...` against this host's fleet: this host's
# node.env exported (tags, ports, RAY_TMPDIR, FLEET_* settings) and the fleet's venv on PATH.
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
