# syntax=docker/dockerfile:1
# Stablebill's production image: `docker compose up` (compose.yaml), or see docs/deploy.md.
# Two stages: the build stage makes the venv from the same hash-pinned requirements.lock
# `make install` uses and collects static files; the runtime stage adds only WeasyPrint's
# system packages (bin/system-packages run, the script `make run` uses) and runs as a user
# without a login and without write access to the code.

ARG PYTHON_IMAGE=python:3.12-slim-trixie

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.lock ./
RUN python -m venv /app/.venv \
    && /app/.venv/bin/pip install --require-hashes -r requirements.lock
COPY . .
# Settings want a SECRET_KEY outside DEBUG; this one only lives for the build step.
RUN SECRET_KEY=collectstatic-only STATIC_ROOT=/app/staticfiles \
    STABLEBILL_VAR_DIR=/tmp/build-var /app/.venv/bin/python manage.py collectstatic --no-input -v 0 \
    && rm -rf /tmp/build-var

FROM ${PYTHON_IMAGE} AS runtime
COPY bin/system-packages /usr/local/bin/stablebill-system-packages
RUN stablebill-system-packages run && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin stablebill \
    && mkdir -p /var/lib/stablebill \
    && chown stablebill:stablebill /var/lib/stablebill
WORKDIR /app
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STABLEBILL_VAR_DIR=/var/lib/stablebill \
    STATIC_ROOT=/app/staticfiles \
    PROMETHEUS_MULTIPROC_DIR=/tmp/stablebill-metrics \
    XDG_CACHE_HOME=/tmp/cache \
    PORT=8000
USER stablebill
VOLUME /var/lib/stablebill
EXPOSE 8000
ENTRYPOINT ["bin/container"]
CMD ["web"]
