# Multi-stage build: compile in the Rust image, run as an unprivileged user in a slim Debian.
#   docker build -t rq-retryd:0.1.0 .
#   docker run --rm -e REDIS_URL=redis://redis:6379/0 -e PORT=9732 \
#     -e RQ_RETRYD_AUTH_TOKEN="$(openssl rand -hex 32)" -p 127.0.0.1:9732:9732 rq-retryd:0.1.0
# (README "On a platform"; add -v policies.toml:/etc/rq-retryd/policies.toml:ro and
# -e RQ_RETRYD_CONFIG=/etc/rq-retryd/policies.toml for your own policies.) Checked instruction
# by instruction by scripts/containers.py (tests/it/deploy.rs); see deploy/README.md "Container".
# --build-arg RQ_RETRYD_GIT_COMMIT=$(git rev-parse --short=12 HEAD) names the commit in
# --version and build_info (build.rs; there is no .git in the image, so "unknown" without it).
FROM rust:1.88-slim-bookworm AS build
ARG RQ_RETRYD_GIT_COMMIT=
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY config ./config
COPY assets ./assets
RUN cargo build --release --locked && strip target/release/rq-retryd

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rq-retryd
COPY --from=build /src/target/release/rq-retryd /usr/local/bin/rq-retryd
COPY config/example.toml /usr/share/doc/rq-retryd/example.toml
USER 10001:10001
EXPOSE 9732
ENTRYPOINT ["/usr/local/bin/rq-retryd"]
CMD ["run"]
