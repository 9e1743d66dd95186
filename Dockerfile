# syntax=docker/dockerfile:1
#
# sse-service container image: a static Go binary on distroless.
#
#   docker buildx build --build-arg VERSION=$(git describe --tags --always) -t sse-service .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=... .
#
# tools/dockerfilecheck checks this file in CI (stages, base images, USER,
# ENTRYPOINT, EXPOSE, go build flags), and CI builds its test binary with the
# go build flags it extracts from here: change them here only.
#
# Base images are pinned by tag. For reproducible production builds pin them by
# digest as well (FROM image:tag@sha256:...), e.g. with Renovate or Dependabot
# keeping the digests up to date.

# The builder runs on the build machine's own platform and cross-compiles for
# the target platform (pure Go, CGO off), so multi-platform builds need no
# emulation.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src
# The service's module alone: the repository's go.work (deploy/ and tools/
# checks) is not in the build context, and never used here.
ENV GOWORK=off

# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go mod download

COPY . .

ARG VERSION=dev
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/sse-service ./cmd/sse-service

# Runtime: no shell, no package manager; CA certificates, tzdata and
# /etc/passwd with the nonroot user (65532) only.
FROM gcr.io/distroless/static-debian13:nonroot

ARG VERSION=dev
LABEL org.opencontainers.image.title="sse-service" \
      org.opencontainers.image.description="Server-Sent Events hub: clients subscribe to topics over GET /v1/events, publishers POST events." \
      org.opencontainers.image.source="https://github.com/sse-service/sse-service" \
      org.opencontainers.image.version="${VERSION}"

# Production logs are JSON; every other setting is an SSE_* variable
# (`docker run --rm IMAGE -h` lists them).
ENV SSE_LOG_FORMAT=json

COPY --from=build /out/sse-service /sse-service

# distroless's nonroot user, by number: Kubernetes' runAsNonRoot can only
# verify a numeric user (with a name it refuses to start the container).
USER 65532:65532

# 8080: public API and event streams; 9090: admin (health, readiness, metrics).
EXPOSE 8080 9090

# No HEALTHCHECK: Kubernetes ignores it, and there is no shell or curl here to
# run one. Liveness and readiness probes are in the Helm chart (admin port).
ENTRYPOINT ["/sse-service"]
