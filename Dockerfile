# syntax=docker/dockerfile:1
# wasmtrigger: the engine plus the example modules and the quickstart config.
# Build:  docker build -t wasmtrigger .
# Without a registry: scripts/build-image makes the same image from Debian packages (deploy/README.md).
# Run:    openssl rand -hex 32 > api-token
#         docker run --rm -v $PWD/api-token:/run/secrets/api-token:ro wasmtrigger
#         docker run --rm -v $PWD/api-token:/run/secrets/api-token:ro \
#           -v $PWD/triggers:/config:ro -v $PWD/modules:/modules:ro wasmtrigger
# The engine listens on 0.0.0.0 in a container, so its API needs a token: from
# the file at API_TOKEN_FILE (a Docker or Kubernetes Secret), never the command line.

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
RUN cargo build --release --locked -p wasmtrigger \
 && scripts/build-guests --examples-only /out/modules \
 && mkdir -p /out/config /out/state \
 && cp examples/configs/quickstart.yaml /out/config/triggers.yaml \
 && cp target/release/wasmtrigger /out/wasmtrigger

# distroless/cc: glibc and libgcc only, no shell; "nonroot" is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/wasmtrigger /usr/local/bin/wasmtrigger
COPY --from=build /out/modules /modules
COPY --from=build /out/config /config
COPY --from=build --chown=65532:65532 /out/state /var/lib/wasmtrigger
ENV CONFIG=/config MODULES=/modules STATE_DIR=/var/lib/wasmtrigger LOG_FORMAT=json LISTEN=0.0.0.0:7070 \
    API_TOKEN_FILE=/run/secrets/api-token
EXPOSE 7070
VOLUME ["/var/lib/wasmtrigger"]
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/wasmtrigger"]
CMD ["run"]
