# syntax=docker/dockerfile:1

# ---- build ------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every edit of the sources. The crate has a library and a
# binary, so both get a placeholder.
COPY Cargo.toml Cargo.lock ./
# The build flags of the bundled SQLite.
COPY .cargo ./.cargo
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources. COPY keeps the files' own modification times, which can be older than
# the placeholder build: touch them, and drop the placeholder's artifacts, so that cargo
# rebuilds this crate for certain.
COPY src ./src
# The web pages are built into the binary.
COPY web ./web
RUN touch src/main.rs src/lib.rs \
    && rm -rf target/release/.fingerprint/user-service-* \
              target/release/deps/user_service-* \
              target/release/deps/libuser_service-* \
    && cargo build --release --locked \
    && cp target/release/user-service /usr/local/bin/user-service

# ---- run --------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates (unpinned on purpose: it should be the current one): TLS to MongoDB
# (mongodb+srv://, Atlas) and to SMTP servers.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin app

# The default DATABASE_URL, sqlite://data/users.db, is relative to the working directory:
# /app/data must exist and be writable. Mount a volume there to keep the SQLite file.
WORKDIR /app
RUN mkdir -p /app/data && chown app:app /app/data

COPY --from=builder /usr/local/bin/user-service /usr/local/bin/user-service

USER 10001:10001
EXPOSE 8080

# The binary checks GET /health on 127.0.0.1:$PORT itself: the image needs no curl or shell.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/user-service", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/user-service"]
CMD ["serve"]
