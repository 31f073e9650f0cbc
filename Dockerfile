# The ledger's HTTP API: `ledger migrate`, then `ledger serve` (gunicorn).
# Used by docker-compose.yml; any PostgreSQL 14-17 given by LEDGER_DATABASE_URL works.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md yoyo.ini ./
COPY ledger_py ./ledger_py
COPY sql ./sql
COPY migrations ./migrations
COPY web ./web
COPY ledger_cli ./ledger_cli
# pip installs the dependencies and the `ledger` command; PYTHONPATH makes
# the code run from /app, where sql/ and migrations/ sit beside ledger_py/
# exactly as in a checkout (the layout migrate() reads first).
RUN pip install /app && useradd --system --uid 10001 --home-dir /nonexistent ledger
ENV PYTHONPATH=/app

# The numeric uid of the `ledger` user made above: resolvable without the
# image's /etc/passwd (e.g. by a runAsNonRoot check).
USER 10001
ENV LEDGER_HOST=0.0.0.0 \
    LEDGER_PORT=8000
EXPOSE 8000
CMD ["sh", "-c", "ledger migrate && exec ledger serve"]
