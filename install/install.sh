#!/usr/bin/env bash
# Build and install archestra-connect and archestra-proxy, with shell completions and man pages.
#
# Usage: install/install.sh [--prefix DIR] [--from DIR]
#
#   --prefix DIR  where to install (default: ~/.local)
#   --from DIR    take both binaries from DIR instead of building them (for packagers and tests)
#
# Installs into DIR/bin, DIR/share/man/man1, and the completion directories under DIR/share
# (bash-completion, zsh site-functions, fish vendor_completions.d). Running it again replaces
# what it installed before; to uninstall, delete those files.
set -euo pipefail

prefix="${HOME:?HOME is not set}/.local"
from=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    --from) from="${2:?--from needs a directory}"; shift 2 ;;
    --from=*) from="${1#--from=}"; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -z "$from" ]; then
  echo "Building release binaries (this takes a few minutes the first time)…" >&2
  # One package per build: built together, cargo would unify their dependencies' features and
  # give the installer the server's TLS backend and runtime features it does not need.
  cargo build --release --locked -p archestra-connect
  cargo build --release --locked -p archestra-proxy
  from="target/release"
fi
for program in archestra-connect archestra-proxy; do
  if [ ! -x "$from/$program" ]; then
    echo "install.sh: \`$from/$program\` is missing or not executable" >&2
    exit 1
  fi
done

bin="$prefix/bin"
man="$prefix/share/man/man1"
bash_dir="$prefix/share/bash-completion/completions"
zsh_dir="$prefix/share/zsh/site-functions"
fish_dir="$prefix/share/fish/vendor_completions.d"
mkdir -p "$bin" "$man" "$bash_dir" "$zsh_dir" "$fish_dir"

for program in archestra-connect archestra-proxy; do
  install -m 0755 "$from/$program" "$bin/$program"
  "$bin/$program" completions bash > "$bash_dir/$program"
  "$bin/$program" completions zsh > "$zsh_dir/_$program"
  "$bin/$program" completions fish > "$fish_dir/$program.fish"
  "$bin/$program" manpages "$man"
done

echo "Installed archestra-connect and archestra-proxy into $bin" >&2
case ":$PATH:" in
  *":$bin:"*) ;;
  *) echo "note: $bin is not on your PATH; add it to use the commands by name" >&2 ;;
esac
echo "Man pages: $man (try: man -M \"$prefix/share/man\" archestra-connect)" >&2
