# The same install as the README, on a slim Python base, served by gunicorn as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CDS_DATA_DIR=/var/lib/cds-service

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY cards ./cards
COPY valuesets ./valuesets
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app cds \
    && mkdir -p "$CDS_DATA_DIR" && chown cds "$CDS_DATA_DIR"

USER cds
EXPOSE 8080
VOLUME ["/var/lib/cds-service"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"

# Authentication stays on in the image: --no-auth is for a developer's machine only.
CMD ["cds-service", "serve", "--host", "0.0.0.0", "--port", "8080"]
