# Shared helpers for .ci/services.d scripts (source this file).

# apt_install PKG...: install Debian packages, running `apt-get update` once per boot.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ! -e /tmp/.flare-apt-updated ]; then
    apt-get update -qq && touch /tmp/.flare-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
