# Scheduled retraining job: fine-tunes, evaluates champion vs challenger, promotes,
# exports ONNX. TensorRT engines are built by the first GPU worker that loads a version.
# Build from the repository root: docker build -f deploy/docker/retrain.Dockerfile -t clad-line/retrain .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CLAD_MODEL_DIR=/models

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY pipeline ./pipeline
COPY engine ./engine
COPY workers ./workers
COPY migrations ./migrations
RUN python -m pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
    && python -m pip install . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin clad \
    && mkdir -p /models \
    && chown clad /models

USER 10001
HEALTHCHECK NONE
ENTRYPOINT ["clad"]
CMD ["retrain"]
