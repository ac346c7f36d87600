# Operator API and web console (no GPU). Also runs `clad db upgrade` as the migration job.
# Build from the repository root: docker build -f deploy/docker/api.Dockerfile -t clad-line/api .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY pipeline ./pipeline
COPY engine ./engine
COPY workers ./workers
COPY migrations ./migrations
# The CPU build of torch keeps this image small; the API never runs the model on a GPU.
RUN python -m pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
    && python -m pip install . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin clad

USER 10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["clad"]
CMD ["api"]
