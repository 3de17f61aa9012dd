# fanout in a container: a static binary on distroless's static image (no
# shell, no package manager; CA certificates and tzdata only), run as an
# unprivileged user. Build and run (README: Packaging):
#
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t fanout .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8081:8081 --ulimit nofile=1048576:1048576 fanout
#
# Settings are FANOUT_<FLAG> variables (docker run -e FANOUT_MAX_CONNS=...)
# or flags after the image name; the command line wins.

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The one build command: .ci/run reads this line and runs it outside
# Docker. Static (no cgo: the image has no libc), no paths of the build
# machine in the binary. .git is not in the context (.dockerignore), so
# nothing is stamped from VCS: fanout -version says commit unknown and the
# REVISION label carries the commit instead.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/fanout ./cmd/fanout

FROM gcr.io/distroless/static-debian12:nonroot
ARG REVISION=unknown
LABEL org.opencontainers.image.title="fanout" \
      org.opencontainers.image.description="WebSocket broadcast server" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/fanout /fanout
# Listen on every interface: inside a container loopback reaches nobody.
# Publish the admin port (/metrics, /readyz, POST /publish) only to what
# must reach it.
ENV FANOUT_ADDR=:8080
ENV FANOUT_ADMIN_ADDR=:8081
ENV FANOUT_LOG_FORMAT=json
EXPOSE 8080 8081
# Numeric, so that Kubernetes' runAsNonRoot can check it (distroless's nonroot).
USER 65532:65532
# SIGTERM drains (README: Behaviour, Shutdown): give docker stop -t, or
# the orchestrator's grace period, more than -drain-delay +
# -shutdown-timeout (15 s by default; docker stop waits 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/fanout"]
