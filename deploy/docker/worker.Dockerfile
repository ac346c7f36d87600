# Inference worker: CUDA + TensorRT runtime, pycuda built against it.
# Build from the repository root: docker build -f deploy/docker/worker.Dockerfile -t clad-line/worker .
FROM nvcr.io/nvidia/tensorrt:24.12-py3

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CLAD_MODEL_DIR=/models \
    CLAD_BACKEND=tensorrt

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY pipeline ./pipeline
COPY engine ./engine
COPY workers ./workers
COPY migrations ./migrations
# On Linux x86_64 the PyPI build of torch==2.13.0 is the CUDA one; the gpu extra adds
# tensorrt and pycuda (compiled here against the image's CUDA headers). Versions are
# pinned by pyproject.toml, which hadolint cannot see.
# hadolint ignore=DL3013
RUN python3 -m pip install ".[gpu]" \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin clad \
    && mkdir -p /models \
    && chown clad /models

USER 10001
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/metrics', timeout=4)"]
ENTRYPOINT ["clad"]
CMD ["worker"]
