# whatsmyage: the API and the UI it serves, on a slim Python 3.11. The age networks run on ONNX
# Runtime (ml/serving/runtime.py): the image holds no torch, which only training and `python -m ml export` need.
#
#   docker build -t whatsmyage .             # podman: podman build --format docker -t whatsmyage .
#   docker run --rm -p 8000:8000 -v whatsmyage-data:/data -e ADMIN_TOKEN=... whatsmyage
#   docker run --rm -p 8000:8000 -e DATABASE_URL=postgresql://... -e ADMIN_TOKEN=... whatsmyage
#
# Without DATABASE_URL the app starts an embedded Postgres in /data (single container, single machine:
# mount a volume there) and migrates it on every start. With DATABASE_URL the migration is a step of its
# own, once per release: `docker run --rm -e DATABASE_URL=... whatsmyage python -m api migrate`
# (docker-compose.yml's `migrate` service, the Kubernetes Job). A read-only root works with tmpfs on
# /tmp and /run (docs/deployment.md). `make image-test` builds this file and checks the image it makes.

FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The runtime dependencies, read from pyproject.toml (no train, bench or dev extras, and not the project
# itself: the app runs from /app, where alembic.ini and frontend/ lie beside it). Then mediapipe without
# its declared dependencies, as the Makefile does: they would bring opencv-contrib-python (about 160 MB
# that the service never imports) and matplotlib; what it needs at import is in pyproject.toml.
# Then out go what serving never runs: pip and setuptools (nothing is installed at run time) and the
# packages' own test suites.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && pip install --no-deps mediapipe==1.2.3 \
    && python -m pip uninstall --yes --quiet pip setuptools \
    && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +

# The software bill of materials: every Python package in the image, as CycloneDX JSON, for an
# operator's own scanner (docs/deployment.md). The tool runs from a venv of its own, left in this stage.
RUN python -m venv /opt/sbom \
    && /opt/sbom/bin/pip install --quiet cyclonedx-bom==7.5.0 \
    && /opt/sbom/bin/cyclonedx-py environment --output-format JSON --output-file /opt/sbom.cdx.json /opt/venv


FROM python:3.11-slim-bookworm

# MediaPipe's native library links libEGL and libGLESv2 (only loaded, never used on the CPU path).
# apt's downloads and package lists go with the layer that made them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libgles2 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

# A user of its own, with no shell and no home; the code and model files stay root's, read-only to it.
# /data (the embedded Postgres, retrained models) is its to write; a volume goes there.
RUN groupadd --system --gid 10001 whatsmyage \
    && useradd --system --uid 10001 --gid whatsmyage --no-create-home --shell /usr/sbin/nologin whatsmyage \
    && mkdir -p /data /run/whatsmyage && chown whatsmyage:whatsmyage /data /run/whatsmyage \
    && chmod 0700 /run/whatsmyage

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/sbom.cdx.json /usr/share/doc/whatsmyage/sbom.cdx.json
WORKDIR /app
# .dockerignore lets in only what the service runs: api/, ml/ (code and weights), alembic/, the UI.
# Compiled once here: the user cannot write /app, and would otherwise compile it on every start.
COPY . /app
RUN python -m compileall -q /app/api /app/ml /app/alembic

# HOME: ONNX Runtime keeps a file there (and warns on every start without one); /tmp is writable
# with a read-only root too (a tmpfs). XDG_RUNTIME_DIR holds the embedded Postgres' lock file.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    WMA_DATA_DIR=/data \
    XDG_RUNTIME_DIR=/run/whatsmyage \
    WMA_PORT=8000

USER whatsmyage
EXPOSE 8000

# /healthz answers 200 while the database answers; urlopen raises (exit 1) on a 503 or no answer.
# A Docker-format field: podman and buildah keep it with --format docker.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WMA_PORT', '8000'), timeout=4)"]

# JSON logs on stdout (native libraries' own lines too). Several processes: set WMA_WORKERS (each loads
# its own model; docs/deployment.md).
CMD ["python", "-m", "api", "serve", "--host", "0.0.0.0"]
