# Shared by tools/*.sh: root check and installing missing commands from Debian packages.
require_root() {
  [ "$(id -u)" = 0 ] || { echo "$0: run as root (network namespaces and nf_tables need it)" >&2; exit 2; }
}

# ensure_commands CMD:PACKAGE... installs the packages whose command is missing.
ensure_commands() {
  local need=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}"); done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}
