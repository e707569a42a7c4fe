# Sourced by scripts/install-*: installs one package from a newer Debian suite (trixie, sid)
# on Debian 12 without touching the system's apt configuration. A private apt configuration (its
# own sources list, package lists and cache under a temporary directory) downloads the one .deb,
# which dpkg installs. Only packages that depend on libc6 alone (static Go binaries) are taken,
# and only when this system's libc6 is new enough: nothing of the newer suite's libraries comes in.
# Needs root or sudo.

# install_newer_debian_deb LABEL SUITE PACKAGE
install_newer_debian_deb() {
  local label="$1" suite="$2" package="$3"
  local sudo=() arch work deb depends libc_needed libc_here
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  arch="$(dpkg --print-architecture)"
  work="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand $work now: the trap runs after this function returns.
  trap "rm -rf '$work'" EXIT
  chmod 755 "$work"
  mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/parts" "$work/prefs"
  # Only the suite's main, signed with Debian's archive keyring (bookworm's keyring holds the keys trixie and sid are signed with).
  echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$work/sources.list"
  local apt_private=(
    -o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/parts"
    -o "Dir::Etc::PreferencesParts=$work/prefs" -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache::Archives=$work/archives" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "APT::Architectures::=$arch" -o "Acquire::Languages=none" -o "APT::Sandbox::User=root"
  )
  echo "$label: fetching $package from Debian $suite"
  apt-get "${apt_private[@]}" update -qq
  (cd "$work" && apt-get "${apt_private[@]}" download -qq "$package")
  deb="$(ls "$work/${package}"_*.deb)"
  depends="$(dpkg-deb -f "$deb" Depends)"
  if [ -n "$(echo "$depends" | tr ',' '\n' | sed 's/[( ].*//' | grep -v '^ *libc6$' | grep -v '^ *$' || true)" ]; then
    echo "$label: $deb depends on more than libc6 ($depends); not installing it on $(. /etc/os-release && echo "$PRETTY_NAME")" >&2
    return 1
  fi
  libc_needed="$(echo "$depends" | tr ',' '\n' | sed -n 's/^ *libc6 *(>= *\([^)]*\)).*/\1/p')"
  libc_here="$(dpkg-query -W -f '${Version}' libc6)"
  if [ -n "$libc_needed" ] && ! dpkg --compare-versions "$libc_here" ge "$libc_needed"; then
    echo "$label: $deb needs libc6 >= $libc_needed; this system has $libc_here" >&2
    return 1
  fi
  "${sudo[@]}" dpkg -i "$deb" >/dev/null
}
