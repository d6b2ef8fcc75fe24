#!/usr/bin/env bash
# `pytest -m "not mount"` as an ordinary user, the way anyone would run it: a throwaway user
# with a copy of this checkout's files (tracked and new, not .venv, .cache or results of
# runs), its own venv from the system's /usr/bin/python3, a login environment (no CI=true,
# no libfuse build, no root). It must pass, and within MAX_SECONDS of pytest's own timing.
# Run by .ci/run as root after `make setup` (gcc, liburing-dev, python3-dev); removes the
# user, its home and its pytest directory after, pass or fail. About 1-2 min with the pip
# install.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
max_seconds=${MAX_SECONDS:-90}
[ "$(id -u)" = 0 ] || { echo "$0: run as root (it creates a user)" >&2; exit 2; }

# Debian's python3 makes venvs only with python3-venv (ensurepip).
if ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi

user=ringside-ci-$$
useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
cleanup() {
  userdel --remove "$user" 2>/dev/null || userdel --force --remove "$user" || true
  rm -rf "$home" "/tmp/pytest-of-$user"
}
trap cleanup EXIT

mkdir "$home/ringside"
git ls-files -z --cached --others --exclude-standard \
  | tar --null --files-from=- --ignore-failed-read -cf - \
  | tar -xf - -C "$home/ringside" --no-same-owner
chown -R "$user:" "$home"

# A login environment: what `su - USER` gives, plus how this machine reaches the package
# index (proxy, certificates, mirrors), for pip only.
as_user() {
  runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" SHELL=/bin/bash \
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 "$@"
}
pip_env=()
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_TRUSTED_HOST PIP_CERT \
         PIP_DEFAULT_TIMEOUT SSL_CERT_FILE REQUESTS_CA_BUNDLE HTTP_PROXY HTTPS_PROXY NO_PROXY \
         http_proxy https_proxy no_proxy; do
  [ -n "${!v:-}" ] && pip_env+=("$v=${!v}")
done

start=$(date +%s)
as_user bash -c 'cd ~/ringside && /usr/bin/python3 -m venv .venv'
as_user "${pip_env[@]}" bash -c \
  'cd ~/ringside && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e ".[dev]"'
echo "user-tests: $user's venv installed in $(( $(date +%s) - start )) s"

log=$home/pytest.log
set +e
as_user timeout 600 bash -c 'cd ~/ringside && .venv/bin/python -m pytest -m "not mount" -q \
  -p no:cacheprovider --durations=10' 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || { echo "user-tests: pytest -m \"not mount\" as $user failed ($status)" >&2; exit 1; }
seconds=$(grep -oE ' in [0-9.]+s' "$log" | tail -1 | grep -oE '[0-9.]+')
[ -n "$seconds" ] || { echo "user-tests: no time in pytest's summary" >&2; exit 1; }
if awk -v s="$seconds" -v m="$max_seconds" 'BEGIN { exit !(s > m) }'; then
  echo "user-tests: pytest -m \"not mount\" took $seconds s as $user, more than $max_seconds s" >&2
  exit 1
fi
echo "user-tests: pytest -m \"not mount\" passed as $user in $seconds s (limit $max_seconds s)"
