# Sourced by .ci/run: a throwaway PostgreSQL cluster for the store's tests, unless MCP_LLM_TEST_POSTGRES_URL is set.
# Installs PostgreSQL from the Debian packages when no server binaries are found; runs the cluster as an
# unprivileged user (postgres, or nobody) when run as root; stops it and deletes it when the shell exits.
if [ -z "${MCP_LLM_TEST_POSTGRES_URL:-}" ]; then
  pg_started=$(date +%s.%N)
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "installing PostgreSQL (Debian packages)..."
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >/dev/null
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/mcp-llm-pg.XXXXXX")
  pg_as=()
  if [ "$(id -u)" -eq 0 ]; then  # initdb refuses to run as root
    pg_user=postgres; id "$pg_user" >/dev/null 2>&1 || pg_user=nobody
    chown "$pg_user" "$pg_dir"
    pg_as=(runuser -u "$pg_user" --)
  fi
  pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U mcp -A trust --no-sync -E UTF8 >/dev/null
  "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w start \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" >/dev/null
  trap '"${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$pg_dir"' EXIT
  export MCP_LLM_TEST_POSTGRES_URL="postgresql+asyncpg://mcp@127.0.0.1:$pg_port/postgres"
  echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on port $pg_port" \
    "(install and start: $(python3 -c "print(round($(date +%s.%N) - $pg_started, 1))") s)"
fi
