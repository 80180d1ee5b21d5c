# whatsmyage: the API and the UI it serves, on a slim Python 3.11. The age networks run on ONNX
# Runtime (ml/serving/runtime.py): the image holds no torch, which only training and `python -m ml export` need.
#
#   docker build -t whatsmyage .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=postgresql://... -e ADMIN_TOKEN=... whatsmyage
#   docker run --rm -e DATABASE_URL=... whatsmyage python -m api migrate     # once per release
#
# docker-compose.yml runs the migration as a one-shot service before the API. Without DATABASE_URL
# the app starts an embedded Postgres in /data (single container, single machine: mount a volume there).

FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The runtime dependencies, read from pyproject.toml (no train or dev extras, and not the project itself: the
# app runs from /app, where alembic.ini and frontend/ lie beside it). Then mediapipe without its
# declared dependencies, as the Makefile does: its opencv-contrib-python would overwrite
# opencv-python-headless (both write cv2/); what it needs at import is in pyproject.toml.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && pip install --no-deps mediapipe==1.2.3


FROM python:3.11-slim-bookworm

# MediaPipe's native library links libEGL and libGLESv2 (only loaded, never used on the CPU path).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libgles2 \
    && rm -rf /var/lib/apt/lists/*

# A user of its own, with no shell and no home; the code and model files stay root's, read-only to it.
RUN groupadd --system --gid 10001 whatsmyage \
    && useradd --system --uid 10001 --gid whatsmyage --no-create-home --shell /usr/sbin/nologin whatsmyage \
    && mkdir -p /data /run/whatsmyage && chown whatsmyage:whatsmyage /data /run/whatsmyage \
    && chmod 0700 /run/whatsmyage

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# .dockerignore lets in only what the service runs: api/, ml/ (code and weights), alembic/, the UI.
COPY . /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    WMA_DATA_DIR=/data \
    XDG_RUNTIME_DIR=/run/whatsmyage \
    WMA_PORT=8000

USER whatsmyage
EXPOSE 8000

# /healthz answers 200 while the database answers; urlopen raises (exit 1) on a 503 or no answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WMA_PORT', '8000'), timeout=4)"]

# JSON logs on stdout. Several processes: set WMA_WORKERS (each loads its own model; README, Scaling).
CMD ["python", "-m", "api", "serve", "--host", "0.0.0.0"]
