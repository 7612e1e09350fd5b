# Image for the API, the worker and the one-shot migrate/bootstrap jobs (see docker-compose.yml).
#   docker build -t devops-orchestrator .
#   API:     (default CMD) uvicorn on 0.0.0.0:8000
#   worker:  python worker.py
#   migrate: python -m db.migrate
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git + ssh: checkout steps; ca-certificates: HTTPS (git, notifications, Docker hosts over TLS);
# tini: PID 1 that forwards signals and reaps the step subprocesses.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The application (explicit paths: no .dockerignore needed to keep .venv/.data/.git out).
COPY settings.py worker.py ./
COPY api ./api
COPY db ./db
COPY workflows ./workflows
COPY activities ./activities
RUN pip install --no-deps . && rm -rf build ./*.egg-info

RUN useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin devops \
    && mkdir -p /data && chown devops:devops /data
USER devops
ENV DEVOPS_DATA_DIR=/data

EXPOSE 8000
ENTRYPOINT ["tini", "--"]
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "10"]
