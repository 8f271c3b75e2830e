# The project's one image: the router, the model servers, MLflow, Prefect (server, worker, flow
# runs) and the bootstrap job all run from it (infra/k8s). Multi-stage: uv and the build's caches
# stay in the first stage; the lock file is honoured (uv sync --frozen).
#
# The base is Python 3.11 on Debian 12, pinned by digest; override it with a build argument, as
# the container test does with a base made by debootstrap (no registry is reachable there):
#   docker build --build-arg BASE_IMAGE=mlsd-base:bookworm -t mlsd-lab:0.1.0 .
# It builds with the classic builder too (DOCKER_BUILDKIT=0); the build reaches PyPI, trusting the
# base's CA bundle (pip and uv both told so: a proxy's CA added to the base is then honoured).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${BASE_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
# Dependencies first, in their own layer: a change of the project's code does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --frozen --no-dev --extra k8s --no-install-project --python "$(command -v python3)"
COPY mlsd/ mlsd/
COPY simulator/ simulator/
COPY pipeline/ pipeline/
COPY features/ features/
COPY models/ models/
COPY serving/ serving/
COPY monitoring/ monitoring/
COPY infra/k8s/bootstrap/ infra/k8s/bootstrap/
RUN /opt/uv/bin/uv sync --frozen --no-dev --extra k8s --python "$(command -v python3)" \
 && /app/.venv/bin/python -m compileall -q mlsd simulator pipeline features models serving monitoring

FROM ${BASE_IMAGE} AS runtime
# The user every manifest runs as (runAsUser 10001); it owns nothing in the image: the root
# filesystem is read-only at run time, writes go to /tmp and the lab's data volume.
RUN (getent group 10001 || groupadd --system --gid 10001 mlsd) \
 && (getent passwd 10001 || useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin mlsd)
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=false \
    EVIDENTLY_DISABLE_TELEMETRY=1 \
    FEAST_USAGE=False \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    MLFLOW_LOGGING_LEVEL=WARNING
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "serving.router"]
