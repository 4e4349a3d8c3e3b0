# scorehub container image.
#
#   docker build -t scorehub .
#   docker run --rm -p 8080:8080 -v scorehub-data:/data \
#     -e SCOREHUB_AUTH__SECRET="$(openssl rand -hex 32)" --stop-timeout 15 scorehub
#
# Without SCOREHUB_AUTH__SECRET the hub makes up a secret per run (tokens die with the
# container) and logs a ready admin token. Mint tokens with the same secret:
#   docker run --rm -e SCOREHUB_AUTH__SECRET=... scorehub token --sub me --games 'nba:*'
# The hub drains for up to 10 s on SIGTERM; Docker's default stop timeout is also 10 s,
# hence `--stop-timeout 15` above.

# ---- build ------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when a manifest or the
# lock file changes. Cargo needs every workspace member and every declared target
# to exist, so the sources are stand-ins here (empty lib, empty mains, empty benches).
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src benches loadtest/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > loadtest/src/main.rs \
 && echo 'fn main() {}' > benches/codec.rs \
 && echo 'fn main() {}' > benches/fanout.rs \
 && cargo build --release --locked -p scorehub \
 && rm -rf src benches loadtest/src

# The real sources (.dockerignore keeps target/, data/ and .git out). COPY keeps the
# files' own modification times, which can be older than the stand-ins built above;
# touching the crate roots makes cargo rebuild scorehub itself, never a stale stand-in.
COPY . .
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p scorehub \
 && install -m 0755 target/release/scorehub /usr/local/bin/scorehub

# ---- run --------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: for rediss:// (TLS) Redis URLs. Nothing else is needed at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 scorehub \
 && useradd --system --uid 10001 --gid scorehub --home-dir /data --shell /usr/sbin/nologin scorehub \
 && mkdir -p /data \
 && chown scorehub:scorehub /data

COPY --from=build /usr/local/bin/scorehub /usr/local/bin/scorehub

ENV SCOREHUB_STORAGE__DIR=/data \
    SCOREHUB_HTTP__LISTEN=0.0.0.0:8080 \
    SCOREHUB_LOG__FORMAT=json

VOLUME ["/data"]
WORKDIR /data
USER scorehub:scorehub
EXPOSE 8080

# The image has no curl or wget, and scorehub has no health subcommand. bash is part of
# every Debian image (it is "Essential"), and its /dev/tcp redirection opens a TCP
# connection without any extra package: the check sends a plain HTTP/1.0 request to
# /healthz and passes only when the status line says 200 (not merely when the port is
# open). Address and port are taken from SCOREHUB_HTTP__LISTEN (a wildcard address is
# probed on loopback), so overriding it keeps the check right; --timeout bounds a hub
# that accepts but never answers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "h=${SCOREHUB_HTTP__LISTEN%:*}; h=${h#[}; h=${h%]}; case $h in 0.0.0.0|::|'') h=127.0.0.1;; esac; exec 3<>/dev/tcp/$h/${SCOREHUB_HTTP__LISTEN##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["scorehub"]
CMD ["serve"]
